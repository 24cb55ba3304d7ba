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

from rsd_ray.hardware.card_group import CardLost, grid_epoch, slowest
from rsd_ray.engine.prefix_cache import make_caches
from rsd_ray.calibration import HostCost
from rsd_ray.engine.pricing import collective_times, count_sent, step_times
from rsd_ray.hardware.costmodel import linear
from rsd_ray.engine.frames import InstanceFrame
from rsd_ray.engine.request import RequestRecord, Submit
from rsd_ray.engine.scheduler import Scheduler
from rsd_ray.engine.table import RequestTable


SPAN_FIRST_GUESS = 8
"""Steps in an instance's first span, before its pace is known (a span cut short is taken up next round)."""

MAX_STALLED_ROUNDS = 3
"""Rounds in a row in which no clock moves before the engine gives up. One is normal (every running
request of an instance preempted: it re-admits them next round); more means a rule is broken."""


def run_together(cores: list["EngineCore"], t_end: float, trace: list | None, later, stop: str) -> tuple[float, list]:
    """``EngineCore.run_until`` of several engines as one: each leap is the shortest any of them allows, and
    a stop or a lost card in one stops them all at the same boundary."""
    def run(boundary):
        return [loss for core in cores for loss in core._run(boundary, trace)]

    def stopped(lost) -> bool:
        return bool(lost) or (stop == "answer" and any(any(core.finished) for core in cores)) or \
            (stop == "empty" and all(core.empty() for core in cores))

    lost, reached, later = run(t_end), t_end, list(later)
    while later and not stopped(lost):
        boundary = min(core._leap(later, stop) for core in cores)
        lost, reached, later = run(boundary), boundary, [b for b in later if b > boundary]
    if trace is None and not lost:
        return reached, lost
    index = {iid: k for k, iid in enumerate(iid for core in cores for iid in core.iids)}
    if trace is not None:
        trace.sort(key=lambda step: (index[step[0]], step[1]))
    return reached, sorted(lost, key=lambda x: index[x[0]])


