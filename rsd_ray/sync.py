"""Resolving a step's Device Syncs over the link model.

Every card returns its compute segments; a collective starts when its last
participant arrives, so a slow card slows its whole group. Without layer
pipelining the step is Σ(max over cards of segment k + collective k). With
``chunks`` > 1 the card's compute engine and the links work as a two-stage
pipeline: chunk j's collective after block k overlaps chunk j+1's compute.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from rsd_ray.collectives import ALGORITHMS, collective_cost
from rsd_ray.compiler.program import DEVICE_SYNC, Program
from rsd_ray.topology import Topology


class GroupSync:
    """The collectives of one TP group: their times per batch shape, and link bytes."""

    def __init__(self, program: Program, group: list[int], topology: Topology, algorithm: str,
                 shared: dict[str, int]):
        syncs = [c for c in program.commands if c.kind == DEVICE_SYNC]
        self.chunks = program.chunks
        self.message = np.array([c.link for c in syncs]).reshape(len(syncs), -1)
        algos = ALGORITHMS if algorithm == "auto" else (algorithm,)
        self.costs = {a: [collective_cost(topology, c.collective, a, group, shared) for c in syncs]
                      for a in algos}
        self.alpha = np.array([[k.alpha for k in self.costs[a]] for a in algos])
        self.beta = np.array([[k.beta for k in self.costs[a]] for a in algos])
        self.active = bool(syncs) and len(group) > 1
        self.sent = np.zeros_like(self.alpha)     # message bytes sent by each algorithm, per sync

    def times(self, x: np.ndarray) -> np.ndarray:
        """Time of every collective of a step with batch shape ``x`` (cheapest algorithm)."""
        if not self.active:
            return np.zeros(len(self.message))
        msg = self.message @ x
        t = self.alpha + self.beta * msg
        pick = t.argmin(axis=0)
        cols = np.arange(len(msg))
        self.sent[pick, cols] += msg
        return t[pick, cols]

    def resolve(self, segments: np.ndarray, collectives: np.ndarray) -> float:
        """Step time from per-card segments (cards × syncs+1) and collective times."""
        seg = segments.max(axis=0)
        if self.chunks == 1:
            return float(seg.sum() + collectives.sum())
        n = self.chunks
        compute_free = link_free = 0.0
        done = [0.0] * n
        for i, (s, c) in enumerate(zip(seg[:-1].tolist(), collectives.tolist())):
            j = i % n
            compute_free = max(compute_free, done[j]) + s
            link_free = max(link_free, compute_free) + c
            done[j] = link_free
        return max(compute_free, *done) + float(seg[-1])

    def link_bytes(self) -> dict[str, float]:
        """Bytes carried by each directed link so far."""
        out: dict[str, float] = defaultdict(float)
        for a, algo in enumerate(self.costs):
            for k, cost in enumerate(self.costs[algo]):
                for name, factor in cost.link_factors:
                    out[name] += factor * self.sent[a, k]
        return out
