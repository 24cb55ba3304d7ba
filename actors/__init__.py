"""Thin Ray wrappers over the plain classes (installed as ``rsd_ray.actors``).

The inline executor runs the same classes in one process; the Ray executor
(``CardActor``, ``HostActor``, ``ControllerActor``) lands here.
"""
