"""vLLM v1's scheduling rules, for many instances at once: continuous batching, chunked prefill, recompute
preemption, admission (``preempt``, or ``reserve``: TensorRT-LLM's no-eviction) and the prefix cache's hooks.

Each step: running requests first (in order), each asking for the tokens it still lacks, within the token
budget; when KV blocks run out the last running request is preempted (its blocks freed, recomputed later).
Then waiting requests join while seats (``max_num_seqs``), budget and blocks allow — unless something was
preempted this step. With ``admission: reserve`` a waiting request joins only when the blocks of its whole
length (prompt + max_tokens) fit beside what the running requests may still take.

Running requests sit in a matrix (instances × ``max_num_seqs``), in their
running order, so the first phase of a step — every running request asks for
the tokens it lacks, within the token budget — is a cumulative sum along
rows::

    lacking  [ 1  1  1 900  1 ]        budget 1024
    before   [ 0  1  2   3 903 ]       (exclusive cumsum)
    n        [ 1  1  1 900  1 ]        = clip(budget − before, 0, lacking)
    blocks   Σ new blocks ≤ free        → no preemption on this row

A row whose blocks run out preempts; that row (rare) is scheduled request by
request. The victim is the last running request, or under ``scheduling_policy:
priority`` (vLLM's) the one of lowest priority and latest arrival — which may
have been scheduled already this step, and is taken out again — and the waiting
queue is kept in priority, then arrival, order. Waiting requests join one by one, in Python (a
step admits a few at most); ``pending`` holds routed requests whose arrival is
still ahead. Finished requests leave the matrix in order.
"""
from __future__ import annotations

import bisect
from collections import deque

import numpy as np

from rsd_ray.compiler.program import batch_shape
from rsd_ray.engine.kv_blocks import blocks_to_add
from rsd_ray.engine.table import RequestTable, State


