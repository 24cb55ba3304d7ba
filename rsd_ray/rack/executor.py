"""Executors: the one surface the controller drives, whatever runs the hosts.

``InlineExecutor`` keeps every host and card as a plain object in this
process; the Ray executor (``rsd_ray.actors``, registered under ``ray``) answers
the same calls with host and card actors. ``advance`` takes an ``EpochIn`` and
returns the rack's ``EpochOut``; whatever is lost on the way comes back inside
it as a ``Failure``.
"""
from __future__ import annotations

from rsd_ray.compiler import Plan
from rsd_ray.config import RunSpec
from rsd_ray.rack.epoch import EpochIn, EpochOut, merge
from rsd_ray.rack.host import Host, HostSetup
from rsd_ray.plugins import plugin
from rsd_ray.interconnect.topology import Topology
from rsd_ray.engine.request import RequestRecord


class InlineExecutor:
    name = "inline"

    def __init__(self, spec: RunSpec, plan: Plan, setups: list[HostSetup], topology=None):
        """One host drives every server, so the vectorised engine steps the whole rack together."""
        topology = topology or Topology(spec.rack, spec.device)
        self.hosts = [Host.local(spec, plan, setups, topology)]

    def advance(self, epoch: EpochIn) -> EpochOut:
        return merge(epoch.t_end, [h.advance(epoch) for h in self.hosts])

    def unfinished(self) -> list[RequestRecord]:
        return [r for h in self.hosts for r in h.unfinished()]

    def shutdown(self) -> None:
        for h in self.hosts:
            h.close()
        self.hosts = []


EXECUTORS = {"inline": "rsd_ray.rack.executor:InlineExecutor"}
"""Built-in executors; others (the Ray executor) register under the ``rsd_ray.executors`` entry point,
so the core never imports them."""


def get_executor(name: str):
    return plugin("executors", name, EXECUTORS)
