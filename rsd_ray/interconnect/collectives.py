"""Collectives over the links of their paths: time = alpha + beta · bytes.

alpha is ``COLLECTIVE_FIXED_S`` (start and synchronisation) plus each phase's longest path latency.

A collective is a sequence of phases; in a phase every participant sends a
fraction of the message along its path, all flows at once. A phase takes as
long as its most loaded link needs (load × sharers / bandwidth) plus the
longest path latency. ``sharers`` counts the groups whose collectives use a
link, so TP groups that share a switch uplink slow each other down.

Algorithms (message size M, group size n):
- ring all-reduce: 2(n−1) phases, each card sends M/n to its ring neighbour.
- one-shot all-reduce: 1 phase, each card sends M to every other card.
- ring all-gather: n−1 phases of M/n; one-shot all-gather: 1 phase, M/n to all. A reduce-scatter moves
  the same flows (each card ends with its 1/n of the sums).
- broadcast / reduce: 1 phase between the root and every other card.
- all-to-all dispatch (mixture of experts): M is every token's hidden state, 1/n of the tokens on each
  card; card a sends card b the tokens whose experts b holds: M/n · Q_b, where ``routing`` gives Q_b,
  the token-expert pairs per token on card b (Σ Q = experts per token). One phase, whatever the
  algorithm. The combine sends the results back: the same flows, reversed.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from rsd_ray.calibration import COLLECTIVE_FIXED_S
from rsd_ray.interconnect.topology import Topology

KINDS = ("all_reduce", "all_gather", "reduce_scatter", "broadcast", "reduce", "dispatch", "combine")
ALGORITHMS = ("ring", "one_shot")


@dataclass(frozen=True)
class CollectiveCost:
    """Time of a collective as ``alpha + beta * bytes`` and bytes per link per message byte."""
    alpha: float
    beta: float
    link_factors: tuple[tuple[str, float], ...]

    def time(self, nbytes: float) -> float:
        return self.alpha + self.beta * nbytes if self.link_factors else 0.0


def phases(kind: str, algorithm: str, group: list[int], routing: tuple[float, ...] = ()
           ) -> list[list[tuple[int, int, float]]]:
    """The flows (src card, dst card, fraction of the message) of each phase."""
    n = len(group)
    if n == 1:
        return []
    ring = [(group[i], group[(i + 1) % n], 1.0 / n) for i in range(n)]
    every = [(a, b) for a in group for b in group if a != b]
    if kind == "all_reduce":
        return [ring] * (2 * (n - 1)) if algorithm == "ring" else [[(a, b, 1.0) for a, b in every]]
    if kind in ("all_gather", "reduce_scatter"):
        return [ring] * (n - 1) if algorithm == "ring" else [[(a, b, 1.0 / n) for a, b in every]]
    if kind in ("dispatch", "combine"):
        share = dict(zip(group, routing))
        flows = [(a, b, share[b] / n) for a, b in every]
        return [flows if kind == "dispatch" else [(b, a, f) for a, b, f in flows]]
    root, rest = group[0], group[1:]
    if kind == "broadcast":
        return [[(root, b, 1.0) for b in rest]]
    if kind == "reduce":
        return [[(a, root, 1.0) for a in rest]]
    raise ValueError(f"unknown collective {kind!r}; known: {KINDS}")


def link_loads(topology: Topology, flows) -> dict[str, float]:
    loads: dict[str, float] = defaultdict(float)
    for a, b, frac in flows:
        for link in topology.card_path(a, b):
            loads[link.name] += frac
    return loads


def sharers(topology: Topology, groups: list[list[int]]) -> dict[str, int]:
    """How many groups' ring all-reduces cross each link (at least 1)."""
    count: dict[str, int] = defaultdict(int)
    for group in groups:
        for name in {n for ph in phases("all_reduce", "ring", group)[:1] for n in link_loads(topology, ph)}:
            count[name] += 1
    return count


def collective_cost(topology: Topology, kind: str, algorithm: str, group: list[int],
                    shared: dict[str, int] | None = None, routing: tuple[float, ...] = ()) -> CollectiveCost:
    by_name = topology.by_name
    alpha, beta = (COLLECTIVE_FIXED_S if len(group) > 1 else 0.0), 0.0
    totals: dict[str, float] = defaultdict(float)
    for flows in phases(kind, algorithm, group, routing):
        loads = link_loads(topology, flows)
        beta += max(load * max(1, (shared or {}).get(name, 1)) / by_name[name].bandwidth
                    for name, load in loads.items())
        alpha += max(sum(l.latency for l in topology.card_path(a, b)) for a, b, _ in flows)
        for name, load in loads.items():
            totals[name] += load
    return CollectiveCost(alpha, beta, tuple(sorted(totals.items())))
