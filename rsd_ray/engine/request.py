"""A request as it crosses the epoch (``Submit``) and the frozen record it leaves behind."""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Optional, Sequence

import numpy as np


class PlainValues:
    """A frozen dataclass of plain values that the hot path makes by the million (records, frames)."""

    @classmethod
    def of(cls, **fields):
        """One from every field, at a fraction of the frozen ``__init__``'s cost (each is a plain value:
        nothing to check)."""
        new = object.__new__(cls)
        new.__dict__.update(fields)
        return new


class TokenTimes(Sequence):
    """A request's token timestamps: a sequence of floats that reads, compares and adds like a tuple, kept
    as one read-only array (often a view of the engine's buffer, shared by a whole epoch's records). A
    run of an hour holds ten million timestamps: as Python floats they cost more to make, to gather into
    the results' columns and to free than every step that timed them (``benchmarks/speed.py``)."""
    __slots__ = ("array",)

    def __init__(self, values=()):
        array = np.asarray(values, dtype=float)
        if array.flags.writeable:
            array = array.view()
            array.flags.writeable = False
        self.array = array

    @staticmethod
    def join(sequences) -> np.ndarray:
        """Every sequence's times, one after another, as one array (tuples or ``TokenTimes``)."""
        parts = [s.array if type(s) is TokenTimes else np.asarray(s, dtype=float) for s in sequences]
        return np.concatenate(parts) if parts else np.zeros(0)

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, k):
        return TokenTimes(self.array[k]) if isinstance(k, slice) else float(self.array[k])

    def __iter__(self):
        return iter(self.array.tolist())

    def __array__(self, dtype=None, copy=None):
        array = self.array if dtype is None else self.array.astype(dtype)
        return array.copy() if copy else array

    def __eq__(self, other) -> bool:
        if isinstance(other, TokenTimes):
            return np.array_equal(self.array, other.array)
        return tuple(self) == other if isinstance(other, tuple) else NotImplemented    # a list is not a tuple

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __add__(self, other) -> "TokenTimes":
        return TokenTimes(np.concatenate([self.array, np.asarray(other, dtype=float)]))

    def __radd__(self, other) -> "TokenTimes":
        return TokenTimes(np.concatenate([np.asarray(other, dtype=float), self.array]))

    def __repr__(self) -> str:
        return repr(tuple(self))

    def __reduce__(self):
        return TokenTimes, (np.array(self.array),)    # its own times, not the buffer it may view


class Handoff(NamedTuple):
    """A disaggregated request's prefill and the move of its KV cache to its decode instance
    (``rack/handoff.py``): where and when it was prefilled, when its KV cache had arrived, and its bytes."""
    instance: int                     # the prefill instance
    scheduled: float                  # its prefill's first step started
    prefilled: float                  # its prefill's last step ended (the prompt's KV cache complete)
    ready: float                      # its KV cache had reached the decode instance's cards
    kv_bytes: int                     # KV bytes moved, over every card


@dataclass(frozen=True)
class RequestRecord(PlainValues):
    """What a request leaves in the results: its timings, token by token."""
    rid: int
    instance: int
    arrival: float
    prompt_len: int
    max_tokens: int
    token_times: Sequence[float]      # a tuple, or TokenTimes as the engine hands them back
    preemptions: int
    finish: Optional[float]           # None: not finished when the run ended, or errored
    retries: int = 0                  # times it was moved off a failed instance
    error: Optional[str] = None       # why it ended without finishing (no healthy instance could take it)
    scheduled: Optional[float] = None  # first scheduled (on its last instance): queue time = scheduled - arrival
    priority: int = 0                 # its scheduling priority (vLLM's: lower is sooner)
    service_class: str = ""           # the workload class it was drawn from ("": the only one)
    handoff: Optional[Handoff] = None  # disaggregated: its prefill elsewhere and the move of its KV cache

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
    priority: int = 0                 # its scheduling priority (vLLM's: lower is sooner)
    service_class: str = ""           # the workload class it was drawn from ("": the only one)
    kv_tokens: int = 0                # prompt tokens whose KV cache arrives with it (a disaggregated decode)

    def record(self, error: str | None = None) -> RequestRecord:
        """What it leaves behind when it ends here, unfinished (or errored, with ``error``)."""
        return RequestRecord(rid=self.rid, instance=self.instance, arrival=self.arrival, prompt_len=self.prompt_len,
                             max_tokens=self.max_tokens, token_times=self.token_times, preemptions=self.preemptions,
                             finish=None, retries=self.retries, error=error, priority=self.priority,
                             service_class=self.service_class)

    def replaced(self, **changes) -> "Submit":
        """``dataclasses.replace`` at a tenth of the cost (every field is a plain value: nothing to check),
        which every routed request and a million backing-off clients' retries pay."""
        new = object.__new__(Submit)
        new.__dict__.update(self.__dict__, **changes)
        return new

    def sent_again(self, t: float) -> "Submit":
        """The same request sent again at ``t`` (a refused client's retry)."""
        return self.replaced(arrival=t)
