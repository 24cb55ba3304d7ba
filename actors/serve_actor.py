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
    def __init__(self, spec, options, version: str, faults=(), fast: bool | None = None):
        self.server = RackServer(spec, "ray", options, version, faults, fast=fast)

    def start(self) -> dict:
        return self.server.start()

    def running(self) -> bool:
        return self.server.running

    def status(self) -> dict:
        return self.server.status()

    def stop_now(self) -> None:
        self.server.controller.stop("interrupted (Ctrl-C)")

    def shutdown(self, drain_s: float, now: bool = False):
        return self.server.shutdown(drain_s, now)
