"""Every request a host's engine holds, as columns of one table, and their token timestamps.

A row is a request from its submit until the host hands it back (finished,
evacuated); freed rows are reused. Each row owns a stretch of one flat buffer
of ``max_tokens`` timestamps (``offset``), so a step stamps all its sampled
tokens with one indexed assignment. The buffer grows by doubling and is
compacted when most of it belongs to rows already gone.
"""
from __future__ import annotations

from enum import IntEnum

import numpy as np

from rsd_ray.engine.request import RequestRecord, Submit, TokenTimes

INT_COLUMNS = ("rid", "prompt", "max_tokens", "computed", "output", "blocks", "shared", "preemptions", "retries",
               "instance", "offset", "reported", "state", "priority", "ready", "loaded")


class State(IntEnum):
    """Where a request is in its instance's engine (the ``state`` column)::

        PENDING ──its arrival time comes──▶ WAITING ──joins the batch──▶ RUNNING ──last token──▶ FINISHED
                                               ▲                            │
                                               └────────preempted───────────┘
    """
    PENDING = 0          # routed here, its arrival time still ahead
    WAITING = 1          # arrived, not in the running batch (or preempted: recomputed when it joins again)
    RUNNING = 2          # in the running batch, holding KV blocks
    FINISHED = 3         # all its tokens sampled; handed back with the epoch