class EngineCore:
    def __init__(self, engine, instances: list[tuple[int, object, object]], num_blocks: int, host_blocks: int = 0,
                 loader=None):
        """``instances``: (instance id, card group, GroupSync) of each instance, in instance order;
        ``host_blocks``, ``loader``: host memory for evicted prefix blocks (``Scheduler``)."""
        self.iids = [iid for iid, _, _ in instances]
        self.index = {iid: k for k, iid in enumerate(self.iids)}
        self.slot_of = np.full(max(self.iids, default=-1) + 1, -1, dtype=np.int64)   # instance id → its index
        self.slot_of[self.iids] = np.arange(len(self.iids))
        self.groups = [group for _, group, _ in instances]
        self.syncs = [sync for _, _, sync in instances]
        n = len(instances)
        self.table = RequestTable()
        self.sched = Scheduler(engine, [num_blocks] * n, self.table, make_caches(engine, n, host_blocks), loader)
        self.host = HostCost.of(engine, len(self.groups[0].card_ids) if n else 1)
        self.clock, self.busy = np.zeros(n), np.zeros(n)
        self.last_step = np.zeros(n)                 # each instance's last step's seconds: a span's pace
        self.decoded = np.zeros(n, dtype=bool)       # its last step: one token for every request it ran
        self.span_steps = 0                          # steps taken in spans (closed form), of ``steps``
        self.steps, self.out_tokens, self.computed = (np.zeros(n, dtype=np.int64) for _ in range(3))
        self.failed = np.zeros(n, dtype=bool)
        self.halted = np.zeros(n, dtype=bool)      # lost a card: steps no more (the host evacuates it)
        self.finished: list[list[int]] = [[] for _ in range(n)]
        if n:                                        # every group runs the same program: one message matrix
            first = self.syncs[0]
            self.message, self.chunks = first.message, first.chunks
            keys = [(tuple(row), kind) for row, kind in zip(first.message.tolist(), first.kinds)]
            distinct = list(dict.fromkeys(keys))     # every layer's collectives are alike: price each kind once
            self.distinct = np.array([keys.index(key) for key in distinct], dtype=np.int64)
            self.distinct_message = np.asfortranarray(self.message[self.distinct])
            self.as_synced = np.array([distinct.index(key) for key in keys], dtype=np.int64)
            self.active = np.array([s.active for s in self.syncs])
            self.sent = np.stack([s.sent for s in self.syncs])
            for k, s in enumerate(self.syncs):
                s.sent = self.sent[k]                # the group's link counters read the shared array
            self.reprice()

    def reprice(self) -> None:
        """The groups' collectives were priced again (a link degraded): take their α and β (each distinct
        collective's)."""
        if self.syncs:
            self.alpha = np.stack([s.alpha for s in self.syncs])[:, :, self.distinct]
            self.beta = np.stack([s.beta for s in self.syncs])[:, :, self.distinct]

    def submit(self, subs) -> list[Submit]:
        """Take routed requests, in order; returns those whose instance is not here or has failed."""
        here = [s.instance in self.index and not self.failed[self.index[s.instance]] for s in subs]
        taken = [s for s, ok in zip(subs, here) if ok]
        for s, r in zip(taken, self.table.add(taken) if taken else ()):
            self.sched.add_pending(self.index[s.instance], r)
        return [s for s, ok in zip(subs, here) if not ok]

    def is_failed(self, iid: int) -> bool:
        return bool(self.failed[self.index[iid]])

    # --- running an epoch ---------------------------------------------------------------------------
    def run_until(self, t_end: float, trace: list | None = None, later=(), stop: str = "") -> tuple[float, list]:
        """Run every healthy instance to ``t_end``, then epoch by epoch to each of the ``later`` boundaries,
        stopping at the first that ends an epoch with a lost card or, by ``stop``, in which a request
        finished (``"answer"``) or after which the engine holds none (``"empty"``). Returns the boundary
        reached and (instance, loss, time) of each instance that lost a card."""
        return run_together([self], t_end, trace, later, stop)

    def _leap(self, later: list[float], stop: str) -> float:
        """The furthest of the ``later`` boundaries the instances may run to in one go, every check between
        passing by itself: the next one, unless every card is steady (no sample to take, no card to lose,
        inline) — then the last, or, when a finish would stop the run, the last before the first epoch in
        which one can happen (``_no_finish_before``). Cards of instances with nothing to do are not asked."""
        live = np.flatnonzero(~self.failed & ~self.halted)
        if not self._steady(live):
            return later[0]
        if not stop:
            return later[-1]
        quiet = self._stop_bound(live, stop, later[1] if len(later) > 1 else np.inf)
        return max([b for b in later if b <= quiet], default=later[0])

    def _steady(self, live: np.ndarray) -> bool:
        """Whether every card of every instance with something to do is steady (no sample to take, no card
        to lose); the cards of an idle instance take no step to sample."""
        s = self.sched
        busy = live[(s.nrun[live] > 0) | ~s.quiet(live) | np.array([bool(s.pending[k]) for k in live.tolist()],
                                                                    dtype=bool)]
        return all(self.groups[k].steady for k in busy.tolist())

    def quiet_until(self, stop: str) -> float:
        """The boundary up to which these instances could run before ``stop`` could end a call, every check
        between passing by itself (as ``_leap`` finds it): the first epoch in which a request may finish
        (``"answer"``) or after which the engine may be empty (``"empty"``); NaN when a busy card may
        throttle. A controller of several hosts lets them all run as far as every one of them may."""
        live = np.flatnonzero(~self.failed & ~self.halted)
        return self._stop_bound(live, stop) if self._steady(live) else np.nan

    def _stop_bound(self, live: np.ndarray, stop: str, enough: float = np.inf) -> float:
        """The boundary before which ``stop`` cannot end a call: no request finishes before it
        (``"answer"``, looked at until it is below ``enough``) or the engine is not empty (``"empty"``)."""
        return self._no_finish_before(live, enough) if stop == "answer" else self._not_empty_before(live)

    def _no_finish_before(self, live: np.ndarray, enough: float = np.inf) -> float:
        """A boundary before whose epoch no request can finish and no batch change: every instance that
        holds requests decodes a batch that cannot change for ``Scheduler.span_limits`` steps, each no
        shorter than its next (a decode step's context only grows), so its first finishing step starts no
        sooner than its clock plus that many of them; an arrival for an instance changes its batch, and so
        does a request waiting to join. The bound only falls as instances are looked at, so the look stops
        once it is below ``enough`` (a boundary the caller would not reach anyway); and only the instances
        whose clock is below the bound so far are priced (the others cannot lower it)."""
        s = self.sched
        bound = float(s.next_arrival(live).min()) if len(live) else np.inf
        quiet = s.quiet(live)
        bound = min(bound, float(self.clock[live[~quiet]].min(initial=np.inf)))      # someone waits to join
        holding = live[quiet & (s.nrun[live] > 0)]
        if len(holding) and self._epoch_end(bound) >= enough:
            steps = s.span_limits(holding)
            clock = self.clock[holding]
            bound = min(bound, float(clock[steps == 0].min(initial=np.inf)))
            ask = (steps > 0) & (clock < bound)
            if ask.any():
                ahead = steps[ask] * self._first_step_times(holding[ask]) * (1.0 - 1e-9)   # a margin for rounding
                bound = min(bound, float((clock[ask] + ahead).min()))
        return self._epoch_end(bound)

    def _not_empty_before(self, live: np.ndarray) -> float:
        """A boundary before which the engine cannot be empty: each request it holds samples at most one
        token a step, an instance at most ``max_num_seqs`` a step, and a step takes at least the host's
        base time (``HostCost``), so an instance with requests that lack r tokens in all, m at most in
        one, is busy for at least max(m, r / max_num_seqs) more steps."""
        t = self.table
        rows = np.fromiter(t.live, dtype=np.int64, count=len(t.live))
        if not len(rows):
            return -np.inf
        of = self.slot_of[t.instance[rows]]
        lacking = np.maximum(t.max_tokens[rows] - t.output[rows], 0)
        most = np.zeros(len(self.iids), dtype=np.int64)
        np.maximum.at(most, of, lacking)
        steps = np.maximum(most, np.bincount(of, lacking, minlength=len(most)) / self.sched.max_seqs)
        bound = (self.clock + steps * self.host.base_s * (1.0 - 1e-9))[live]      # a margin for rounding
        return self._epoch_end(float(bound.max())) if len(bound) else -np.inf

    def _epoch_end(self, t: float) -> float:
        """The end of the grid epoch that holds ``t``."""
        epoch = self.groups[0].epoch_s
        return (grid_epoch(t, epoch) + 1) * epoch if t < np.inf else np.inf

    def _first_step_times(self, inst: np.ndarray) -> np.ndarray:
        """The seconds of each instance's next decode step (priced as ``_spans`` prices it; nothing counted).
        Its cards are steady (``_steady``), so their pricing is read as it stands: a look ahead calls no card
        (on Ray a liveness ping here found a dead card outside any step, and it escaped as its host's loss)."""
        if not len(inst):
            return np.zeros(0)
        pricing = [self.groups[k].pricing for k in inst.tolist()]
        return self._price(inst, np.arange(len(inst)), self._decode_shapes(inst, 1)[:, 0], pricing)[0]

    def empty(self) -> bool:
        s = self.sched
        return not s.nrun.any() and not any(s.waiting) and not any(s.pending)

    def _run(self, t_end: float, trace: list | None) -> list[tuple[int, CardLost, float]]:
        """Run every healthy instance to ``t_end`` (its last step may end after it)."""
        sched, due, lost, stalled = self.sched, self.table.due, [], 0
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
                    nxt = due[pending[0]] if pending else t_end
                    self.clock[k] = nxt if nxt < t_end else t_end
            if work:
                lost += self._step(np.array(work), t_end, trace)
            stalled = stalled + 1 if (self.clock[active] == before).all() else 0
            if stalled > MAX_STALLED_ROUNDS:             # a broken rule, not a state: fail, never hang
                raise RuntimeError(f"no instance's clock moved in {stalled} rounds at t={before.min():.6f}")
        return lost

    def _step(self, inst: np.ndarray, t_end: float, trace: list | None) -> list:
        """One round: instances whose batch cannot change for a while take a span of decode steps
        (``_spans``), the others one step each."""
        k = self._span_lengths(inst, t_end)
        if k is None:                                # no span this round: every instance steps once
            return self._one_step(inst, trace)
        lost = self._spans(inst[k > 1], k[k > 1], t_end, trace) if (k > 1).any() else []
        rest = inst[k <= 1]
        return lost + (self._one_step(rest, trace) if len(rest) else [])

    def _one_step(self, inst: np.ndarray, trace: list | None) -> list:
        tokens, rows, preempted = self.sched.schedule(inst)
        stepping = tokens.any(axis=1)
        if not stepping.all():                        # all preempted, or its one waiting request went to fetch
            held = np.array([self.sched.has_work(k) for k in inst.tolist()], dtype=bool)   # its prefix from host memory
            stuck = inst[~stepping & (preempted == 0) & held]
            if stuck.size:
                raise RuntimeError(f"instance {self.iids[stuck[0]]}: a waiting request cannot fit the KV cache alone")
            inst, tokens, rows = inst[stepping], tokens[stepping], rows[stepping]   # readmitted, or due, next
        shapes = self.sched.shapes(tokens, rows)
        starts = self.clock[inst]
        inst, keep, pricing, lost = self._ready(inst)
        if lost:
            tokens, rows, shapes, starts = tokens[keep], rows[keep], shapes[keep], starts[keep]
        took, segments, pick, msg = self._price(inst, np.arange(len(inst)), shapes, pricing)
        ends = starts + took
        self._count_sent(inst, pick, msg)
        busy, alike = segments.sum(axis=1), self._alike(pricing)
        for j, k in enumerate(inst.tolist()):
            self.groups[k].accept(starts[j:j + 1].tolist(), shapes[j:j + 1], busy[j:j + 1] if alike[j] else None)
            if trace is not None:
                trace.append((self.iids[k], float(starts[j]), float(ends[j]), tuple(shapes[j].tolist())))
        spent = ends - starts
        self.clock[inst] = ends
        self.steps[inst] += 1
        self.busy[inst] += spent
        self.last_step[inst] = spent
        self.decoded[inst] = shapes[:, 1] == shapes[:, 2]
        self.out_tokens[inst] += shapes[:, 2].astype(np.int64)
        self.computed[inst] += shapes[:, 1].astype(np.int64)
        for k, done in zip(inst.tolist(), self.sched.update(inst, tokens, rows, ends)):
            self.finished[k] += done
        return lost

    def _span_lengths(self, inst: np.ndarray, t_end: float) -> np.ndarray | None:
        """How many decode steps each instance takes in one span this round: what its batch allows
        (``Scheduler.span_limits``), about as many as reach ``t_end`` at its last step's pace, and none
        when its KV blocks would run short on the way. None: no instance takes more than one."""
        maybe = self.decoded[inst]                   # its last step decoded every running request, nothing else
        if not maybe.any():
            return None
        inst = inst[maybe]
        limit = self.sched.span_limits(inst)
        if (limit <= 1).all():
            return None
        k_all = np.zeros(len(maybe), dtype=np.int64)
        pace = self.last_step[inst]
        guess = np.where(pace > 0, np.ceil((t_end - self.clock[inst]) / np.where(pace > 0, pace, 1.0)) + 1,
                         SPAN_FIRST_GUESS)
        k = np.minimum(limit, guess).astype(np.int64)
        long = k > 1
        if long.any():
            k[long] = np.where(self.sched.span_fits(inst[long], k[long]), k[long], 0)
        k_all[maybe] = k
        return k_all

    def _spans(self, inst: np.ndarray, k: np.ndarray, t_end: float, trace: list | None) -> list:
        """``k`` decode steps of each of ``inst`` at once, in closed form. While no request joins, finishes or
        is preempted, each step computes one token of every running request, so step j's shape is the
        first's with j·n more context (n requests); its time follows from the cost terms, its start is the
        cumulative sum of the steps before it (in order, as one step at a time), and the steps that start
        at or after ``t_end`` or an arrival waiting for this instance are left for later rounds. Every
        figure equals stepping one at a time (``tests/test_engine_oracle.py``)."""
        inst, keep, pricing, lost = self._ready(inst)
        k = k[keep]
        if not len(inst):
            return lost
        width = int(k.max())
        j = np.arange(width)
        shapes = self._decode_shapes(inst, width)
        of = np.repeat(np.arange(len(inst)), width)
        took, segments, pick, msg = self._price(inst, of, shapes.reshape(-1, 5), pricing)
        took, busy = took.reshape(len(inst), width), segments.sum(axis=1).reshape(len(inst), width)
        clock = self.clock[inst]
        ends = np.cumsum(np.column_stack([clock, took]), axis=1)[:, 1:]
        starts = np.column_stack([clock, ends[:, :-1]])
        stop = np.minimum(t_end, self.sched.next_arrival(inst))
        ran = (j[None, :] < k[:, None]) & (starts < stop[:, None])
        k = ran.sum(axis=1)
        if pick is not None:
            self._count_sent(inst[of][ran.reshape(-1)], pick[ran.reshape(-1)], msg[ran.reshape(-1)], repeated=True)
        alike = self._alike(pricing)
        for a, i in enumerate(inst.tolist()):
            self.groups[i].accept(starts[a, :k[a]].tolist(), shapes[a, :k[a]], busy[a, :k[a]] if alike[a] else None)
            if trace is not None:
                trace += [(self.iids[i], s, e, tuple(x)) for s, e, x in
                          zip(starts[a, :k[a]].tolist(), ends[a, :k[a]].tolist(), shapes[a, :k[a]].tolist())]
        last = ends[np.arange(len(inst)), k - 1]
        self.busy[inst] = np.cumsum(np.column_stack([self.busy[inst], np.where(ran, ends - starts, 0.0)]),
                                    axis=1)[:, -1]
        self.last_step[inst] = last - starts[np.arange(len(inst)), k - 1]
        self.clock[inst] = last
        self.steps[inst] += k
        self.span_steps += int(k.sum())
        self.out_tokens[inst] += k * self.sched.nrun[inst]
        self.computed[inst] += k * self.sched.nrun[inst]
        self.sched.decode(inst, k, ends)
        return lost

    def _decode_shapes(self, inst: np.ndarray, width: int) -> np.ndarray:
        """The shapes of each instance's next ``width`` decode steps (instances × width × 5): n requests,
        each computing its next token, so step j has j·n more context than the first
        (``compiler.program.batch_shape`` of n sequences with one new token each)."""
        n, context = self.sched.nrun[inst].astype(float), self.sched.context(inst).astype(float)
        shapes = np.empty((len(inst), width, 5))
        shapes[..., 0] = 1.0
        shapes[..., 1] = shapes[..., 2] = n[:, None]
        shapes[..., 3] = shapes[..., 4] = context[:, None] + n[:, None] * (np.arange(width)[None, :] + 1)
        return shapes

    def _ready(self, inst: np.ndarray) -> tuple[np.ndarray, np.ndarray, list, list]:
        """The instances whose cards price their step from their clock now (``CardGroup.ready``), as a mask
        of ``inst``, with each one's pricing; those with a lost card halt (the host evacuates them) and are
        reported."""
        pricing, lost = [], []
        keep = np.ones(len(inst), dtype=bool)
        for j, k in enumerate(inst.tolist()):
            try:
                pricing.append(self.groups[k].ready(self.clock[k]))
            except CardLost as err:
                keep[j] = False
                lost.append((self.iids[k], err, float(self.clock[k])))
                self.halted[k] = True
        return inst[keep], keep, pricing, lost

    def _price(self, inst: np.ndarray, of: np.ndarray, shapes: np.ndarray, pricing: list):
        """Each step's seconds (``pricing.step_times``), step i run by instance ``inst[of[i]]`` at its
        ``pricing``; with the slowest card's segments, and the collectives' algorithm and bytes for
        ``_count_sent``. Every step the engine takes is priced here."""
        coll, pick, msg = self._collectives(inst[of], shapes)
        segments = self._segments(pricing, of, shapes)
        return step_times(shapes, segments, coll, self.chunks, self.host), segments, pick, msg

    def _segments(self, pricing: list, of: np.ndarray, shapes: np.ndarray) -> np.ndarray:
        """The slowest card's segments of each step (steps × syncs+1, ``card_group.slowest``), step i run at
        ``pricing[of[i]]``; instances that share every (cost model, clock factor) are priced in one call."""
        kinds = list(dict.fromkeys(pricing))
        if len(kinds) == 1:
            return slowest(kinds[0], shapes)
        segments = np.zeros((len(shapes), len(self.message) + 1))
        kind_of = np.array([kinds.index(p) for p in pricing])[of]
        for n, kind in enumerate(kinds):
            segments[kind_of == n] = slowest(kind, shapes[kind_of == n])
        return segments

    @staticmethod
    def _alike(pricing: list) -> list[bool]:
        """Whether every card of each instance runs a step alike (one cost model and clock): then a step's
        segments' sum is each card's busy seconds, handed to the cards' accounts so they need not price
        the step again."""
        return [len(p) == 1 for p in pricing]

    def _collectives(self, rows: np.ndarray, shapes: np.ndarray):
        """Each step's collective times (``pricing.collective_times``), step i run by instance ``rows[i]``;
        with the algorithm picked and the message bytes of each distinct collective, for ``_count_sent``.
        Each distinct collective is priced once and laid out over the program's syncs (the same numbers as
        pricing every one)."""
        act = self.active[rows]
        if not act.any():                            # one card a group: nothing crosses a link
            return np.zeros((len(shapes), len(self.as_synced))), None, None
        msg = linear(shapes, self.distinct_message)
        coll = np.zeros(msg.shape)
        coll[act], pick_act = collective_times(self.alpha[rows[act]], self.beta[rows[act]], msg[act])
        pick = np.full(msg.shape, -1)
        pick[act] = pick_act
        return np.take(coll, self.as_synced, axis=1), pick, msg   # C-contiguous, as summed before (a[:, idx] is not)

    def _count_sent(self, rows: np.ndarray, pick, msg: np.ndarray, repeated: bool = False) -> None:
        """The bytes of the steps that ran, on their groups' links (``pricing.count_sent``, in step order;
        ``repeated``: an instance may have run several). Every sync of a distinct collective is sent the
        same bytes by the same algorithm, step after step, so one sync of each is counted and its count
        copied to the others — the same sums."""
        if pick is not None:
            act = self.active[rows]
            sent = self.sent[:, :, self.distinct]
            count_sent(sent, rows[act], pick[act], msg[act], repeated)
            self.sent[:] = sent[:, :, self.as_synced]

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
        rows = [r for done in self.finished for r in done]
        for done in self.finished:
            done.clear()
        if not rows:
            return []
        out = self.table.records(rows, finished=True)
        for r in rows:
            self.table.release(r)
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
        return self.table.records([r for k in range(len(self.iids)) for r in self.sched.held(k)], finished=False)

    def frames(self) -> list[InstanceFrame]:
        s = self.sched
        columns = zip(self.iids, self.clock.tolist(), s.nrun.tolist(), s.waiting, s.pending, s.free.tolist(),
                      s.num_blocks, self.out_tokens.tolist(), self.computed.tolist(), self.steps.tolist(),
                      s.preemptions.tolist(), self.busy.tolist(), self.failed.tolist())
        caches = s.caches or [None] * len(self.iids)
        return [InstanceFrame.of(instance=iid, clock_s=clock, running=running, waiting=len(waiting) + len(pending),
                                 kv_usage=1.0 - free / blocks if blocks else 0.0, output_tokens=out,
                                 computed_tokens=computed, steps=steps, preemptions=preempted, busy_s=busy,
                                 failed=failed,
                                 prefix_cache_queries=cache.queries if cache else 0,
                                 prefix_cache_hits=cache.hits if cache else 0,
                                 kv_offload_hits=cache.host_hits if cache else 0,
                                 kv_offload_stored=cache.stored if cache else 0)
                for (iid, clock, running, waiting, pending, free, blocks, out, computed, steps, preempted, busy, failed),
                cache in zip(columns, caches)]
