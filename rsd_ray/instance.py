"""One TP instance: a vLLM-like engine driving its group of cards.

``step()`` reads like vLLM's: schedule, execute on the cards, post-process.
Policy lives in the scheduler, timing in the cards' cost model and the sync.

Spans: when the batch is all decodes and nothing can join, the scheduler
offers k steps at once; they are priced in one call, and the instance keeps
the steps that start before the next arrival or the epoch's end (the cards'
governor samples once per epoch, at its start) — exactly the steps
step-by-step execution would have run, with the same numbers.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np

from rsd_ray.calibration import step_s
from rsd_ray.kv_cache import KVCache
from rsd_ray.request import Request, RequestRecord, Submit
from rsd_ray.scheduler import Scheduler, Span
from rsd_ray.sync import GroupSync

SPAN_MAX_STEPS = 256   # the most steps offered at once; more only wastes work past the next event


@dataclass(frozen=True)
class InstanceFrame:
    """An instance's telemetry, as a router scrapes it."""
    instance: int
    clock_s: float
    running: int
    waiting: int
    kv_usage: float
    output_tokens: int
    computed_tokens: int
    steps: int
    preemptions: int
    busy_s: float
    span_steps: int
    failed: bool = False
    prefix_cache_queries: int = 0     # prompt tokens looked up in the prefix cache (vLLM's counter)
    prefix_cache_hits: int = 0        # of them, found