class RequestTable:
    def __init__(self, capacity: int = 256):
        self.arrival = np.zeros(capacity)
        self.due = np.zeros(capacity)                   # when it may join: its arrival, or its KV's from host memory
        self.scheduled = np.full(capacity, np.nan)      # first step's start; NaN until then
        for name in INT_COLUMNS:
            setattr(self, name, np.zeros(capacity, dtype=np.int64))
        self.free_rows = list(range(capacity - 1, -1, -1))
        self.live: set[int] = set()
        self.hash_ids: dict[int, tuple[int, ...]] = {}   # row → its prompt's block hashes (when known)
        self.classes: dict[int, str] = {}                 # row → its service class (when it has one)
        self.pinned: dict[int, list[int]] = {}            # row → cached blocks it holds (``shared``: their KV blocks)
        self.times = np.zeros(1024)
        self.times_end = 0                       # first unused slot of ``times``

    def _grow_rows(self) -> None:
        n = len(self.arrival)
        for name in ("arrival", "due", "scheduled") + INT_COLUMNS:
            column = getattr(self, name)
            setattr(self, name, np.concatenate([column, np.zeros_like(column)]))
        self.free_rows = list(range(2 * n - 1, n - 1, -1)) + self.free_rows

    def _room(self, n: int) -> int:
        """Offset of ``n`` free timestamp slots; compacts or grows the buffer when it is full."""
        if self.times_end + n > len(self.times):
            rows = sorted(self.live)
            used = int(self.max_tokens[rows].sum()) if rows else 0
            size = len(self.times)
            while used + n > size // 2:
                size *= 2
            times, end = np.zeros(size), 0
            for r in rows:                        # keep every live row's stretch, packed
                m = int(self.max_tokens[r])
                times[end:end + m] = self.times[self.offset[r]:self.offset[r] + m]
                self.offset[r] = end
                end += m
            self.times, self.times_end = times, end
        at = self.times_end
        self.times_end += n
        return at

    def add(self, subs: list[Submit]) -> list[int]:
        """Rows for routed requests (each on its ``instance``), their columns written at once; a retried one
        keeps the tokens it has (re-prefilled with the prompt)."""
        while len(self.free_rows) < len(subs):
            self._grow_rows()
        sizes = np.array([s.max_tokens for s in subs], dtype=np.int64)
        first = self._room(int(sizes.sum()))         # before the new rows are live: compaction keeps the others
        rows = [self.free_rows.pop() for _ in subs]
        self.live.update(rows)
        idx = np.array(rows, dtype=np.int64)
        self.offset[idx] = first + np.cumsum(sizes) - sizes
        done = np.array([len(s.token_times) for s in subs], dtype=np.int64)
        self.arrival[idx] = self.due[idx] = [s.arrival for s in subs]
        self.loaded[idx] = 0
        self.rid[idx] = [s.rid for s in subs]
        self.prompt[idx] = [s.prompt_len for s in subs]
        self.max_tokens[idx] = sizes
        self.preemptions[idx] = [s.preemptions for s in subs]
        self.retries[idx] = [s.retries for s in subs]
        self.instance[idx] = [s.instance for s in subs]
        self.priority[idx] = [s.priority for s in subs]
        self.ready[idx] = [s.kv_tokens for s in subs]
        self.scheduled[idx] = np.nan
        self.output[idx] = self.reported[idx] = done
        self.computed[idx] = self.blocks[idx] = self.shared[idx] = 0
        for r, sub in zip(rows, subs):
            if sub.token_times:
                at = int(self.offset[r])
                self.times[at:at + len(sub.token_times)] = sub.token_times
            if sub.hash_ids:
                self.hash_ids[r] = sub.hash_ids
            if sub.service_class:
                self.classes[r] = sub.service_class
        return rows

    def token_times(self, r: int, start: int = 0) -> tuple[float, ...]:
        at = int(self.offset[r])
        return tuple(self.times[at + start:at + int(self.output[r])].tolist())

    def record(self, r: int, finished: bool) -> RequestRecord:
        return self.records([r], finished)[0]

    def records(self, rows: list[int], finished: bool) -> list[RequestRecord]:
        """The records of ``rows``, their columns read once for all of them."""
        idx = np.array(rows, dtype=np.int64)
        output = self.output[idx]
        ends = np.cumsum(output)
        at = ends - output                               # each row's first token in ``flat``
        flat = self.times[np.repeat(self.offset[idx] - at, output) + np.arange(int(ends[-1]) if len(ends) else 0)]
        flat.flags.writeable = False                     # each record's times are a view of it
        last = flat[np.maximum(ends - 1, 0)] if len(flat) else np.zeros(len(idx))   # read where a row has tokens
        out, classes = [], self.classes
        for r, rid, instance, arrival, prompt, max_tokens, preemptions, retries, a, b, first, priority, end in zip(
                rows, self.rid[idx].tolist(), self.instance[idx].tolist(), self.arrival[idx].tolist(),
                self.prompt[idx].tolist(), self.max_tokens[idx].tolist(), self.preemptions[idx].tolist(),
                self.retries[idx].tolist(), at.tolist(), ends.tolist(), self.scheduled[idx].tolist(),
                self.priority[idx].tolist(), last.tolist()):
            times = TokenTimes(flat[a:b])
            out.append(RequestRecord.of(rid=rid, instance=instance, arrival=arrival, prompt_len=prompt,
                                        max_tokens=max_tokens, token_times=times, preemptions=preemptions,
                                        finish=end if finished and b > a else None, retries=retries,
                                        error=None, scheduled=None if first != first else first,   # NaN: never
                                        priority=priority, service_class=classes.get(r, "") if classes else ""))
        return out

    def submit(self, r: int) -> Submit:
        """The row as a request to retry elsewhere, with the tokens it has."""
        return Submit(rid=int(self.rid[r]), arrival=float(self.arrival[r]), prompt_len=int(self.prompt[r]),
                      max_tokens=int(self.max_tokens[r]), instance=-1, token_times=self.token_times(r),
                      retries=int(self.retries[r]) + 1, preemptions=int(self.preemptions[r]),
                      hash_ids=self.hash_ids.get(r, ()), priority=int(self.priority[r]),
                      service_class=self.classes.get(r, ""))

    def release(self, r: int) -> None:
        self.live.discard(r)
        self.hash_ids.pop(r, None)
        self.classes.pop(r, None)
        self.pinned.pop(r, None)
        self.free_rows.append(r)
