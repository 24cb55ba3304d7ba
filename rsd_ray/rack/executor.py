"""Executors: the one surface the controller drives, whatever runs the hosts.

``InlineExecutor`` keeps every host and card as a plain object in this
process; the Ray executor (``rsd_ray.actors``, registered under ``ray``) answers
the same calls with host and card actors. ``advance`` takes an ``EpochIn`` and
returns the rack's ``EpochOut``; whatever is lost on the way comes back inside
it as a ``Failure``.
"""
from __future__ import annotations

from collections import defaultdict

from rsd_ray.compiler import Plan
from rsd_ray.config import RunSpec
from rsd_ray.rack.epoch import EpochIn, EpochOut, merge
from rsd_ray.rack.host import Host, HostSetup
from rsd_ray.plugins import plugin
from rsd_ray.interconnect.collectives import sharers
from rsd_ray.interconnect.topology import Topology
from rsd_ray.engine.request import RequestRecord


def host_setups(spec: RunSpec, topology: Topology, plan: Plan) -> list[HostSetup]:
    """One host per server; a group is driven by the host of its first card, so each card has one host."""
    groups = plan.placement.groups
    shared = tuple(sorted(sharers(topology, [list(g) for g in groups]).items()))
    by_server = defaultdict(list)
    for iid, group in enumerate(groups):
        by_server[topology.server_of(group[0])].append((iid, group))
    idle = defaultdict(list)
    for c in plan.placement.idle_cards:
        idle[topology.server_of(c)].append(c)
    return [HostSetup(s, tuple(by_server[s]), tuple(idle[s]), shared) for s in range(spec.rack.servers)]


class InlineExecutor:
    name = "inline"

    def __init__(self, spec: RunSpec, plan: Plan, setups: list[HostSetup], topology=None):
        """One host drives every server, so the vectorised engine steps the whole rack together."""
        topology = topology or Topology(spec.rack, spec.device)
        self.hosts = [Host.local(spec, plan, setups, topology)]

    def run_epoch(self, epoch: EpochIn) -> EpochOut:
        return merge(epoch.t_end, [h.run_epoch(epoch) for h in self.hosts])

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
