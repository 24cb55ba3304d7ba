"""A differential oracle for the engine: vLLM's scheduling rules written as plainly as possible, one request
at a time, for the tests only (``tests/test_engine_oracle.py`` holds every result of the product's engine,
token timestamps included, equal to this one's).

It shares no rule with the product: its own block counting, running phase, preemption, admission (preempt
and reserve), joining, finishing, batch shape, slowest card, collective pick, pipelining recurrence and
host time. What it borrows is not a rule but data and parts under test elsewhere: the cards (their cost
models and accounts), the groups' collective costs (α, β per algorithm, priced by the link model), the
calibration constants, and the prefix cache (its rules are pinned by hand in ``tests/test_prefix.py``).
A test puts it in a host's place with ``install(controller)``.
"""
from __future__ import annotations

import bisect
from collections import deque

import numpy as np

from rsd_ray.calibration import HOST_STEP_BASE_S, HOST_STEP_PER_SEQ_S
from rsd_ray.hardware.card_group import CardLost
from rsd_ray.engine.frames import InstanceFrame
from rsd_ray.engine.request import RequestRecord, Submit
from rsd_ray.engine.prefix_cache import make_caches


class Request:
    """``computed`` catches up with ``prompt + output``; when it does, the step samples a token."""

    def __init__(self, s: Submit):
        self.rid, self.arrival, self.prompt, self.max_tokens = s.rid, s.arrival, s.prompt_len, s.max_tokens
        self.instance, self.retries, self.preemptions, self.hash_ids = s.instance, s.retries, s.preemptions, s.hash_ids
        self.times = list(s.token_times)
        self.reported = len(self.times)
        self.computed = self.blocks = self.shared = 0
        self.pinned: list[int] = []
        self.scheduled = None

    @property
    def length(self) -> int:
        return self.prompt + len(self.times)

    def record(self, finished: bool, error=None) -> RequestRecord:
        times = tuple(self.times)
        return RequestRecord(self.rid, self.instance, self.arrival, self.prompt, self.max_tokens, times,
                             self.preemptions, times[-1] if finished and times else None, self.retries, error,
                             self.scheduled)

    def submit(self) -> Submit:
        return Submit(self.rid, self.arrival, self.prompt, self.max_tokens, -1, tuple(self.times), self.retries + 1,
                      self.preemptions, self.hash_ids)


def ceil_div(a: int, b: int) -> int:
    return (a + b - 1) // b


