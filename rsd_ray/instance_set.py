"""``InstanceSet``: the readable per-instance engines of a host, run one after another.

It answers the same calls as ``rsd_ray.vector.VectorEngine`` and is the
reference that engine is tested against (``--engine reference``).
"""
from __future__ import annotations

from rsd_ray.card_group import CardLost
from rsd_ray.instance import Instance, InstanceFrame
from rsd_ray.prefix_cache import make_caches
from rsd_ray.request import Request, RequestRecord, Submit


class InstanceSet:
    def __init__(self, engine, instances: list[tuple[int, object, object]], num_blocks: int, spans: bool = True):
        """``instances``: (instance id, card group, GroupSync) of each instance, in instance order."""
        caches = make_caches(engine, len(instances)) or [None] * len(instances)
        self.instances = {iid: Instance(iid, group, sync, engine, num_blocks, spans, cache)
                          for (iid, group, sync), cache in zip(instances, caches)}
        self.syncs = [inst.sync for inst in self.instances.values()]

    def reprice(self) -> None:
        """Each instance reads its GroupSync's α and β directly: nothing to take."""

    def submit(self, s: Submit) -> bool:
        inst = self.instances.get(s.instance)
        if inst is None or inst.failed:
            return False
        inst.submit(Request.from_submit(s))
        return True

    def is_failed(self, iid: int) -> bool:
        return self.instances[iid].failed

    def advance(self, t0: float, t_end: float, trace: list | None = None) -> list[tuple[int, CardLost, float]]:
        lost = []
        for iid, inst in self.instances.items():
            if inst.failed:
                continue
            inst.trace = trace
            inst.cards.begin_epoch(t0)                    # the governor samples once, at the epoch's start
            try:
                inst.advance(t_end)
            except CardLost as err:
                lost.append((iid, err, inst.clock))
        return lost

    def token_events(self) -> list[tuple[int, tuple[float, ...]]]:
        return [e for inst in self.instances.values() for e in inst.token_events()]

    def take_finished(self) -> list[RequestRecord]:
        return [r for inst in self.instances.values() for r in inst.take_finished()]

    def evacuate(self, iid: int) -> list[Submit]:
        return self.instances[iid].evacuate()

    def rejoin(self, iid: int, t: float) -> None:
        self.instances[iid].rejoin(t)

    def unfinished(self) -> list[RequestRecord]:
        return [r for inst in self.instances.values() for r in inst.unfinished()]

    def abort(self, rid: int, reason: str) -> RequestRecord | None:
        for inst in self.instances.values():
            record = inst.abort(rid, reason)
            if record is not None:
                return record
        return None

    def frames(self) -> list[InstanceFrame]:
        return [inst.frame() for inst in self.instances.values()]
