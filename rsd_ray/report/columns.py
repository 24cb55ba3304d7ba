"""Every request record of a run as columns: one pass over the records, then each figure of the results
is an array expression (a run of an hour holds a hundred thousand records and ten million token times)."""
from __future__ import annotations

import numpy as np

from rsd_ray.engine.request import TokenTimes


class Columns:
    """The records' fields as arrays, in record order: ``finish`` and ``first`` (first token time) are NaN
    where there is none; ``flat`` holds every token time, record after record (``lengths`` each)."""

    def __init__(self, records):
        n = len(records)
        rows = [(r.arrival, np.nan if r.finish is None else r.finish, r.prompt_len, len(r.token_times),
                 r.error is not None, r.retries, r.preemptions) for r in records]
        floats = np.array([row[:2] for row in rows], dtype=float).reshape(n, 2)
        ints = np.array([row[2:] for row in rows], dtype=np.int64).reshape(n, 5)
        self.arrival, self.finish = floats.T
        self.prompt, self.lengths, errored, self.retries, self.preemptions = ints.T
        self.errored = errored.astype(bool)
        self.done = ~np.isnan(self.finish)
        self.flat = TokenTimes.join(r.token_times for r in records)
        starts = np.cumsum(self.lengths) - self.lengths
        self.first = np.full(n, np.nan)
        has = self.lengths > 0
        self.first[has] = self.flat[starts[has]]

    def gaps(self, keep: np.ndarray) -> np.ndarray:
        """Inter-token latencies of the records ``keep`` marks: the gaps between consecutive tokens of each
        (none across records)."""
        every = keep.all()
        flat = self.flat if every else self.flat[np.repeat(keep, self.lengths)]
        if not flat.size:
            return flat
        ends = np.cumsum(self.lengths if every else self.lengths[keep])[:-1]   # where one record's tokens stop
        within = np.ones(flat.size - 1, dtype=bool)
        within[ends[(ends > 0) & (ends < flat.size)] - 1] = False
        return np.diff(flat)[within]
