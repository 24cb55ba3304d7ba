"""The controller's router: a policy over stale telemetry, behind bounded admission.

Loads are what the last epoch's telemetry said (running + waiting) plus what
this router has sent since — staleness of at most one epoch, as with routers
that scrape metrics. An instance whose queue (waiting + sent) reaches
``max_pending_per_instance`` takes nothing more; when none has room, the
request is refused and counted, never buffered without bound. A failed instance
takes nothing; requests moved off it are placed with ``force`` (they were
accepted once, so the admission bound does not refuse them again).
"""
from __future__ import annotations

import random

import numpy as np

from rsd_ray.router import (least_loaded, power_of_two, prefix_affinity, round_robin,  # noqa: F401  (register)
                            session_affinity)
from rsd_ray.router.registry import POLICIES, register


class Router:
    def __init__(self, spec, num_instances: int, seed: int, pools: int = 1):
        """``spec``: a ``RouterSpec`` (not imported: the config reads this package's POLICIES, not back).
        ``pools``: a disaggregated rack's prefill instances (the first ``spec.prefill_instances``) and decode
        instances are two pools, each routed by a policy of its own (its own turn, its own random stream)."""
        self.limit = spec.max_pending_per_instance
        self.policies = [POLICIES[spec.policy](num_instances, random.Random(seed + k)) for k in range(pools)]
        ids = np.arange(num_instances)
        split = spec.prefill_instances if pools > 1 else 0
        self.pools = [ids < split, ids >= split] if pools > 1 else [None]
        policy = self.policies[0]
        self.uses = ("prefix" if getattr(policy, "uses_prefix", False) else
                     "session" if getattr(policy, "uses_session", False) else "")
        self.running = np.zeros(num_instances, dtype=np.int64)
        self.queued = np.zeros(num_instances, dtype=np.int64)
        self.healthy = np.ones(num_instances, dtype=bool)
        self.sent = np.zeros(num_instances, dtype=np.int64)     # requests routed to each instance, ever
        self.refused = 0
        self._refresh()

    def _refresh(self) -> None:
        """What every routing decision reads, kept up to date as it changes (a request routed changes one
        instance's): each instance's load and whether it takes new requests."""
        self.loads = self.running + self.queued
        self.open = self.healthy & (self.queued < self.limit)

    def observe(self, frames) -> None:
        for f in frames:
            self.running[f.instance], self.queued[f.instance] = f.running, f.waiting
        self._refresh()

    def fail(self, instances) -> None:
        self.healthy[list(instances)] = False
        self._refresh()

    def recover(self, instance: int) -> None:
        """A failed instance is back (``--recover``), empty."""
        self.healthy[instance] = True
        self.running[instance] = self.queued[instance] = 0
        self._refresh()

    def route(self, force: bool = False, pinned: int | None = None, hash_ids: tuple = (),
              session: str = "", pool: int = 0) -> int | None:
        """The instance for the next request, or None when the rack is full (or, with ``force``,
        when no instance is healthy). ``pinned``: the request asked for that instance, bypassing the policy;
        ``hash_ids``: its prompt's block hashes, for a policy that ``uses_prefix``; ``session``: its session,
        for one that ``uses_session``; ``pool``: of a disaggregated rack, 0 prefill, 1 decode.
        Loads are running + waiting + sent since."""
        eligible, among = self.healthy if force else self.open, self.pools[pool]
        if among is not None:
            eligible = eligible & among
        if pinned is not None:
            i = pinned if 0 <= pinned < len(eligible) and eligible[pinned] else None
        elif eligible.any():
            extra = (hash_ids,) if self.uses == "prefix" else (session,) if self.uses == "session" else ()
            i = int(self.policies[pool].choose(self.loads, eligible, *extra))
        else:
            i = None
        if i is None:
            self.refused += not force
            return None
        self.queued[i] += 1
        self.loads[i] += 1
        self.open[i] = self.healthy[i] and self.queued[i] < self.limit
        self.sent[i] += 1
        return i

    @property
    def in_turn(self) -> bool:
        """Whether ``route_many`` can route plain requests: one pool, a policy that reads only the loads and
        picks many in one go (``choose_in_turn``)."""
        return len(self.pools) == 1 and hasattr(self.policies[0], "choose_in_turn")

    def route_many(self, count: int, force: bool = False) -> list[int]:
        """The instances ``route`` picks for ``count`` requests, none pinned, one after another, in one go
        (``in_turn``); fewer when the rack fills up, whose first refusal is counted as ``route`` counts it
        (a full rack takes no more requests that epoch)."""
        room = np.full(len(self.loads), count) if force else self.limit - self.queued
        picks = self.policies[0].choose_in_turn(self.loads, self.healthy if force else self.open, room, count)
        taken = np.bincount(picks, minlength=len(self.loads))
        self.queued += taken
        self.sent += taken
        self._refresh()
        self.refused += len(picks) < count and not force
        return picks.tolist()


__all__ = ["Router", "POLICIES", "register"]
