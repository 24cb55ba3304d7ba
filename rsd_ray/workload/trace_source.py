"""A trace as the controller's request source: rows streamed in time order, one row of look-ahead.

Trace times are cut to ``[start_s, end_s)``, shifted to start at 0 and multiplied by ``time_scale``;
ShareGPT rows, which have no times, arrive as a Poisson process at ``rate`` (seeded). Lengths are clipped
so prompt + output fits the model (an empty answer becomes one token: every request samples once). Like
any open-loop client a refused request is dropped (counted as refused). Mooncake's ``hash_ids`` travel
on the request (``Submit.hash_ids``) to prefix-caching engines and prefix-aware routers.

With ``multi_turn`` a ShareGPT conversation is a user: its first question arrives with the Poisson process,
each later one ``think_s`` after the answer before it came back (a refused or failed turn ends the
conversation). Every turn's prompt is the conversation so far, so its blocks are named by the conversation
and their place in it (``hash_block_tokens`` each): a later turn finds its history in the prefix cache.
"""
from __future__ import annotations

import heapq
import math

import numpy as np

from rsd_ray.config.specs import TraceSpec
from rsd_ray.engine.request import RequestRecord, Submit
from rsd_ray.workload.classes import by_priority
from rsd_ray.workload.trace_readers import read
from rsd_ray.workload.synthetic import OpenLoopSource


class TraceSource(OpenLoopSource):
    def __init__(self, spec: TraceSpec, max_model_len: int, seed: int, hash_block_tokens: int = 512):
        self.spec, self.max_len, self.block = spec, max_model_len, hash_block_tokens
        self.rows = read(spec.format, spec.path, spec.model)
        self.rng = np.random.default_rng(seed)
        self.clock = 0.0                     # ShareGPT's drawn arrival times
        self.next_id = 0
        self.clipped = 0                     # rows shortened to fit max_model_len (counted in the results)
        self.ahead = self._next()
        self.conversations = 0
        self.next_turns: list[tuple] = []    # (time, conversation, row, turn): questions due once answered
        self.asking: dict[int, tuple] = {}   # rid → (conversation, row, turn) of a turn awaiting its answer

    def _next(self):
        """The next row in the window as (virtual time, row), or None at the end."""
        s = self.spec
        for row in self.rows:
            if s.format == "sharegpt":
                self.clock += float(self.rng.exponential(1.0 / s.rate))
                return self.clock, row
            if row.t < s.start_s:
                continue
            if s.end_s and row.t >= s.end_s:
                return None
            return (row.t - s.start_s) * s.time_scale, row
        return None

    def arrivals(self, t0: float, t1: float) -> list[Submit]:
        due = []
        while self.ahead and self.ahead[0] < t1:
            t, row = self.ahead
            due.append((t, self.conversations, row, 0))
            self.conversations += 1
            self.ahead = self._next()
        while self.next_turns and self.next_turns[0][0] < t1:
            due.append(heapq.heappop(self.next_turns))
        due.sort(key=lambda d: d[:2])
        return [self._submit(max(t, t0), conversation, row, turn) for t, conversation, row, turn in due]

    def next_arrival(self, t: float) -> float:
        """The earliest time from ``t`` at which a row or a due turn arrives (later turns follow answers)."""
        due = [x[0] for x in (self.ahead, self.next_turns[0] if self.next_turns else None) if x is not None]
        return max(t, min(due)) if due else math.inf

    @property
    def follows_answers(self) -> bool:
        return self.spec.multi_turn

    def _submit(self, t: float, conversation: int, row, turn: int) -> Submit:
        asked = (row.prompt, row.output) if turn == 0 else row.later[turn - 1]
        output = max(1, min(asked[1], self.max_len - 1))
        prompt = max(1, min(asked[0], self.max_len - output))
        self.clipped += (prompt, output) != tuple(asked)
        hash_ids = row.hash_ids
        if self.spec.multi_turn:
            self.asking[self.next_id] = (conversation, row, turn)
            hash_ids = tuple((conversation << 20) + j for j in range(prompt // self.block))
        self.next_id += 1
        return Submit(self.next_id - 1, t, prompt, output, -1, hash_ids=hash_ids, session=row.session,
                      **by_priority(row.priority))

    def done(self, records: list[RequestRecord]) -> None:
        """A conversation's user asks the next question ``think_s`` after an answer came back."""
        for r in records:
            conversation, row, turn = self.asking.pop(r.rid, (None, None, 0))
            if row is not None and r.finish is not None and turn < len(row.later):
                heapq.heappush(self.next_turns, (r.finish + self.spec.think_s, conversation, row, turn + 1))

    def refused(self, reqs: list[Submit], t: float) -> int:
        for s in reqs:
            self.asking.pop(s.rid, None)
        return len(reqs)
