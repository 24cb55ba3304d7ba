"""vLLM-v1-style continuous batching with chunked prefill and recompute preemption.

Each step: running requests first (in order), each asking for the tokens it
still lacks, within the token budget; when KV blocks run out the last running
request is preempted (its blocks freed, recomputed later). Then waiting
requests join while seats (``max_num_seqs``), budget and blocks allow — unless
something was preempted this step. With ``admission: reserve`` (TensorRT-LLM's
GUARANTEED_NO_EVICT) a waiting request joins only when the blocks of its whole
length (prompt + max_tokens) fit beside what the running requests may still take,
so nothing is ever preempted.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from rsd_ray.config import EngineSpec
from rsd_ray.kv_cache import KVCache
from rsd_ray.request import Request


@dataclass(frozen=True)
class SchedulerOutput:
    scheduled: tuple[tuple[Request, int], ...]
    shape: np.ndarray          # the five batch-shape terms of compiler.program.TERMS
    preempted: int


@dataclass(frozen=True)
class Span:
    """k decode steps of the same running batch: only context lengths grow, one token a step.
    Nothing can join (no waiting request could be admitted), nothing finishes before the
    last step, and the KV blocks all k steps need are free."""
    requests: tuple[Request, ...]
    shapes: np.ndarray         # (k × 5)


class Scheduler:
    def __init__(self, engine: EngineSpec, kv: KVCache):
        self.max_seqs, self.budget = engine.max_num_seqs, engine.max_num_batched_tokens
        self.chunked = engine.enable_chunked_prefill
        self.reserve = engine.admission == "reserve"
        self.kv = kv
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.preemptions = 0

    def add(self, req: Request) -> None:
        self.waiting.append(req)

    def has_work(self) -> bool:
        return bool(self.running or self.waiting)

    def _preempt(self) -> Request:
        victim = self.running.pop()
        self.kv.free(victim)
        victim.num_computed = 0
        victim.preemptions += 1
        self.waiting.appendleft(victim)
        self.preemptions += 1
        return victim

    def schedule(self) -> SchedulerOutput:
        budget, kv, out, preempted = self.budget, self.kv, [], 0
        i = 0
        while i < len(self.running) and budget > 0:
            req = self.running[i]
            n = min(req.num_tokens - req.num_computed, budget)
            while not kv.can_allocate(req, n):
                preempted += 1
                if self._preempt() is req:
                    break
            else:
                kv.allocate(req, n)
                out.append((req, n))
                budget -= n
                i += 1
        while not preempted and self.waiting and budget > 0 and len(self.running) < self.max_seqs:
            req = self.waiting[0]                 # holds no blocks: it starts from its cached prefix, if any
            hits, cached, reclaim = kv.cached_prefix(req)
            lacking = req.num_tokens - cached
            n = min(lacking, budget)
            if (n < lacking and not self.chunked) or self._joining(cached, n, reclaim) > kv.free_blocks:
                break
            if self.reserve and (self._joining(cached, req.prompt_len + req.max_tokens - cached, reclaim)
                                 + sum(map(self._to_finish, self.running)) > kv.free_blocks):
                break
            self.waiting.popleft()
            self.running.append(req)
            kv.pin(req, hits, reclaim)
            kv.allocate(req, n)
            out.append((req, n))
            budget -= n
        kv.trim()
        return SchedulerOutput(tuple(out), self._shape(out), preempted)

    def _joining(self, cached: int, tokens: int, reclaim: int) -> int:
        """KV blocks a waiting request takes to join with ``cached`` tokens found cached and ``tokens`` more:
        its own new blocks, and the free cached blocks it pins."""
        bs = self.kv.block_size
        return -(-(cached + tokens) // bs) - cached // bs + reclaim

    def _to_finish(self, req: Request) -> int:
        """KV blocks ``req`` may still take before it finishes (its whole prompt + max_tokens)."""
        return self.kv.blocks_needed(req, req.prompt_len + req.max_tokens - req.num_computed)

    @staticmethod
    def _shape(out) -> np.ndarray:
        tokens = seqs = pairs = kv_tokens = 0
        for req, n in out:
            p = req.num_computed
            tokens += n
            seqs += p + n == req.num_tokens
            pairs += n * p + n * (n + 1) // 2
            kv_tokens += p + n
        return np.array((1.0, tokens, seqs, pairs, kv_tokens))

    def plan_span(self, max_steps: int) -> Span | None:
        """The longest span of decode steps (≤ max_steps) the batch allows now, or None."""
        running = self.running
        if len(running) > self.budget or (self.waiting and len(running) < self.max_seqs):
            return None
        k, ctx = max_steps, 0
        for req in running:
            if req.prompt_len + req.num_output - req.num_computed != 1:
                return None
            k = min(k, req.max_tokens - req.num_output)
            ctx += req.num_computed + 1
        while k >= 2 and self._blocks_for(k) > self.kv.free_blocks:
            k //= 2
        if k < 2:
            return None
        b = len(running)
        shapes = np.array([(1.0, b, b, ctx + j * b, ctx + j * b) for j in range(k)])
        return Span(tuple(running), shapes)

    def _blocks_for(self, steps: int) -> int:
        """New KV blocks the running batch needs for ``steps`` more tokens each."""
        return sum(self.kv.blocks_needed(r, steps) for r in self.running)

    def apply_span(self, span: Span, ends: list[float]) -> list[Request]:
        """The first ``len(ends)`` steps of ``span`` ran, ending at ``ends``; returns finished requests."""
        m, kv = len(ends), self.kv
        for req in span.requests:
            kv.allocate(req, m)            # what m single steps would have allocated, one by one
            req.num_computed += m
            req.num_output += m
            req.token_times.extend(ends)
        kv.trim()                          # as the last step's schedule() would, before anything finishes
        finished = [req for req in span.requests if req.num_output >= req.max_tokens]
        for req in finished:
            kv.free(req)
        if finished:
            done = set(map(id, finished))
            self.running = [r for r in self.running if id(r) not in done]
        return finished

    def update(self, out: SchedulerOutput, t_end: float) -> list[Request]:
        """Advance computed tokens, stamp sampled tokens; returns finished requests."""
        finished = []
        for req, n in out.scheduled:
            req.num_computed += n
            self.kv.cache_computed(req, req.num_computed - n)
            if req.num_computed == req.num_tokens:
                req.num_output += 1
                req.token_times.append(t_end)
                if req.num_output >= req.max_tokens:
                    finished.append(req)
                    self.kv.free(req)
        if finished:
            done = set(map(id, finished))
            self.running = [r for r in self.running if id(r) not in done]
        return finished
