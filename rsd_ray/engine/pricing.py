"""The price of a step: its Device Syncs over the link model, layer pipelining, and the host's time.

Every card returns its compute segments; a collective starts when its last
participant arrives, so a slow card slows its whole group. Without layer
pipelining the step is Σ(max over cards of segment k + collective k). With
``chunks`` > 1 the card's compute engine and the links work as a two-stage
pipeline: chunk j's collective after block k overlaps chunk j+1's compute.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from rsd_ray.calibration import HostCost
from rsd_ray.interconnect.collectives import ALGORITHMS, collective_cost
from rsd_ray.compiler.program import DEVICE_SYNC, Program
from rsd_ray.hardware.costmodel import linear
from rsd_ray.interconnect.topology import Topology


def collective_times(alpha: np.ndarray, beta: np.ndarray, msg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each collective by its cheapest algorithm: ``alpha``, ``beta`` (steps × algorithms × syncs, or one
    row broadcast to all) and ``msg`` (steps × syncs) bytes → (steps × syncs) seconds and the pick."""
    t = alpha + beta * msg[:, None, :]
    pick = t.argmin(axis=1)
    return np.take_along_axis(t, pick[:, None, :], axis=1)[:, 0, :], pick


def count_sent(sent: np.ndarray, rows: np.ndarray, pick: np.ndarray, msg: np.ndarray, repeated: bool = False) -> None:
    """Add each step's message bytes to ``sent[row, algorithm picked, sync]``, step after step; ``repeated``:
    a row may come more than once (an instance's span), added in order, as one step at a time would."""
    at = (rows[:, None], pick, np.arange(msg.shape[1])[None, :])
    if repeated:
        np.add.at(sent, at, msg)
    else:
        sent[at] += msg


def pipeline(segments: np.ndarray, coll: np.ndarray, chunks: int) -> tuple[np.ndarray, np.ndarray]:
    """Layer pipelining's recurrence, for k steps at once: when each compute segment and each collective
    starts, from the step's device start. ``segments`` (k × syncs+1), ``coll`` (k × syncs). The compute
    engine and the links are a two-stage pipeline; the compute of block i waits for the collective of
    the block ``chunks`` before it (same chunk), and a collective for its compute and the link::

        compute  [c0 b0][c1 b0][c0 b1]...        chunk 0's all-reduce of block 0 runs on the links
        links           [ar c0 b0][ar c1 b0]...  while chunk 1's compute of block 0 runs
    """
    k, n = len(segments), coll.shape[1]
    seg_at, link_at = np.zeros((k, n + 1)), np.zeros((k, n))
    compute_free = link_free = np.zeros(k)
    done = [np.zeros(k)] * chunks
    for i in range(n):
        j = i % chunks
        seg_at[:, i] = np.maximum(compute_free, done[j])
        compute_free = seg_at[:, i] + segments[:, i]
        link_at[:, i] = np.maximum(link_free, compute_free)
        link_free = link_at[:, i] + coll[:, i]
        done[j] = link_free
    seg_at[:, n] = np.maximum.reduce([compute_free, *done])
    return seg_at, link_at


def device_time(segments: np.ndarray, coll: np.ndarray, chunks: int) -> np.ndarray:
    """Device seconds of k steps: the slowest card's segments (k × syncs+1) and the collectives between
    them (k × syncs); without pipelining simply their sum."""
    if chunks == 1:
        return segments.sum(axis=1) + coll.sum(axis=1)
    return pipeline(segments, coll, chunks)[0][:, -1] + segments[:, -1]


def step_times(shapes: np.ndarray, segments: np.ndarray, coll: np.ndarray, chunks: int,
               host: HostCost) -> np.ndarray:
    """The price of k steps: host time (``calibration.HostCost``) and device time, from their batch shapes,
    the slowest card's segments and the collectives' times. Every engine step, functional step and
    compile-report step is priced here."""
    return host.step_s(shapes[:, 2], device_time(segments, coll, chunks))


class GroupSync:
    """The collectives of one TP group: their times per batch shape, and link bytes."""

    def __init__(self, program: Program, group: list[int], topology: Topology, algorithm: str,
                 shared: dict[str, int]):
        syncs = [c for c in program.commands if c.kind == DEVICE_SYNC]
        self.chunks = program.chunks
        self.message = np.asfortranarray(np.array([c.link for c in syncs]).reshape(len(syncs), -1))
        self.kinds = [c.collective for c in syncs]
        self.group, self.shared, self.routing = list(group), shared, program.routing
        self.algos = ALGORITHMS if algorithm == "auto" else (algorithm,)
        self.price(topology)
        self.active = bool(syncs) and len(group) > 1
        self.sent = np.zeros_like(self.alpha)     # message bytes sent by each algorithm, per sync

    def price(self, topology: Topology) -> None:
        """α and β of every collective on the links as they are now (again after a link degrades)."""
        once = {(kind, a): collective_cost(topology, kind, a, self.group, self.shared, self.routing)  # layers alike
                for kind in set(self.kinds) for a in self.algos}
        self.costs = {a: [once[kind, a] for kind in self.kinds] for a in self.algos}
        self.alpha = np.array([[k.alpha for k in self.costs[a]] for a in self.algos])
        self.beta = np.array([[k.beta for k in self.costs[a]] for a in self.algos])

    def times(self, shapes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(k × syncs) times of every collective for k batch shapes (``collective_times``), the algorithm
        picked and the message bytes."""
        msg = linear(shapes, self.message)
        if not self.active:
            return np.zeros_like(msg), np.zeros(msg.shape, dtype=int), msg
        times, pick = collective_times(self.alpha[None], self.beta[None], msg)
        return times, pick, msg

    def run_steps(self, shapes: np.ndarray, segments: np.ndarray, host: HostCost) -> tuple[np.ndarray, np.ndarray]:
        """k steps of this group alone ran, from their slowest card's ``segments``: their seconds
        (``step_times``) and collective times; their bytes are counted on the links, step by step. (The
        engine prices many groups' steps at once with the same functions.)"""
        coll, pick, msg = self.times(shapes)
        if self.active:
            row = np.zeros(1, dtype=int)
            for j in range(len(msg)):
                count_sent(self.sent[None], row, pick[j:j + 1], msg[j:j + 1])
        return step_times(shapes, segments, coll, self.chunks, host), coll

    def link_bytes(self) -> dict[str, float]:
        """Bytes carried by each directed link so far."""
        out: dict[str, float] = defaultdict(float)
        for a, algo in enumerate(self.costs):
            for k, cost in enumerate(self.costs[algo]):
                for name, factor in cost.link_factors:
                    out[name] += factor * self.sent[a, k]
        return out
