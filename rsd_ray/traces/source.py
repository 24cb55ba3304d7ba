"""A trace as the controller's request source: rows streamed in time order, one row of look-ahead.

Trace times are cut to ``[start_s, end_s)``, shifted to start at 0 and multiplied by ``time_scale``;
ShareGPT rows, which have no times, arrive as a Poisson process at ``rate`` (seeded). Lengths are clipped
so prompt + output fits the model (an empty answer becomes one token: every request samples once). Like
any open-loop client a refused request is dropped (counted as refused). Mooncake's ``hash_ids`` travel
on the request (``Submit.hash_ids``) to prefix-caching engines and prefix-aware routers.
"""
from __future__ import annotations

import numpy as np

from rsd_ray.config.specs import TraceSpec
from rsd_ray.request import Submit
from rsd_ray.traces.readers import read
from rsd_ray.workload import OpenLoopSource


class TraceSource(OpenLoopSource):
    def __init__(self, spec: TraceSpec, max_model_len: int, seed: int):
        self.spec, self.max_len = spec, max_model_len
        self.rows = read(spec.format, spec.path, spec.model)
        self.rng = np.random.default_rng(seed)
        self.clock = 0.0                     # ShareGPT's drawn arrival times
        self.next_id = 0
        self.ahead = self._next()

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
        out = []
        while self.ahead and self.ahead[0] < t1:
            t, row = self.ahead
            output = max(1, min(row.output, self.max_len - 1))
            prompt = max(1, min(row.prompt, self.max_len - output))
            out.append(Submit(self.next_id, max(t, t0), prompt, output, -1, hash_ids=row.hash_ids,
                              session=row.session))
            self.next_id += 1
            self.ahead = self._next()
        return out
