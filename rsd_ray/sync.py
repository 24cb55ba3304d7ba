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
from rsd_ray.costmodel import linear
from rsd_ray.topology import Topology


class GroupSync:
    """The collectives of one TP group: their times per batch shape, and link bytes."""

    def __init__(self, program: Program, group: list[int], topology: Topology, algorithm: str,
                 shared: dict[str, int]):
        syncs = [c for c in program.commands if c.kind == DEVICE_SYNC]
        self.chunks = program.chunks
        self.message = np.array([c.link for c in syncs]).reshape(len(syncs), -1)
        self.kinds = [c.collective for c in syncs]
        self.group, self.shared = list(group), shared
        self.algos = ALGORITHMS if algorithm == "auto" else (algorithm,)
        self.price(topology)
        self.active = bool(syncs) and len(group) > 1
        self.sent = np.zeros_like(self.alpha)     # message bytes sent by each algorithm, per sync

    def price(self, topology: Topology) -> None:
        """α and β of every collective on the links as they are now (again after a link degrades)."""
        once = {(kind, a): collective_cost(topology, kind, a, self.group, self.shared)   # every layer's is alike
                for kind in set(self.kinds) for a in self.algos}
        self.costs = {a: [once[kind, a] for kind in self.kinds] for a in self.algos}
        self.alpha = np.array([[k.alpha for k in self.costs[a]] for a in self.algos])
        self.beta = np.array([[k.beta for k in self.costs[a]] for a in self.algos])

    def times(self, shapes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(k × syncs) times of every collective for k batch shapes, by the cheapest algorithm;
        with the algorithm picked and the message bytes, for ``record``."""
        msg = linear(shapes, self.message)
        if not self.active:
            return np.zeros_like(msg), np.zeros(msg.shape, dtype=int), msg
        t = self.alpha[:, None, :] + self.beta[:, None, :] * msg[None]
        pick = t.argmin(axis=0)
        return np.take_along_axis(t, pick[None], axis=0)[0], pick, msg

    def record(self, pick: np.ndarray, msg: np.ndarray, steps: int) -> None:
        """Count the bytes of the first ``steps`` steps on the links, step by step."""
        if not self.active:
            return
        cols = np.arange(msg.shape[1])
        for j in range(steps):
            self.sent[pick[j], cols] += msg[j]

    def resolve(self, seg: np.ndarray, collectives: np.ndarray) -> float:
        """One step's time from its slowest card's segments (syncs+1) and its collective times."""
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