class Instance:
    def __init__(self, iid: int, cards, sync: GroupSync, engine, num_blocks: int, spans: bool = True,
                 prefix_cache=None):
        self.iid, self.cards, self.sync, self.spans = iid, cards, sync, spans
        self.overlap = engine.async_scheduling
        self.scheduler = Scheduler(engine, KVCache(num_blocks, engine.block_size, prefix_cache))   # cache: or None
        self.pending: list[Request] = []          # routed, arrival still in the future; sorted by arrival
        self.finished: list[Request] = []         # finished since the host last took them
        self.clock = 0.0
        self.steps = self.output_tokens = self.computed_tokens = 0
        self.busy_s = self.last_step_s = 0.0
        self.span_steps = 0
        self.failed = False
        self.trace: list | None = None            # when a list: (instance, t0, t1, shape) of every step

    def submit(self, req: Request) -> None:
        """Queue a routed request; one retried from a failed instance (an earlier arrival) goes in order."""
        req.instance = self.iid
        if self.pending and req.arrival < self.pending[-1].arrival:
            bisect.insort(self.pending, req, key=lambda r: r.arrival)
        else:
            self.pending.append(req)

    def _admit_arrived(self) -> None:
        n = 0
        while n < len(self.pending) and self.pending[n].arrival <= self.clock:
            self.scheduler.add(self.pending[n])
            n += 1
        del self.pending[:n]

    def advance(self, t_end: float) -> None:
        """Run steps until the clock reaches ``t_end``; finished requests collect in ``finished``
        as they finish, so a card lost halfway through loses none of them."""
        while self.clock < t_end:
            self._admit_arrived()
            if self.scheduler.has_work():
                span = self.scheduler.plan_span(self._span_steps(t_end)) if self.spans else None
                self.finished += self._run_span(span, t_end) if span else self.step()
            elif self.pending and self.pending[0].arrival < t_end:
                self.clock = self.pending[0].arrival
            else:
                self.clock = t_end

    def step(self) -> list[Request]:
        out = self.scheduler.schedule()
        if not out.scheduled:
            if out.preempted:   # all running were preempted; the next round readmits them
                return []
            raise RuntimeError(f"instance {self.iid}: a waiting request cannot fit the KV cache alone")
        for req, _ in out.scheduled:
            if req.scheduled is None:
                req.scheduled = self.clock
        ends = self._execute(out.shape[None], limit=self.clock)
        return self.scheduler.update(out, ends[0])

    def _limit(self, t_end: float) -> float:
        return min(t_end, self.pending[0].arrival) if self.pending else t_end

    def _span_steps(self, t_end: float) -> int:
        """How many steps to offer: about as many as fit before the next event (never changes results)."""
        if self.last_step_s <= 0:
            return 2
        return max(2, min(SPAN_MAX_STEPS, int((self._limit(t_end) - self.clock) / self.last_step_s) + 2))

    def _run_span(self, span: Span, t_end: float) -> list[Request]:
        ends = self._execute(span.shapes, self._limit(t_end))
        self.span_steps += len(ends)
        return self.scheduler.apply_span(span, ends)

    def _execute(self, shapes: np.ndarray, limit: float) -> list[float]:
        """Price steps on the cards; keep those that start before ``limit`` (never past the epoch's end,
        so one governor clock covers them all; the first always); returns their end times."""
        segments = self.cards.propose(shapes, self.clock)
        collectives, pick, msg = self.sync.times(shapes)
        starts, ends, t = [], [], self.clock
        for j in range(len(shapes)):
            if j and t >= limit:
                break
            device = self.sync.resolve(segments[j], collectives[j])
            starts.append(t)
            t = t + step_s(shapes[j, 2], device, self.overlap)
            ends.append(t)
        self.cards.accept(starts, shapes)
        self.sync.record(pick, msg, len(starts))
        for start, end, x in zip(starts, ends, shapes):
            self.steps += 1
            self.busy_s += end - start
            self.output_tokens += int(x[2])
            self.computed_tokens += int(x[1])
            if self.trace is not None:
                self.trace.append((self.iid, start, end, tuple(x.tolist())))
        self.last_step_s = ends[-1] - starts[-1]
        self.clock = ends[-1]
        return ends

    def _held(self) -> list[Request]:
        return self.pending + list(self.scheduler.waiting) + self.scheduler.running

    def take_finished(self) -> list[RequestRecord]:
        done, self.finished = self.finished, []
        return [r.record(finished=True) for r in done]

    def token_events(self) -> list[tuple[int, tuple[float, ...]]]:
        """(rid, token times not yet reported) for every request that produced tokens since last asked."""
        out = []
        for r in self.scheduler.running + self.finished:
            if len(r.token_times) > r.reported:
                out.append((r.rid, tuple(r.token_times[r.reported:])))
                r.reported = len(r.token_times)
        return out

    def evacuate(self) -> list[Submit]:
        """Every request this instance holds, as Submits to retry elsewhere (with the tokens they have);
        the instance is empty afterwards."""
        held = self._held()
        self.failed = True
        self.pending, self.scheduler.running = [], []
        self.scheduler.waiting.clear()
        return [Submit(r.rid, r.arrival, r.prompt_len, r.max_tokens, -1, tuple(r.token_times), r.retries + 1,
                       r.preemptions, r.hash_ids) for r in held]

    def rejoin(self, t: float) -> None:
        """Back in service at ``t`` (``--recover``), empty: a fresh KV cache, its counters kept."""
        kv = self.scheduler.kv
        if kv.prefix:
            kv.prefix.clear()
        self.scheduler.kv = KVCache(kv.num_blocks, kv.block_size, kv.prefix)
        self.failed, self.clock = False, max(self.clock, t)

    def unfinished(self) -> list[RequestRecord]:
        return [r.record(finished=False) for r in self._held()]

    def abort(self, rid: int, reason: str) -> RequestRecord | None:
        """Drop a request wherever it is held (its client went away), freeing its KV blocks."""
        s = self.scheduler
        for queue in (self.pending, s.waiting, s.running):
            for req in queue:
                if req.rid == rid:
                    queue.remove(req)
                    s.kv.free(req)
                    return req.record(finished=False, error=reason)
        return None

    def frame(self) -> InstanceFrame:
        s, cache = self.scheduler, self.scheduler.kv.prefix
        return InstanceFrame(self.iid, self.clock, len(s.running), len(s.waiting) + len(self.pending),
                             s.kv.usage, self.output_tokens, self.computed_tokens, self.steps,
                             s.preemptions, self.busy_s, self.span_steps, self.failed,
                             *((cache.queries, cache.hits) if cache else (0, 0)))