class Scheduler:
    def __init__(self, engine, num_blocks: list[int], table: RequestTable, caches=None, loader=None):
        """``loader(i, tokens, t)``: when ``tokens`` tokens' KV cache asked of instance ``i``'s host memory at
        ``t`` has reached its cards (with ``engine.kv_offloading_size``)."""
        n = len(num_blocks)
        self.max_seqs, self.budget = engine.max_num_seqs, engine.max_num_batched_tokens
        self.chunked, self.block = engine.enable_chunked_prefill, engine.block_size
        self.reserve = engine.admission == "reserve"
        self.by_priority = engine.scheduling_policy == "priority"
        self.caches = caches                      # a PrefixCache per instance, or None (prefix caching off)
        self.table = table
        self.num_blocks = list(num_blocks)
        self.free = np.array(num_blocks, dtype=np.int64)
        self.run = np.full((n, self.max_seqs), -1, dtype=np.int64)
        self.nrun = np.zeros(n, dtype=np.int64)
        self.waiting = [deque() for _ in range(n)]
        self.pending: list[list[int]] = [[] for _ in range(n)]
        self.preemptions = np.zeros(n, dtype=np.int64)
        self.loader, self.loading = loader, {}    # row → blocks on their way back from host memory
        self.now = np.zeros(n)                    # each instance's clock when its arrivals were last taken

    # --- queues --------------------------------------------------------------------------------------
    def add_pending(self, i: int, r: int) -> None:
        """A routed request; one retried from a failed instance (an earlier arrival) goes in order."""
        pending, due = self.pending[i], self.table.due
        self.table.state[r] = State.PENDING
        if pending and due[r] < due[pending[-1]]:
            bisect.insort(pending, r, key=lambda x: due[x])
        else:
            pending.append(r)

    def admit_arrived(self, i: int, clock: float) -> None:
        pending, due = self.pending[i], self.table.due
        self.now[i] = clock
        n = 0
        while n < len(pending) and due[pending[n]] <= clock:
            n += 1
        if n:
            arrived = pending[:n]
            self.table.state[arrived] = State.WAITING
            loaded = [r for r in arrived if r in self.loading]
            for r in loaded:                      # its blocks are back: cached again, and it is first in line
                self.caches[i].promote(self.loading.pop(r))
            self.waiting[i].extendleft(reversed(loaded))
            self.waiting[i].extend(r for r in arrived if r not in loaded)
            del pending[:n]
            if self.by_priority:
                self._order(i)

    def _order(self, i: int) -> None:
        """The priority policy's waiting queue: by priority, then arrival (stable: ties keep their order)."""
        t = self.table
        self.waiting[i] = deque(sorted(self.waiting[i], key=lambda r: (t.priority[r], t.arrival[r])))

    def has_work(self, i: int) -> bool:
        return bool(self.nrun[i] or self.waiting[i])

    def held(self, i: int) -> list[int]:
        """Rows the instance holds, in order: pending, waiting, running."""
        return self.pending[i] + list(self.waiting[i]) + self.run[i, :self.nrun[i]].tolist()

    def remove(self, i: int, r: int) -> None:
        """Take row ``r`` out of instance ``i`` wherever it is (pending, waiting, running), freeing its blocks."""
        state = self.table.state[r]
        if state == State.PENDING:
            self.pending[i].remove(r)
            self.loading.pop(r, None)
        elif state == State.WAITING:
            self.waiting[i].remove(r)
        else:
            n = int(self.nrun[i])
            slot = self.run[i, :n].tolist().index(r)
            self.run[i, slot:n - 1] = self.run[i, slot + 1:n].copy()
            self.run[i, n - 1] = -1
            self.nrun[i] -= 1
        self._release(i, r)

    def _release(self, i: int, r: int) -> None:
        """Row ``r`` gives back its own KV blocks and lets go of the cached ones it holds."""
        t = self.table
        self.free[i] += t.blocks[r]
        t.blocks[r] = 0
        held = t.pinned.pop(r, None)
        if held:
            self.free[i] += self.caches[i].release(held)
            t.shared[r] = 0

    def clear(self, i: int) -> None:
        """Instance ``i`` holds nothing (its rows were released); free slots of the matrix are -1."""
        for r in self.pending[i]:
            self.loading.pop(r, None)
        self.pending[i], self.nrun[i] = [], 0
        self.run[i] = -1
        self.waiting[i].clear()

    def _need(self, r: int, n: int) -> int:
        t = self.table
        return max(0, blocks_to_add(int(t.computed[r]), n, int(t.blocks[r] + t.shared[r]), self.block))

    def _to_finish(self, r: int) -> int:
        """KV blocks row ``r`` may still take before it finishes (``admission: reserve``)."""
        t = self.table
        return self._need(r, int(t.prompt[r] + t.max_tokens[r] - t.computed[r]))

    # --- one step of many instances ------------------------------------------------------------------
    def schedule(self, inst: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Schedule one step on each of ``inst``; returns the tokens of every running slot (rows of
        ``inst`` × slots, 0 where not scheduled), the rows in those slots, and the preemptions per instance."""
        t, nrun = self.table, self.nrun[inst]
        width = int(nrun.max()) if len(inst) else 0
        rows = self.run[inst, :width]
        valid = rows >= 0
        safe = np.where(valid, rows, 0)
        computed = t.computed[safe]
        lacking = np.where(valid, t.prompt[safe] + t.output[safe] - computed, 0)
        before = np.cumsum(lacking, axis=1) - lacking
        n = np.minimum(np.maximum(self.budget - before, 0), lacking)      # np.clip, at a third of its cost
        need = np.where(n > 0, np.maximum(0, blocks_to_add(computed, n, t.blocks[safe] + t.shared[safe], self.block)), 0)
        blocks = need.sum(axis=1)
        short = blocks > self.free[inst]          # a row runs short of blocks (they only add up: its sum says)
        ok = ~short
        take = (n > 0) & ok[:, None]
        t.blocks[rows[take]] += need[take]
        self.free[inst[ok]] -= blocks[ok]
        tokens = np.zeros((len(inst), self.max_seqs), dtype=np.int64)
        tokens[:, :width] = n
        preempted = np.zeros(len(inst), dtype=np.int64)
        for k in short.nonzero()[0].tolist():
            scheduled, preempted[k] = self._schedule_preempting(int(inst[k]))
            tokens[k] = 0
            tokens[k, :len(scheduled)] = scheduled
        budget = self.budget - tokens.sum(axis=1)
        room = (preempted == 0) & (budget > 0) & (self.nrun[inst] < self.max_seqs)
        for k in room.nonzero()[0].tolist():
            i = int(inst[k])
            if self.waiting[i]:
                self._admit(i, int(budget[k]), tokens[k])
        self._trim(inst)
        width = int(self.nrun[inst].max()) if len(inst) else 0
        return tokens[:, :width], self.run[inst, :width], preempted

    def _trim(self, inst: np.ndarray) -> None:
        """Each instance's prefix cache keeps no more free cached blocks than it has free blocks."""
        if self.caches:
            for i in inst.tolist():
                self.caches[i].trim(int(self.free[i]))

    def _schedule_preempting(self, i: int) -> tuple[list[int], int]:
        """The running phase, request by request, for an instance that must preempt. Under the priority
        policy the victim may be one already scheduled this step: it is taken out again (its tokens back
        in the budget); a request that is itself the victim ends the phase, as in vLLM."""
        t, run, budget, n_of, preempted, pos = self.table, self.run[i], self.budget, [], 0, 0
        while pos < self.nrun[i] and budget > 0:
            r = int(run[pos])
            n = min(int(t.prompt[r] + t.output[r] - t.computed[r]), budget)
            while self._need(r, n) > self.free[i]:
                preempted += 1
                victim, slot = self._preempt(i)
                if victim == r:
                    return n_of, preempted
                if slot < pos:
                    budget += n_of.pop(slot)
                    pos -= 1
            else:
                need = self._need(r, n)
                t.blocks[r] += need
                self.free[i] -= need
                n_of.append(n)
                budget -= n
                pos += 1
        return n_of, preempted

    def _victim(self, i: int) -> int:
        """The running slot to preempt: the last (fcfs), or the first of the lowest priority and latest
        arrival (vLLM's ``max(running, key=(priority, arrival))``)."""
        n = int(self.nrun[i])
        if not self.by_priority:
            return n - 1
        rows = self.run[i, :n]
        keys = list(zip(self.table.priority[rows].tolist(), self.table.arrival[rows].tolist()))
        return keys.index(max(keys))

    def _preempt(self, i: int) -> tuple[int, int]:
        """Free a running request's blocks (``_victim``); it is recomputed from the front of the queue (by its
        priority under that policy). Returns the request and the slot it left."""
        t, n, slot = self.table, int(self.nrun[i]), self._victim(i)
        victim = int(self.run[i, slot])
        self.run[i, slot:n - 1] = self.run[i, slot + 1:n].copy()
        self.run[i, n - 1] = -1
        self.nrun[i] -= 1
        self._release(i, victim)
        t.computed[victim] = 0
        t.preemptions[victim] += 1
        t.state[victim] = State.WAITING
        self.waiting[i].appendleft(victim)
        if self.by_priority:
            self._order(i)
        self.preemptions[i] += 1
        return victim, slot

    def _admit(self, i: int, budget: int, tokens: np.ndarray) -> None:
        """Waiting requests join while seats, budget and blocks allow (the second phase);
        each one's tokens go in its new running slot of ``tokens``."""
        t, waiting = self.table, self.waiting[i]
        while waiting and budget > 0 and self.nrun[i] < self.max_seqs:
            r = waiting[0]                        # holds no blocks: it starts from its cached prefix, if any,
            ready = int(t.ready[r])               # or from the KV cache that came with it (disaggregated)
            hits, cached, reclaim = ((), ready, 0) if ready else self._cached_prefix(i, r)
            if not ready and self._load(i, r, hits):
                continue
            held = 0 if ready else cached // self.block
            lacking = int(t.prompt[r] + t.output[r]) - cached
            n = min(lacking, budget)
            own = blocks_to_add(cached, n, held, self.block)
            if (n < lacking and not self.chunked) or own + reclaim > self.free[i]:
                break
            if self.reserve and (blocks_to_add(cached, int(t.prompt[r] + t.max_tokens[r]) - cached, held, self.block)
                                 + reclaim + sum(map(self._to_finish, self.run[i, :self.nrun[i]])) > self.free[i]):
                break
            waiting.popleft()
            t.state[r] = State.RUNNING
            if t.scheduled[r] != t.scheduled[r]:  # NaN: its first step, which starts at the clock, ends its queue time
                t.scheduled[r] = self.now[i]
            tokens[self.nrun[i]] = n
            self.run[i, self.nrun[i]] = r
            self.nrun[i] += 1
            if self.caches and not ready:
                self._pin(i, r, hits, cached, reclaim)
            if ready:                             # its KV cache is here: those tokens are computed (once:
                t.computed[r], t.ready[r] = ready, 0   # preempted, it recomputes them like any request)
            t.blocks[r] += own
            self.free[i] -= own
            budget -= n

    def _load(self, i: int, r: int, hits: tuple[int, ...]) -> bool:
        """Whether waiting row ``r`` leaves the queue to bring its prefix's next blocks back from host memory
        (once a request; it comes back, first in line, when they have reached the cards)."""
        if self.loader is None or self.table.loaded[r]:
            return False
        t, cache = self.table, self.caches[i]
        hashes = t.hash_ids.get(r, ())
        limit = min(len(hashes), int(t.prompt[r]) // cache.block_tokens,
                    int(t.prompt[r] + t.output[r] - 1) // cache.block_tokens)
        back = cache.fetch(hashes, len(hits), limit)
        if not back:
            return False
        self.waiting[i].popleft()
        t.loaded[r] = 1
        t.due[r] = self.loader(i, len(back) * cache.block_tokens, float(self.now[i]))
        self.loading[r] = back
        self.add_pending(i, r)
        return True

    def _cached_prefix(self, i: int, r: int) -> tuple[tuple[int, ...], int, int]:
        """Row ``r``'s cached leading blocks on instance ``i``: (hashes, tokens, KV blocks pinning them takes)."""
        hashes = self.table.hash_ids.get(r) if self.caches else None
        if not hashes:
            return (), 0, 0
        cache, t = self.caches[i], self.table
        hits, reclaim = cache.lookup(hashes, int(t.prompt[r]), int(t.prompt[r] + t.output[r]), int(self.free[i]))
        return hits, len(hits) * cache.block_tokens, reclaim

    def _pin(self, i: int, r: int, hits: tuple[int, ...], cached: int, reclaim: int) -> None:
        """Row ``r`` joins holding its cached blocks: they count as computed."""
        cache, t = self.caches[i], self.table
        cache.pin(hits, int(t.prompt[r] + t.output[r]))
        self.free[i] -= reclaim
        if hits:
            t.pinned[r] = list(hits)
        t.shared[r], t.computed[r] = len(hits) * cache.size, cached

    def _cache_computed(self, i: int, r: int, before: int) -> None:
        """Row ``r`` computed tokens from ``before`` on: its full prompt blocks among them are cached, held by it."""
        t, cache = self.table, self.caches[i]
        hashes = t.hash_ids.get(r)
        if hashes:
            b = cache.block_tokens
            taken = cache.insert(hashes, before // b, min(int(t.computed[r]), int(t.prompt[r])) // b)
            if taken:
                t.pinned.setdefault(r, []).extend(taken)
                t.blocks[r] -= len(taken) * cache.size
                t.shared[r] += len(taken) * cache.size

    def shapes(self, tokens: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Each step's batch shape (``compiler.program.batch_shape``)."""
        t, took = self.table, tokens > 0
        safe = np.where(took, rows, 0)
        p = np.where(took, t.computed[safe], 0)
        return batch_shape(p, tokens, p + tokens == t.prompt[safe] + t.output[safe])

    # --- spans: decode steps of a batch that cannot change ---------------------------------------------
    def _running(self, inst: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        width = int(self.nrun[inst].max()) if len(inst) else 0
        rows = self.run[inst, :width]
        valid = rows >= 0
        return rows, valid, np.where(valid, rows, 0)

    def span_limits(self, inst: np.ndarray) -> np.ndarray:
        """Decode steps each instance may take before its batch can change: none waits to join, every
        running request lacks just its next token (it is decoding), the batch fits the token budget — and
        then as many steps as come before the first request samples its last token (0: none)."""
        limits = np.zeros(len(inst), dtype=np.int64)
        quiet = self.quiet(inst)
        if not quiet.any():
            return limits
        t, inst = self.table, inst[quiet]
        rows, valid, safe = self._running(inst)
        decoding = (np.where(valid, t.prompt[safe] + t.output[safe] - t.computed[safe], 1) == 1).all(axis=1)
        most = np.iinfo(np.int64).max
        before_last = np.where(valid, t.max_tokens[safe] - t.output[safe], most).min(axis=1, initial=most) - 1
        nrun = self.nrun[inst]
        limits[quiet] = np.where(decoding & (nrun > 0) & (nrun <= self.budget), np.maximum(before_last, 0), 0)
        return limits

    def quiet(self, inst: np.ndarray) -> np.ndarray:
        """Whether no request waits to join each instance."""
        return np.array([not self.waiting[i] for i in inst.tolist()], dtype=bool)

    def _span_blocks(self, inst: np.ndarray, k: np.ndarray) -> np.ndarray:
        """KV blocks each running request takes for ``k`` more tokens (rows × slots)."""
        t = self.table
        rows, valid, safe = self._running(inst)
        need = blocks_to_add(t.computed[safe], k[:, None], t.blocks[safe] + t.shared[safe], self.block)
        return np.where(valid, np.maximum(need, 0), 0)

    def span_fits(self, inst: np.ndarray, k: np.ndarray) -> np.ndarray:
        """Whether ``k`` decode steps of each instance find their KV blocks without preempting."""
        return self._span_blocks(inst, k).sum(axis=1) <= self.free[inst]

    def context(self, inst: np.ndarray) -> np.ndarray:
        """Tokens computed by each instance's running requests (the attention context of its next step)."""
        rows, valid, safe = self._running(inst)
        return np.where(valid, self.table.computed[safe], 0).sum(axis=1)

    def next_arrival(self, inst: np.ndarray) -> np.ndarray:
        """When each instance's next pending request arrives (or its KV from host memory does; inf: none)."""
        due = self.table.due
        return np.array([due[p[0]] if p else np.inf for p in (self.pending[i] for i in inst.tolist())])

    def decode(self, inst: np.ndarray, k: np.ndarray, ends: np.ndarray) -> None:
        """Each instance ran ``k`` decode steps ending at ``ends`` (rows of instances): every running request
        computed and sampled ``k`` tokens, stamped with those ends, and took the KV blocks they need."""
        t = self.table
        need = self._span_blocks(inst, k)
        rows, valid, _ = self._running(inst)
        r = rows[valid]
        t.blocks[r] += need[valid]
        self.free[inst] -= need.sum(axis=1)
        of = np.broadcast_to(np.arange(len(inst))[:, None], rows.shape)[valid]     # each row's instance
        steps = k[of]
        first = np.repeat(np.cumsum(steps) - steps, steps)
        j = np.arange(int(steps.sum())) - first                                   # each token's step
        t.times[np.repeat(t.offset[r] + t.output[r], steps) + j] = ends[np.repeat(of, steps), j]
        t.output[r] += steps
        t.computed[r] += steps
        self._trim(inst)

    def update(self, inst: np.ndarray, tokens: np.ndarray, rows: np.ndarray, ends: np.ndarray) -> list[list[int]]:
        """The step of each of ``inst`` ended at ``ends``: advance computed tokens, stamp sampled ones;
        returns each instance's finished rows (in running order), gone from the matrix."""
        t = self.table
        took = tokens > 0
        r, n = rows[took], tokens[took]
        t.computed[r] += n
        at = took.nonzero()[0]                    # each taking slot's row of ``inst``
        if self.caches:                           # rows that computed prompt tokens: their blocks are cached
            of = inst[at]
            for j in np.flatnonzero(t.computed[r] - n < t.prompt[r]).tolist():
                self._cache_computed(int(of[j]), int(r[j]), int(t.computed[r[j]] - n[j]))
        sampled = t.computed[r] == t.prompt[r] + t.output[r]
        end = ends[at[sampled]]
        s = r[sampled]
        t.times[t.offset[s] + t.output[s]] = end
        t.output[s] += 1
        done = np.zeros(tokens.shape, dtype=bool)
        done[took] = np.where(sampled, t.output[r] >= t.max_tokens[r], False)
        finished: list[list[int]] = [[] for _ in inst]
        ks = done.any(axis=1).nonzero()[0]
        if not len(ks):
            return finished
        gone = rows[done]
        t.state[gone] = State.FINISHED
        for k in ks.tolist():                     # the rows of ``rows`` are the matrix's running slots
            i, slots, d = int(inst[k]), rows[k], done[k]
            ended = slots[d]
            finished[k] = ended.tolist()
            self.free[i] += t.blocks[ended].sum()
            stay = slots[~d]                      # the running that stay, in their order, then the empty slots
            self.run[i, :len(stay)] = stay
            self.run[i, len(stay):len(slots)] = -1
            self.nrun[i] -= len(ended)
        t.blocks[gone] = 0
        if self.caches:
            for k in ks.tolist():
                for row in finished[k]:
                    self._release(int(inst[k]), row)
        return finished
