"""HostActor: one server's host CPU — the engines of its instances — driving card actors."""
from __future__ import annotations

import logging
import os

import ray

from rsd_ray.actors.card_group import RayCardGroup
from rsd_ray.rack.gc_pace import pace_for_runs
from rsd_ray.rack.host import Host


@ray.remote(num_cpus=0)
class HostActor:
    def __init__(self, spec, plan, setup, handles: dict, fast: bool = True):
        logging.getLogger("ray.dag").setLevel(logging.WARNING)   # no INFO lines per compiled-graph teardown
        pace_for_runs()                          # this process only runs its server's engines
        costs: dict = {}
        groups = {iid: RayCardGroup({c: handles[c] for c in cards}, spec.epoch_s, plan.pool_of(iid).programs,
                                    spec.device, fast, costs, plan.pool_of(iid).memory)
                  for iid, cards in setup.instances}
        groups[None] = RayCardGroup({c: handles[c] for c in setup.idle_cards}, spec.epoch_s, fast=False)
        self.host = Host(spec, plan, [setup], groups)

    def ready(self) -> int:
        return self.host.server

    def pid(self) -> int:
        return os.getpid()

    def run_epoch(self, epoch):
        return self.host.run_epoch(epoch)

    def unfinished(self):
        return self.host.unfinished()

    def close(self) -> bool:
        self.host.close()
        return True
