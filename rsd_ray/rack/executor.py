"""Executors: the one surface the controller drives and a command starts, whatever runs the hosts.

``InlineExecutor`` keeps every host and card as a plain object in this process (nothing to start); the
Ray executor (``rsd_ray.actors``, registered under ``ray``) answers the same calls with host and card
actors, and starts (or joins) Ray, the controller actor and the serving actor. ``run_epoch`` takes an
``EpochIn`` and returns the rack's ``EpochOut``; whatever is lost on the way comes back inside it as a
``Failure``. No caller asks which executor it holds.
"""
from __future__ import annotations

from collections import defaultdict
from contextlib import nullcontext
from typing import Callable, ContextManager, Protocol

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


class Executor(Protocol):
    """What the controller drives (an instance: ``run_epoch``, ``unfinished``, ``shutdown``) and what a command
    starts (static: a session, a run, a served rack, functional mode's split model)."""
    name: str

    def run_epoch(self, epoch: EpochIn) -> EpochOut: ...

    def unfinished(self) -> list[RequestRecord]: ...

    def shutdown(self) -> None: ...

    @staticmethod
    def session(address: str | None, cards: int) -> ContextManager:
        """What must run around the command (Ray, embedded or joined); ``address``: a cluster to join."""

    @staticmethod
    def run_session(spec: RunSpec, sinks, address=None, show=None, faults=(), refresh_s: float = 1.0,
                    trace=None):
        """``rsd-ray run``: the Outcome of ``spec``; ``show`` gets dashboard frames at most every ``refresh_s``
        wall seconds; ``trace``: (t0, t1, path) of a Perfetto timeline to write."""

    @staticmethod
    def serve_session(spec: RunSpec, options, address, version: str, body: Callable, faults=()):
        """``rsd-ray serve``: ``body(server)`` serves until told to stop and returns the Outcome."""

    @staticmethod
    def split_model(path, tp: int, budget: int, timer=None):
        """Functional mode: a checkpoint split over ``tp`` cards (a ``SplitModel``)."""

    @staticmethod
    def card_memory(model) -> list[dict]:
        """What each card of a split model holds."""


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

    @staticmethod
    def session(address, cards: int):
        return nullcontext()

    @staticmethod
    def run_session(spec, sinks, address=None, show=None, faults=(), refresh_s: float = 1.0, trace=None):
        from rsd_ray.rack.controller import Controller
        from rsd_ray.report.telemetry import dashboard_sink
        from rsd_ray.report.timeline import TraceSink
        controller = Controller(spec)
        controller.inject(faults)
        sinks = list(sinks) + ([dashboard_sink(controller, show, refresh_s)] if show else [])
        timeline = TraceSink(controller, *trace[:2]) if trace else None
        outcome = controller.run(sinks + ([timeline] if timeline else []))
        if timeline:
            timeline.write(trace[2])
        return outcome

    @staticmethod
    def serve_session(spec, options, address, version: str, body, faults=()):
        from rsd_ray.serve.server import RackServer
        return body(RackServer(spec, "inline", options, version, faults))

    @staticmethod
    def split_model(path, tp: int, budget: int, timer=None):
        from rsd_ray.config.checkpoint import read_config
        from rsd_ray.functional.split import SplitModel, card_shards
        return SplitModel(read_config(path), card_shards(path, tp, budget), timer=timer)

    @staticmethod
    def card_memory(model) -> list[dict]:
        return [c.memory() for c in model.cards]


EXECUTORS = {"inline": "rsd_ray.rack.executor:InlineExecutor"}
"""Built-in executors; others (the Ray executor) register under the ``rsd_ray.executors`` entry point,
so the core never imports them."""


def get_executor(name: str):
    return plugin("executors", name, EXECUTORS)
