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

        def column(values, dtype) -> np.ndarray:          # no tuple per record: nothing for the collector
            return np.fromiter(values, dtype=dtype, count=n)
        self.arrival = column((r.arrival for r in records), float)
        self.finish = column((np.nan if r.finish is None else r.finish for r in records), float)
        self.prompt = column((r.prompt_len for r in records), np.int64)
        self.lengths = column((len(r.token_times) for r in records), np.int64)
        self.errored = column((r.error is not None for r in records), bool)
        self.retries = column((r.retries for r in records), np.int64)
        self.preemptions = column((r.preemptions for r in records), np.int64)
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
