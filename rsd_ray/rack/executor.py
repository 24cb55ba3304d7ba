"""Executors: the one surface the controller drives and a command starts, whatever runs the hosts.

``rsd_ray.inline.InlineExecutor`` keeps every host and card as a plain object in this process (nothing to
start); the Ray executor (``rsd_ray.actors``) answers the same calls with host and card actors, and starts
(or joins) Ray, the controller actor and the serving actor. Both are found by name
(``rsd_ray.plugins.get_executor``), so no caller asks which executor it holds and the core imports neither.
``run_epoch`` takes an ``EpochIn`` and returns the rack's ``EpochOut``; whatever is lost on the way comes
back inside it as a ``Failure``.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Callable, ContextManager, Protocol

from rsd_ray.compiler import Plan
from rsd_ray.config import RunSpec
from rsd_ray.rack.epoch import EpochIn, EpochOut
from rsd_ray.rack.host import HostSetup
from rsd_ray.interconnect.collectives import sharers
from rsd_ray.interconnect.topology import Topology
from rsd_ray.engine.request import RequestRecord


class RackLost(RuntimeError):
    """The rack could not be started (placement, a card, host or node lost while starting), so nothing ran.
    Its message says what was lost and the cause the executor was given, and nothing it did not check."""


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
    def split_model(path, tp: int, budget: int, timer=None, beside_rack: bool = False):
        """Functional mode: a checkpoint split over ``tp`` cards (a ``SplitModel``); ``beside_rack``: its
        card actors run beside a rack's (which hold the rack's card resources), not as the rack."""

    @staticmethod
    def card_memory(model) -> list[dict]:
        """What each card of a split model holds."""
