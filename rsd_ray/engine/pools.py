"""``PoolCores``: the engines of a host whose instances belong to pools of different settings — a
disaggregated rack's prefill pool with its own TP degree or engine arguments beside its decode pool.

An ``EngineCore`` steps instances of one engine and one program together (one scheduler's rules, one
message matrix), so each pool on the host has its own; this holds them and answers as one engine does:
a request goes to the core of its instance, the cores run to each boundary together
(``core.run_together``), and what they report is joined in instance order.
"""
from __future__ import annotations

import math

from rsd_ray.engine.core import EngineCore, run_together
from rsd_ray.engine.frames import InstanceFrame
from rsd_ray.engine.request import RequestRecord, Submit


class PoolCores:
    def __init__(self, cores: list[EngineCore]):
        self.cores = cores
        self.core_of = {iid: core for core in cores for iid in core.iids}
        self.iids = [iid for core in cores for iid in core.iids]

    @property
    def syncs(self) -> list:
        return [sync for core in self.cores for sync in core.syncs]

    def reprice(self) -> None:
        for core in self.cores:
            core.reprice()

    def submit(self, subs) -> list[Submit]:
        """Each request to its instance's core, in order; returns those whose instance is not here or failed."""
        elsewhere = [s for s in subs if s.instance not in self.core_of]
        for core in self.cores:
            elsewhere += core.submit([s for s in subs if self.core_of.get(s.instance) is core])
        return elsewhere

    def is_failed(self, iid: int) -> bool:
        return self.core_of[iid].is_failed(iid)

    def run_until(self, t_end: float, trace: list | None = None, later=(), stop: str = "") -> tuple[float, list]:
        return run_together(self.cores, t_end, trace, later, stop)

    def quiet_until(self, stop: str) -> float:
        bounds = [core.quiet_until(stop) for core in self.cores]
        return math.nan if any(math.isnan(b) for b in bounds) else min(bounds)

    def empty(self) -> bool:
        return all(core.empty() for core in self.cores)

    def token_events(self) -> list[tuple[int, tuple[float, ...]]]:
        return [event for core in self.cores for event in core.token_events()]

    def take_finished(self) -> list[RequestRecord]:
        return [record for core in self.cores for record in core.take_finished()]

    def evacuate(self, iid: int) -> list[Submit]:
        return self.core_of[iid].evacuate(iid)

    def rejoin(self, iid: int, t: float) -> None:
        self.core_of[iid].rejoin(iid, t)

    def abort(self, rid: int, reason: str) -> RequestRecord | None:
        return next((r for r in (core.abort(rid, reason) for core in self.cores) if r is not None), None)

    def unfinished(self) -> list[RequestRecord]:
        return [record for core in self.cores for record in core.unfinished()]

    def frames(self) -> list[InstanceFrame]:
        return sorted((f for core in self.cores for f in core.frames()), key=lambda f: f.instance)
