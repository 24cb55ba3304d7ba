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
                 "token_times", "preemptions", "instance", "retries", "reported", "scheduled", "hash_ids",
                 "pinned", "shared")

    def __init__(self, rid: int, arrival: float, prompt_len: int, max_tokens: int):
        self.rid, self.arrival, self.prompt_len, self.max_tokens = rid, arrival, prompt_len, max_tokens
        self.num_computed = self.num_output = self.blocks = self.preemptions = self.retries = 0
        self.token_times = array("d")
        self.instance = -1
        self.reported = 0            # token times already sent out as token events
        self.scheduled = None        # start of the first step that computed any of its tokens
        self.hash_ids: tuple[int, ...] = ()
        self.pinned: list[int] = []  # cached prompt blocks it holds (prefix caching), and their KV blocks:
        self.shared = 0

    @classmethod
    def from_submit(cls, s) -> "Request":
        """An engine's request from a ``Submit``; a retried one keeps its tokens (re-prefilled with the prompt)."""
        req = cls(s.rid, s.arrival, s.prompt_len, s.max_tokens)
        req.instance, req.retries, req.preemptions, req.hash_ids = s.instance, s.retries, s.preemptions, s.hash_ids
        req.token_times.extend(s.token_times)
        req.num_output = req.reported = len(s.token_times)
        return req

    @property
    def num_tokens(self) -> int:
        return self.prompt_len + self.num_output

    def record(self, finished: bool, error: str | None = None) -> "RequestRecord":
        times = tuple(self.token_times)
        return RequestRecord(self.rid, self.instance, self.arrival, self.prompt_len, self.max_tokens,
                             times, self.preemptions, times[-1] if finished and times else None, self.retries, error,
                             self.scheduled)


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
    finish: Optional[float]           # None: not finished when the run ended, or errored
    retries: int = 0                  # times it was moved off a failed instance
    error: Optional[str] = None       # why it ended without finishing (no healthy instance could take it)
    scheduled: Optional[float] = None  # first scheduled (on its last instance): queue time = scheduled - arrival

    @property
    def output_len(self) -> int:
        return len(self.token_times)


@dataclass(frozen=True)
class Submit:
    """A request handed to an instance: new, or retried after its instance failed (then it carries the
    tokens it already has, and the instance re-prefills prompt + those tokens)."""
    rid: int
    arrival: float
    prompt_len: int
    max_tokens: int
    instance: int
    token_times: tuple[float, ...] = ()
    retries: int = 0
    preemptions: int = 0
    hash_ids: tuple[int, ...] = ()    # the prompt's chained block hashes, when its source knows them (traces)
    session: str = ""                 # its session (OpenAI's ``user``, a conversation id), for session affinity

    def record(self, error: str | None = None) -> RequestRecord:
        """What it leaves behind when it ends here, unfinished (or errored, with ``error``)."""
        return RequestRecord(self.rid, self.instance, self.arrival, self.prompt_len, self.max_tokens,
                             self.token_times, self.preemptions, None, self.retries, error)

    def sent_again(self, t: float) -> "Submit":
        """The same request sent again at ``t`` (a refused client's retry). ``dataclasses.replace`` would do,
        at ten times the cost — which a million backing-off clients pay every epoch."""
        again = object.__new__(Submit)
        again.__dict__.update(self.__dict__, arrival=t)
        return again
