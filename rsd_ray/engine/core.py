"""``EngineCore``: the instances of a host stepped together — the one engine.

A round steps every instance that has work once: the scheduler fills a matrix
of scheduled tokens (``Scheduler``), the steps are priced in one call per
distinct (cost model, clock factor) — every group of one program shares its
cost model — and the collectives of all groups are one array expression.
Instances stay independent (each has its own clock and cards), so the order
in which their steps are taken changes nothing: every number equals the plain
oracle's, one request at a time, token timestamps included (``tests/test_engine_oracle.py``).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from rsd_ray.hardware.card_group import CardLost, slowest
from rsd_ray.engine.prefix_cache import make_caches
from rsd_ray.calibration import HostCost
from rsd_ray.engine.pricing import collective_times, count_sent, step_times
from rsd_ray.hardware.costmodel import linear
from rsd_ray.engine.frames import InstanceFrame
from rsd_ray.engine.request import RequestRecord, Submit
from rsd_ray.engine.scheduler import Scheduler
from rsd_ray.engine.table import RequestTable


MAX_STALLED_ROUNDS = 3
"""Rounds in a row in which no clock moves before the engine gives up. One is normal (every running
request of an instance preempted: it re-admits them next round); more means a rule is broken."""


class EngineCore:
    def __init__(self, engine, instances: list[tuple[int, object, object]], num_blocks: int):
        """``instances``: (instance id, card group, GroupSync) of each instance, in instance order."""
        self.iids = [iid for iid, _, _ in instances]
        self.index = {iid: k for k, iid in enumerate(self.iids)}
        self.groups = [group for _, group, _ in instances]
        self.syncs = [sync for _, _, sync in instances]
        n = len(instances)
        self.table = RequestTable()
        self.sched = Scheduler(engine, [num_blocks] * n, self.table, make_caches(engine, n))
        self.host = HostCost.of(engine, len(self.groups[0].card_ids) if n else 1)
        self.clock, self.busy = np.zeros(n), np.zeros(n)
        self.steps, self.out_tokens, self.computed = (np.zeros(n, dtype=np.int64) for _ in range(3))
        self.failed = np.zeros(n, dtype=bool)
        self.halted = np.zeros(n, dtype=bool)      # lost a card: steps no more (the host evacuates it)
        self.finished: list[list[int]] = [[] for _ in range(n)]
        if n:                                        # every group runs the same program: one message matrix
            self.message, self.chunks = self.syncs[0].message, self.syncs[0].chunks
            self.active = np.array([s.active for s in self.syncs])
            self.alpha = np.stack([s.alpha for s in self.syncs])
            self.beta = np.stack([s.beta for s in self.syncs])
            self.sent = np.stack([s.sent for s in self.syncs])
            for k, s in enumerate(self.syncs):
                s.sent = self.sent[k]                # the group's link counters read the shared array

    def reprice(self) -> None:
        """The groups' collectives were priced again (a link degraded): take their α and β."""
        if self.syncs:
            self.alpha = np.stack([s.alpha for s in self.syncs])
            self.beta = np.stack([s.beta for s in self.syncs])

    def submit(self, s: Submit) -> bool:
        k = self.index.get(s.instance)
        if k is None or self.failed[k]:
            return False
        self.sched.add_pending(k, self.table.add(s, s.instance))
        return True

    def is_failed(self, iid: int) -> bool:
        return bool(self.failed[self.index[iid]])

    # --- running an epoch ---------------------------------------------------------------------------
    def run_until(self, t0: float, t_end: float, trace: list | None = None) -> list[tuple[int, CardLost, float]]:
        """Run every healthy instance to ``t_end``; returns (instance, loss, time) of each that lost a card."""
        for k in np.flatnonzero(~self.failed).tolist():
            self.groups[k].begin_epoch(t0)            # the governor samples once, at the epoch's start
        sched, arrival, lost, stalled = self.sched, self.table.arrival, [], 0
        while True:
            active = np.flatnonzero(~self.failed & ~self.halted & (self.clock < t_end)).tolist()
            if not active:
                break
            before = self.clock[active]
            work = []
            for k in active:
                sched.admit_arrived(k, self.clock[k])
                if sched.has_work(k):
                    work.append(k)
                else:
                    pending = sched.pending[k]
                    nxt = arrival[pending[0]] if pending else t_end
                    self.clock[k] = nxt if nxt < t_end else t_end
            if work:
                lost += self._step(np.array(work), trace)
            stalled = stalled + 1 if (self.clock[active] == before).all() else 0
            if stalled > MAX_STALLED_ROUNDS:             # a broken rule, not a state: fail, never hang
                raise RuntimeError(f"no instance's clock moved in {stalled} rounds at t={before.min():.6f}")
        if trace is not None:
            trace.sort(key=lambda step: (self.index[step[0]], step[1]))
        return sorted(lost, key=lambda x: self.index[x[0]])

    def _step(self, inst: np.ndarray, trace: list | None) -> list:
        tokens, rows, preempted = self.sched.schedule(inst)
        stepping = tokens.any(axis=1)
        stuck = inst[~stepping & (preempted == 0)]
        if stuck.size:
            raise RuntimeError(f"instance {self.iids[stuck[0]]}: a waiting request cannot fit the KV cache alone")
        inst, tokens, rows = inst[stepping], tokens[stepping], rows[stepping]   # all preempted: readmitted next
        shapes = self.sched.shapes(tokens, rows)
        starts = self.clock[inst]
        took = tokens > 0                             # requests in their first step: their queue time ends
        r, at = rows[took], np.broadcast_to(starts[:, None], tokens.shape)[took]
        new = np.isnan(self.table.scheduled[r])
        self.table.scheduled[r[new]] = at[new]
        segments, busy, lost = self._price(inst, shapes, starts)
        if lost:
            self.halted[[k for k, _, _ in lost]] = True
            keep = ~self.halted[inst]
            busy = [b for b, kept in zip(busy, keep) if kept]
            inst, tokens, rows, shapes, starts, segments = (a[keep] for a in (inst, tokens, rows, shapes, starts,
                                                                               segments))
            lost = [(self.iids[k], err, t) for k, err, t in lost]
        ends = starts + step_times(shapes, segments, self._collectives(inst, shapes), self.chunks, self.host)
        for j, k in enumerate(inst.tolist()):
            self.groups[k].accept(starts[j:j + 1].tolist(), shapes[j:j + 1], busy[j])
            if trace is not None:
                trace.append((self.iids[k], float(starts[j]), float(ends[j]), tuple(shapes[j].tolist())))
        self.clock[inst] = ends
        self.steps[inst] += 1
        self.busy[inst] += ends - starts
        self.out_tokens[inst] += shapes[:, 2].astype(np.int64)
        self.computed[inst] += shapes[:, 1].astype(np.int64)
        for k, done in zip(inst.tolist(), self.sched.update(inst, tokens, rows, ends)):
            self.finished[k] += done
        return lost

    def _price(self, inst: np.ndarray, shapes: np.ndarray, starts: np.ndarray):
        """The slowest card's segments of each step (steps × syncs+1) and each step's busy seconds for
        the cards' accounts (``card_group.slowest``); groups that share every (cost model, clock factor)
        are priced in one call. A group with a lost card is left out."""
        by_pricing: dict[tuple, list[int]] = {}
        lost = []
        for j, k in enumerate(inst.tolist()):
            try:
                by_pricing.setdefault(self.groups[k].ready(starts[j]), []).append(j)
            except CardLost as err:
                lost.append((k, err, float(starts[j])))
        segments = np.zeros((len(inst), len(self.message) + 1))
        busy: list = [None] * len(inst)
        for pricing, js in by_pricing.items():
            segments[js], sums = slowest(pricing, shapes[js])
            for n, j in enumerate(js):
                busy[j] = {key: s[n:n + 1] for key, s in sums.items()}
        return segments, busy, lost

    def _collectives(self, inst: np.ndarray, shapes: np.ndarray) -> np.ndarray:
        """Each step's collective times (``pricing.collective_times``); their bytes are counted on the links."""
        msg = linear(shapes, self.message)
        coll = np.zeros_like(msg)
        act = self.active[inst]
        if act.any():
            a = inst[act]
            coll[act], pick = collective_times(self.alpha[a], self.beta[a], msg[act])
            count_sent(self.sent, a, pick, msg[act])
        return coll

    # --- what the host reads ------------------------------------------------------------------------
    def token_events(self) -> list[tuple[int, tuple[float, ...]]]:
        t, out = self.table, []
        for k in range(len(self.iids)):
            for r in self.sched.run[k, :self.sched.nrun[k]].tolist() + self.finished[k]:
                if t.output[r] > t.reported[r]:
                    out.append((int(t.rid[r]), t.token_times(r, int(t.reported[r]))))
                    t.reported[r] = t.output[r]
        return out

    def take_finished(self) -> list[RequestRecord]:
        out = []
        for k, rows in enumerate(self.finished):
            for r in rows:
                out.append(self.table.record(r, finished=True))
                self.table.release(r)
            rows.clear()
        return out

    def evacuate(self, iid: int) -> list[Submit]:
        """Every request the instance holds, as Submits to retry elsewhere; the instance is failed and empty."""
        k = self.index[iid]
        held = self.sched.held(k)
        out = [self.table.submit(r) for r in held]
        for r in held:
            self.table.release(r)
        self.sched.clear(k)
        self.failed[k] = True
        return out

    def rejoin(self, iid: int, t: float) -> None:
        """Back in service at ``t`` (``--recover``), empty: every KV block free, its counters kept."""
        k = self.index[iid]
        self.failed[k] = self.halted[k] = False
        self.sched.free[k] = self.sched.num_blocks[k]
        if self.sched.caches:
            self.sched.caches[k].clear()
        self.clock[k] = max(self.clock[k], t)

    def abort(self, rid: int, reason: str) -> RequestRecord | None:
        """Drop a request wherever it is held (its client went away), freeing its KV blocks."""
        t = self.table
        for r in t.live:
            if t.rid[r] == rid and not self.failed[self.index[int(t.instance[r])]]:
                self.sched.remove(self.index[int(t.instance[r])], r)
                record = dataclasses.replace(t.record(r, finished=False), error=reason)
                t.release(r)
                return record
        return None

    def unfinished(self) -> list[RequestRecord]:
        return [self.table.record(r, finished=False) for k in range(len(self.iids)) for r in self.sched.held(k)]

    def frames(self) -> list[InstanceFrame]:
        s = self.sched
        columns = zip(self.iids, self.clock.tolist(), s.nrun.tolist(), s.waiting, s.pending, s.free.tolist(),
                      s.num_blocks, self.out_tokens.tolist(), self.computed.tolist(), self.steps.tolist(),
                      s.preemptions.tolist(), self.busy.tolist(), self.failed.tolist())
        caches = s.caches or [None] * len(self.iids)
        return [InstanceFrame(instance=iid, clock_s=clock, running=running, waiting=len(waiting) + len(pending),
                              kv_usage=1.0 - free / blocks if blocks else 0.0, output_tokens=out,
                              computed_tokens=computed, steps=steps, preemptions=preempted, busy_s=busy, failed=failed,
                              prefix_cache_queries=cache.queries if cache else 0,
                              prefix_cache_hits=cache.hits if cache else 0)
                for (iid, clock, running, waiting, pending, free, blocks, out, computed, steps, preempted, busy, failed),
                cache in zip(columns, caches)]
