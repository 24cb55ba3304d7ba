"""TP groups onto cards, topology-aware.

A group stays under one PCIe switch when that loses no instances, else under
one server, else spans whole servers. Cards left over are reported idle. A
disaggregated rack whose prefill pool has a TP degree of its own places that
pool's instances first, then the decode pool's on the cards left.
"""
from __future__ import annotations

from dataclasses import dataclass

from rsd_ray.interconnect.topology import Topology


@dataclass(frozen=True)
class Placement:
    tp: int                                  # the rack's (a prefill pool's groups may be of another size)
    groups: tuple[tuple[int, ...], ...]
    idle_cards: tuple[int, ...]
    scope: str    # switch | server | rack

    def server_of(self, topology: Topology, instance: int) -> int:
        return topology.server_of(self.groups[instance][0])


def _groups(free: list[int], domain: int, tp: int) -> tuple[list[tuple[int, ...]], list[int]]:
    """The ``free`` cards (in order) of each ``domain`` cards in turn, in groups of ``tp``; the rest idle."""
    groups, idle = [], []
    for start in range(0, free[-1] + 1 if free else 0, domain):
        cards = [c for c in free if start <= c < start + domain]
        whole = len(cards) // tp * tp
        groups += [tuple(cards[i:i + tp]) for i in range(0, whole, tp)]
        idle += cards[whole:]
    return groups, idle


def place(topology: Topology, tp: int, prefill: tuple[int, int] = (0, 0)) -> Placement:
    """Groups of ``tp`` cards; with ``prefill`` (n, TP) of another TP, n groups of that TP first (fewer when
    fewer fit: nothing else is placed then)."""
    n, prefill_tp = prefill
    if not n or prefill_tp == tp:
        return _place(topology, tp, list(range(topology.num_cards)))
    first = _place(topology, prefill_tp, list(range(topology.num_cards)))
    if len(first.groups) < n:
        return Placement(tp, first.groups, first.idle_cards, first.scope)
    taken = {c for g in first.groups[:n] for c in g}
    rest = _place(topology, tp, [c for c in range(topology.num_cards) if c not in taken])
    scope = first.scope if first.scope == rest.scope else f"{first.scope}, {rest.scope}"
    return Placement(tp, first.groups[:n] + rest.groups, rest.idle_cards, scope)


def _place(topology: Topology, tp: int, free: list[int]) -> Placement:
    per_switch, per_server = topology.cards_per_switch, topology.rack.cards_per_server
    options = []
    if tp <= per_switch:
        options.append(("switch", per_switch))
    if tp <= per_server:
        options.append(("server", per_server))
    options.append(("rack", tp if tp > per_server else topology.num_cards))
    best = None
    for scope, domain in options:
        groups, idle = _groups(free, domain, tp)
        if best is None or len(groups) > len(best[1]):
            best = (scope, groups, idle)
    scope, groups, idle = best
    return Placement(tp, tuple(groups), tuple(idle), scope)
