"""Synthetic request streams: Poisson or gamma (bursty) arrivals at a rate, or a closed loop.

A closed-loop client sends its next request when it learns its last one
finished, which is at the epoch boundary (the controller reports completions
per epoch); a refused client retries at the next boundary. Lengths are fixed,
uniform or lognormal, clipped so prompt + output fits the model length.
"""
from __future__ import annotations

import math

import numpy as np

from rsd_ray.config import LengthSpec, WorkloadSpec
from rsd_ray.request import Request


class LengthSampler:
    def __init__(self, spec: LengthSpec, cap: int, rng: np.random.Generator):
        self.spec, self.cap, self.rng = spec, min(cap, spec.max or cap), rng

    def __call__(self) -> int:
        s = self.spec
        if s.dist == "fixed":
            n = s.mean
        elif s.dist == "uniform":
            n = int(self.rng.integers(s.min, max(s.min, s.max or 2 * s.mean) + 1))
        else:  # lognormal with the given mean
            n = int(round(self.rng.lognormal(math.log(s.mean) - s.sigma ** 2 / 2, s.sigma)))
        return max(s.min, min(n, self.cap))


class Workload:
    def __init__(self, spec: WorkloadSpec, servers: int, max_model_len: int, seed: int):
        self.spec = spec
        scale = servers if spec.per_server else 1
        self.rate, self.concurrency = spec.rate * scale, spec.concurrency * scale
        self.rng = rng = np.random.default_rng(seed)
        self.max_model_len = max_model_len
        self.output_len = LengthSampler(spec.output, max_model_len - 1, rng)
        self.input_len = LengthSampler(spec.input, max_model_len - 1, rng)
        self.next_id = 0
        self.idle_clients = self.concurrency if spec.arrival == "closed" else 0
        self.next_arrival = self._gap() if spec.arrival != "closed" else 0.0

    def _gap(self) -> float:
        """Seconds to the next open-loop arrival; gamma with shape 1 would equal Poisson in law."""
        if self.spec.arrival == "poisson":
            return float(self.rng.exponential(1.0 / self.rate))
        shape = self.spec.burstiness
        return float(self.rng.gamma(shape, 1.0 / (self.rate * shape)))

    def _new(self, t: float) -> Request:
        out = self.output_len()
        prompt = min(self.input_len(), self.max_model_len - out)
        self.next_id += 1
        return Request(self.next_id - 1, t, prompt, out)

    def arrivals(self, t0: float, t1: float) -> list[Request]:
        """Requests arriving in [t0, t1), in arrival order."""
        if self.spec.arrival == "closed":
            reqs = [self._new(t0) for _ in range(self.idle_clients)]
            self.idle_clients = 0
            return reqs
        reqs = []
        while self.next_arrival < t1:
            reqs.append(self._new(max(self.next_arrival, t0)))
            self.next_arrival += self._gap()
        return reqs

    def done(self, count: int) -> None:
        """``count`` requests ended (finished or refused): their clients are free."""
        if self.spec.arrival == "closed":
            self.idle_clients += count
