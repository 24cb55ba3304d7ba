"""The product's scheduler (``rsd_ray.engine.scheduler``) driven on one instance, one step at a time, so a
test can state a rule with a handful of requests and numbers worked out by hand."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rsd_ray.engine.prefix_cache import make_caches
from rsd_ray.engine.request import Submit
from rsd_ray.engine.scheduler import Scheduler
from rsd_ray.engine.table import RequestTable, State

ONE = np.array([0])


@dataclass(frozen=True)
class Step:
    scheduled: list[tuple[int, int]]        # (rid, tokens) in running order
    shape: np.ndarray                       # the five terms
    preempted: int
    tokens: np.ndarray
    rows: np.ndarray


@dataclass(frozen=True)
class Row:
    computed: int
    blocks: int                             # its own KV blocks
    shared: int                             # KV blocks of the cached prompt blocks it holds
    pinned: list[int]


class OneInstance:
    def __init__(self, engine, num_blocks: int, host_blocks: int = 0, loader=None):
        self.table = RequestTable()
        caches = make_caches(engine, 1, host_blocks)
        self.cache = caches[0] if caches else None
        self.sched = Scheduler(engine, [num_blocks], self.table, caches, loader)
        self.rows: dict[int, int] = {}

    def add(self, rid: int, prompt: int, max_tokens: int, hash_ids=(), priority: int = 0, arrival: float = 0.0,
            kv_tokens: int = 0) -> None:
        self.rows[rid] = self.table.add([Submit(rid, arrival, prompt, max_tokens, 0, hash_ids=tuple(hash_ids),
                                                priority=priority, kv_tokens=kv_tokens)])[0]
        self.sched.add_pending(0, self.rows[rid])
        self.sched.admit_arrived(0, arrival)

    def schedule(self) -> Step:
        tokens, rows, preempted = self.sched.schedule(ONE)
        took = tokens[0] > 0
        scheduled = [(int(self.table.rid[r]), int(n)) for r, n in zip(rows[0][took], tokens[0][took])]
        return Step(scheduled, self.sched.shapes(tokens, rows)[0], int(preempted[0]), tokens, rows)

    def update(self, step: Step, t: float) -> list[int]:
        """The step ended at ``t``: the rids that finished."""
        done = self.sched.update(ONE, step.tokens, step.rows, np.array([t]))[0]
        return [int(self.table.rid[r]) for r in done]

    def has_work(self) -> bool:
        return self.sched.has_work(0)

    @property
    def free(self) -> int:
        return int(self.sched.free[0])

    @property
    def running(self) -> list[int]:
        return [int(self.table.rid[r]) for r in self.sched.run[0, :self.sched.nrun[0]]]

    def state(self, rid: int) -> str:
        return State(self.table.state[self.rows[rid]]).name

    def row(self, rid: int) -> Row:
        t, r = self.table, self.rows[rid]
        return Row(int(t.computed[r]), int(t.blocks[r]), int(t.shared[r]), list(t.pinned.get(r, [])))
