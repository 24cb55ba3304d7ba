"""ServeActor: a served rack's gateway, HTTP and gRPC servers and controller, as one Ray actor.

It is pinned to the node of the process that started it, so the URLs it prints
are that machine's; its controller drives the rack's host and card actors like
``ControllerActor`` does. Threaded, so ``status`` and ``stop_now`` answer while
``shutdown`` drains.
"""
from __future__ import annotations

import ray

from rsd_ray.serve.server import RackServer

SERVE_ACTOR_NAME = "rsd-ray-serve"


@ray.remote(num_cpus=0, max_concurrency=4)
class ServeActor:
    def __init__(self, spec, options, version: str, faults=(), fast: bool = False):
        """``fast`` False: plain actor calls, not compiled graphs. A served rack is idle much of the time, and
        a compiled graph's member polls its channel even then (8 % of a core per card actor, measured by
        ``benchmarks/idle_serve.py``); a plain call costs nothing idle, and a paced epoch leaves it the time."""
        self.server = RackServer(spec, "ray", options, version, faults, fast=fast)

    def start(self) -> dict:
        return self.server.start()

    def running(self) -> bool:
        return self.server.running

    def status(self) -> dict:
        return self.server.status()

    def stop_now(self) -> None:
        self.server.stop_now()

    def shutdown(self, drain_s: float, now: bool = False):
        return self.server.shutdown(drain_s, now)


class RemoteServer:
    """The same calls as ``RackServer``, answered by a ``ServeActor``."""

    def __init__(self, actor):
        self.actor = actor

    def _get(self, ref):
        """The actor's answer; a lost actor (killed, its node gone) is a clear error, not a traceback."""
        try:
            return ray.get(ref)
        except ray.exceptions.RayActorError as err:
            raise RuntimeError(f"the serving actor is gone ({str(err).splitlines()[0]}); its results are lost "
                               "with it") from None

    def start(self):
        return self._get(self.actor.start.remote())

    @property
    def running(self) -> bool:
        return self._get(self.actor.running.remote())

    def status(self) -> dict:
        return self._get(self.actor.status.remote())

    def stop_now(self) -> None:
        self.actor.stop_now.remote()

    def shutdown(self, drain_s: float, now: bool = False):
        return self._get(self.actor.shutdown.remote(drain_s, now))
