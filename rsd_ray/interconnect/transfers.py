"""Transfers over the rack's links, in time: a disaggregated request's KV cache moving from its prefill
instance to its decode instance, card to card; prefix blocks brought back from a host's memory to its cards.

A flow of ``b`` bytes from card ``a`` to card ``c`` takes their path (``Topology.card_path``: PCIe
through the switches inside a server; the NIC and the top-of-rack switch between servers). It starts
when its bytes are ready and every link on the path has finished the flows before it, holds the path
for ``b`` / (the slowest link's bandwidth now — a degraded link is slower), and arrives the path's
latency (one per hop) after its last byte left::

    card0 ─▶ sw0.0 ─▶ host0 ─▶ nic0 ─▶ tor ─▶ nic1 ─▶ host1 ─▶ sw1.0 ─▶ card16
    start = max(ready, every link free)      done = start + b / min(bandwidth)      arrival = done + Σ latency

Flows that share a link go one after another, first come first served: the last of them ends when
fair sharing would have ended it (the link is never idle while one waits), the first ones sooner. A
transfer sent layer by layer as the layers are computed is one flow per layer (``rack/handoff.py``).
"""
from __future__ import annotations

from collections import defaultdict

from rsd_ray.interconnect.topology import Topology


class Transfers:
    def __init__(self, topology: Topology):
        self.topology = topology
        self.free_at: dict[str, float] = defaultdict(float)   # link → when the flows routed over it have left it
        self.bytes: dict[str, float] = defaultdict(float)     # link → bytes moved over it, ever

    def move(self, flows, parts: list[float]) -> float:
        """When every (from card, to card, bytes) flow has arrived, each sent in ``len(parts)`` equal parts,
        part j ready at ``parts[j]`` (one part: all at once; a part a layer: layer by layer), every flow's
        part j before any flow's next."""
        return max(self.send(a, c, nbytes / len(parts), t) for t in parts for a, c, nbytes in flows)

    def send(self, a: int, c: int, nbytes: float, ready: float) -> float:
        """When ``nbytes`` from card ``a``, ready there at ``ready``, have reached card ``c``."""
        return self.over(self.topology.card_path(a, c), nbytes, ready)

    def load(self, c: int, nbytes: float, ready: float) -> float:
        """When ``nbytes`` from its host's memory, ready at ``ready``, have reached card ``c``."""
        return self.over(self.topology.load_path(c), nbytes, ready)

    def over(self, path, nbytes: float, ready: float) -> float:
        """When ``nbytes``, ready at ``ready``, have crossed ``path``."""
        if not path or nbytes <= 0:
            return ready
        start = max([ready] + [self.free_at[link.name] for link in path])
        done = start + nbytes / min(link.bandwidth for link in path)
        for link in path:
            self.free_at[link.name] = done
            self.bytes[link.name] += nbytes
        return done + sum(link.latency for link in path)
