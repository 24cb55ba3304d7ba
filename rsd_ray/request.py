"""A request inside an engine, and the frozen record it leaves behind."""
from __future__ import annotations

from array import array
from dataclasses import dataclass
from typing import Optional


class Request:
    """Mutable engine-side state. One rule covers prefill, decode and recompute:
    ``num_computed`` catches up with ``num_tokens`` (prompt + outputs so far);
    when it does, the step samples one more output token."""
    __slots__ = ("rid", "arrival", "prompt_len", "max_tokens", "num_computed", "num_output", "blocks",
                 "token_times", "preemptions", "instance")

    def __init__(self, rid: int, arrival: float, prompt_len: int, max_tokens: int):
        self.rid, self.arrival, self.prompt_len, self.max_tokens = rid, arrival, prompt_len, max_tokens
        self.num_computed = self.num_output = self.blocks = self.preemptions = 0
        self.token_times = array("d")
        self.instance = -1

    @property
    def num_tokens(self) -> int:
        return self.prompt_len + self.num_output

    def record(self, finished: bool) -> "RequestRecord":
        times = tuple(self.token_times)
        return RequestRecord(self.rid, self.instance, self.arrival, self.prompt_len, self.max_tokens,
                             times, self.preemptions, times[-1] if finished and times else None)


@dataclass(frozen=True)
class RequestRecord:
    """What a request leaves in the results: its timings, token by token."""
    rid: int
    instance: int
    arrival: float
    prompt_len: int
    max_tokens: int
    token_times: tuple[float, ...]
    preemptions: int
    finish: Optional[float]           # None: not finished when the run ended

    @property
    def output_len(self) -> int:
        return len(self.token_times)
