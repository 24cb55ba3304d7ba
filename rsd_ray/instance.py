"""One TP instance: a vLLM-like engine driving its group of cards.

``step()`` reads like vLLM's: schedule, execute on the cards, post-process.
Policy lives in the scheduler, timing in the cards' cost model and the sync.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from rsd_ray.calibration import HOST_STEP_BASE_S, HOST_STEP_PER_SEQ_S
from rsd_ray.kv_cache import KVCache
from rsd_ray.request import Request, RequestRecord
from rsd_ray.scheduler import Scheduler
from rsd_ray.sync import GroupSync


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


class Instance:
    def __init__(self, iid: int, cards, sync: GroupSync, engine, num_blocks: int):
        self.iid, self.cards, self.sync = iid, cards, sync
        self.scheduler = Scheduler(engine, KVCache(num_blocks, engine.block_size))
        self.pending: deque[Request] = deque()    # routed, arrival still in the future
        self.clock = 0.0
        self.steps = self.output_tokens = self.computed_tokens = 0
        self.busy_s = 0.0
        self.on_step = None                        # optional listener(instance, t0, t1, shape)

    def submit(self, req: Request) -> None:
        req.instance = self.iid
        self.pending.append(req)

    def _admit_arrived(self) -> None:
        while self.pending and self.pending[0].arrival <= self.clock:
            self.scheduler.add(self.pending.popleft())

    def advance(self, t_end: float) -> list[RequestRecord]:
        """Run steps until the clock reaches ``t_end``; returns finished requests."""
        finished: list[RequestRecord] = []
        while self.clock < t_end:
            self._admit_arrived()
            if self.scheduler.has_work():
                finished += self.step()
            elif self.pending and self.pending[0].arrival < t_end:
                self.clock = self.pending[0].arrival
            else:
                self.clock = t_end
        return finished

    def step(self) -> list[RequestRecord]:
        out = self.scheduler.schedule()
        if not out.scheduled:
            if out.preempted:   # all running were preempted; the next round readmits them
                return []
            raise RuntimeError(f"instance {self.iid}: a waiting request cannot fit the KV cache alone")
        x = out.shape
        start = self.clock
        device = self.sync.resolve(self.cards.execute(x, start), self.sync.times(x))
        host = HOST_STEP_BASE_S + HOST_STEP_PER_SEQ_S * x[2]
        self.clock = start + host + device
        done = self.scheduler.update(out, self.clock)
        self.steps += 1
        self.busy_s += self.clock - start
        self.output_tokens += int(x[2])
        self.computed_tokens += int(x[1])
        if self.on_step:
            self.on_step(self, start, self.clock, x)
        return [r.record(finished=True) for r in done]

    def unfinished(self) -> list[RequestRecord]:
        reqs = list(self.pending) + list(self.scheduler.waiting) + self.scheduler.running
        return [r.record(finished=False) for r in reqs]

    def frame(self) -> InstanceFrame:
        s = self.scheduler
        return InstanceFrame(self.iid, self.clock, len(s.running), len(s.waiting) + len(self.pending),
                             s.kv.usage, self.output_tokens, self.computed_tokens, self.steps,
                             s.preemptions, self.busy_s)