class Instance:
    def __init__(self, iid, group, sync, engine, num_blocks, cache):
        self.iid, self.group, self.sync, self.engine, self.cache = iid, group, sync, engine, cache
        self.num_blocks = self.free = num_blocks
        self.pending, self.waiting, self.running, self.finished = [], deque(), [], []
        self.clock = self.busy = 0.0
        self.steps = self.out_tokens = self.computed = self.preemptions = 0
        self.failed = False
        self.trace = None

    # --- blocks -----------------------------------------------------------------------------------------
    def need(self, req: Request, n: int) -> int:
        return max(0, ceil_div(req.computed + n, self.engine.block_size) - req.blocks - req.shared)

    def release(self, req: Request) -> None:
        self.free += req.blocks
        req.blocks = 0
        if req.pinned:
            self.free += self.cache.release(req.pinned)
            req.pinned, req.shared = [], 0

    def trim(self) -> None:
        if self.cache:
            self.cache.trim(self.free)

    # --- one step -----------------------------------------------------------------------------------------
    def preempt(self) -> Request:
        victim = self.running.pop()
        self.release(victim)
        victim.computed = 0
        victim.preemptions += 1
        self.waiting.appendleft(victim)
        self.preemptions += 1
        return victim

    def schedule(self):
        e, budget, out, preempted, i = self.engine, self.engine.max_num_batched_tokens, [], 0, 0
        while i < len(self.running) and budget > 0:
            req = self.running[i]
            n = min(req.length - req.computed, budget)
            while self.need(req, n) > self.free:
                preempted += 1
                if self.preempt() is req:
                    break
            else:
                need = self.need(req, n)
                self.free -= need
                req.blocks += need
                out.append((req, n))
                budget -= n
                i += 1
        while not preempted and self.waiting and budget > 0 and len(self.running) < e.max_num_seqs:
            req = self.waiting[0]
            hits, reclaim = ((), 0)
            if self.cache and req.hash_ids:
                hits, reclaim = self.cache.lookup(req.hash_ids, req.prompt, req.length, self.free)
            cached = len(hits) * self.cache.block_tokens if hits else 0
            n = min(req.length - cached, budget)
            bs = e.block_size
            own = ceil_div(cached + n, bs) - cached // bs
            if (n < req.length - cached and not e.enable_chunked_prefill) or own + reclaim > self.free:
                break
            if e.admission == "reserve":
                whole = ceil_div(req.prompt + req.max_tokens, bs) - cached // bs + reclaim
                others = sum(self.need(r, r.prompt + r.max_tokens - r.computed) for r in self.running)
                if whole + others > self.free:
                    break
            self.waiting.popleft()
            self.running.append(req)
            if self.cache:
                self.cache.pin(hits, req.length)
                self.free -= reclaim
                req.pinned, req.shared = list(hits), len(hits) * self.cache.size
                req.computed = cached
            self.free -= own
            req.blocks += own
            out.append((req, n))
            budget -= n
        self.trim()
        return out, preempted

    def shape(self, out) -> np.ndarray:
        tokens = seqs = pairs = kv = 0
        for req, n in out:
            p = req.computed
            tokens += n
            seqs += p + n == req.length
            pairs += n * p + n * (n + 1) // 2
            kv += p + n
        return np.array([(1.0, tokens, seqs, pairs, kv)])

    def price(self, x: np.ndarray) -> float:
        """The step's seconds: the slowest card's segments, each collective by its cheapest algorithm,
        layer pipelining's overlap, the host's time."""
        segments = np.max([cost.segments(x, f) for cost, f in self.group.ready(self.clock)], axis=0)[0].tolist()
        sync, chunks = self.sync, self.sync.chunks
        coll = [0.0] * (len(segments) - 1)
        if sync.active:
            for k in range(len(coll)):
                msg = float(sum(x[0, j] * sync.message[k, j] for j in range(5)))
                times = [float(sync.alpha[a, k] + sync.beta[a, k] * msg) for a in range(len(sync.alpha))]
                a = times.index(min(times))
                coll[k] = times[a]
                sync.sent[a, k] += msg
        if chunks == 1:
            device = float(np.sum(segments) + np.sum(coll))
        else:
            compute_free = link_free = 0.0
            done = [0.0] * chunks
            for i, c in enumerate(coll):
                compute_free = max(compute_free, done[i % chunks]) + segments[i]
                link_free = max(link_free, compute_free) + c
                done[i % chunks] = link_free
            device = max(compute_free, *done) + segments[-1]
        host = HOST_STEP_BASE_S + HOST_STEP_PER_SEQ_S * x[0, 2]
        return max(host, device) if self.engine.async_scheduling else host + device

    def step(self) -> None:
        out, preempted = self.schedule()
        if not out:
            if preempted:
                return
            raise RuntimeError(f"instance {self.iid}: a waiting request cannot fit the KV cache alone")
        for req, _ in out:
            if req.scheduled is None:
                req.scheduled = self.clock
        x = self.shape(out)
        start, end = self.clock, self.clock + self.price(x)
        self.group.accept([start], x)
        self.clock, self.steps, self.busy = end, self.steps + 1, self.busy + (end - start)
        self.out_tokens += int(x[0, 2])
        self.computed += int(x[0, 1])
        if self.trace is not None:
            self.trace.append((self.iid, start, end, tuple(x[0].tolist())))
        for req, n in out:
            before = req.computed
            req.computed += n
            if self.cache and req.hash_ids and before < req.prompt:
                b = self.cache.block_tokens
                taken = self.cache.insert(req.hash_ids, before // b, min(req.computed, req.prompt) // b)
                req.pinned += taken
                req.blocks -= len(taken) * self.cache.size
                req.shared += len(taken) * self.cache.size
            if req.computed == req.length:
                req.times.append(end)
                if len(req.times) >= req.max_tokens:
                    self.release(req)
                    self.running.remove(req)
                    self.finished.append(req)

    def advance(self, t_end: float) -> None:
        while self.clock < t_end:
            while self.pending and self.pending[0].arrival <= self.clock:
                self.waiting.append(self.pending.pop(0))
            if self.running or self.waiting:
                self.step()
            elif self.pending and self.pending[0].arrival < t_end:
                self.clock = self.pending[0].arrival
            else:
                self.clock = t_end

    def held(self) -> list[Request]:
        return self.pending + list(self.waiting) + self.running

    def frame(self) -> InstanceFrame:
        usage = 1.0 - self.free / self.num_blocks if self.num_blocks else 0.0
        cache = (self.cache.queries, self.cache.hits) if self.cache else (0, 0)
        return InstanceFrame(instance=self.iid, clock_s=self.clock, running=len(self.running),
                             waiting=len(self.waiting) + len(self.pending), kv_usage=usage,
                             output_tokens=self.out_tokens, computed_tokens=self.computed, steps=self.steps,
                             preemptions=self.preemptions, busy_s=self.busy, failed=self.failed,
                             prefix_cache_queries=cache[0], prefix_cache_hits=cache[1])


class OracleEngine:
    """Answers a host's calls as the product's engine does, one instance after another."""

    def __init__(self, engine, members, num_blocks: int):
        caches = make_caches(engine, len(members)) or [None] * len(members)
        self.instances = {iid: Instance(iid, group, sync, engine, num_blocks, cache)
                          for (iid, group, sync), cache in zip(members, caches)}
        self.syncs = [inst.sync for inst in self.instances.values()]

    def reprice(self) -> None:
        """Each instance reads its sync's α and β directly."""

    def submit(self, subs) -> list[Submit]:
        """Take routed requests one by one; returns those whose instance is not here or has failed."""
        refused = []
        for s in subs:
            inst = self.instances.get(s.instance)
            if inst is None or inst.failed:
                refused.append(s)
                continue
            req = Request(s)
            if inst.pending and req.arrival < inst.pending[-1].arrival:
                bisect.insort(inst.pending, req, key=lambda r: r.arrival)
            else:
                inst.pending.append(req)
        return refused

    def is_failed(self, iid: int) -> bool:
        return self.instances[iid].failed

    def run_until(self, t_end: float, trace=None, later=(), stop: str = ""):
        """To ``t_end``, then on epoch by epoch as the controller asks (``EngineCore.run_until``)."""
        lost, reached = self.advance(t_end, trace), t_end
        for boundary in later:
            finished = any(inst.finished for inst in self.instances.values())
            empty = not any(inst.held() for inst in self.instances.values())
            if lost or (stop == "answer" and finished) or (stop == "empty" and empty):
                break
            lost, reached = self.advance(boundary, trace), boundary
        return reached, lost

    def advance(self, t_end: float, trace) -> list:
        lost = []
        for iid, inst in self.instances.items():
            if inst.failed:
                continue
            inst.trace = trace
            try:
                inst.advance(t_end)
            except CardLost as err:
                lost.append((iid, err, inst.clock))
        return lost

    def token_events(self):
        out = []
        for inst in self.instances.values():
            for r in inst.running + inst.finished:
                if len(r.times) > r.reported:
                    out.append((r.rid, tuple(r.times[r.reported:])))
                    r.reported = len(r.times)
        return out

    def take_finished(self):
        out = []
        for inst in self.instances.values():
            out += [r.record(finished=True) for r in inst.finished]
            inst.finished = []
        return out

    def evacuate(self, iid: int):
        inst = self.instances[iid]
        held = inst.held()
        inst.failed, inst.pending, inst.running = True, [], []
        inst.waiting.clear()
        return [r.submit() for r in held]

    def rejoin(self, iid: int, t: float) -> None:
        inst = self.instances[iid]
        if inst.cache:
            inst.cache.clear()
        inst.free = inst.num_blocks
        inst.failed, inst.clock = False, max(inst.clock, t)

    def unfinished(self):
        return [r.record(finished=False) for inst in self.instances.values() for r in inst.held()]

    def abort(self, rid: int, reason: str):
        for inst in self.instances.values():
            for queue in (inst.pending, inst.waiting, inst.running):
                for req in queue:
                    if req.rid == rid:
                        queue.remove(req)
                        inst.release(req)
                        return req.record(finished=False, error=reason)
        return None

    def frames(self):
        return [inst.frame() for inst in self.instances.values()]


def install(controller) -> None:
    """Put the oracle in the place of every host's engine (inline executor, before the run)."""
    for host in controller.executor.hosts:
        host.core = OracleEngine(controller.spec.engine, host.members, host.num_blocks)
