"""Embedded or joined Ray for one command, and the controller actor's life inside it."""
from __future__ import annotations

import logging
import time
from contextlib import contextmanager

import ray

from rsd_ray.actors.controller_actor import CONTROLLER_NAME, NAMESPACE, ControllerActor
from rsd_ray.actors.ray_executor import check_capacity

POLL_S = 0.25


@contextmanager
def ray_session(address: str | None, cards: int):
    """No address: start a local Ray declaring ``cards`` atom_card resources, and stop it after.
    ``auto`` or ``HOST:PORT``: join a cluster started by ``ray start`` / ``ray up``."""
    if ray.is_initialized():
        yield
        return
    common = {"namespace": NAMESPACE, "logging_level": logging.WARNING}
    if address:
        ray.init(address=address, **common)
    else:
        ray.init(resources={"atom_card": cards}, include_dashboard=False, **common)
    try:
        yield
    finally:
        ray.shutdown()


def run_on_ray(spec, on_epoch=None, fast: bool | None = None, spans: bool = True):
    """Run ``spec`` under a named ControllerActor; returns the Outcome. Ray must be initialised."""
    check_capacity(spec.rack)
    controller = ControllerActor.options(name=CONTROLLER_NAME, namespace=NAMESPACE).remote(spec, fast, spans)
    try:
        ref = controller.run.remote()
        while not ray.wait([ref], timeout=POLL_S)[0]:
            if on_epoch:
                t, in_flight, _ = ray.get(controller.progress.remote())
                on_epoch(t, in_flight)
        return ray.get(ref)
    except ray.exceptions.RayTaskError as err:
        raise err.as_instanceof_cause() from None
    finally:
        ray.kill(controller)
        time.sleep(0)   # let the kill be sent before a session shutdown
