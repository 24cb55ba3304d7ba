"""TP groups onto cards, topology-aware.

A group stays under one PCIe switch when that loses no instances, else under
one server, else spans whole servers. Cards left over are reported idle.
"""
from __future__ import annotations

from dataclasses import dataclass

from rsd_ray.interconnect.topology import Topology


@dataclass(frozen=True)
class Placement:
    tp: int
    groups: tuple[tuple[int, ...], ...]
    idle_cards: tuple[int, ...]
    scope: str    # switch | server | rack

    def server_of(self, topology: Topology, instance: int) -> int:
        return topology.server_of(self.groups[instance][0])


def _groups(num_cards: int, domain: int, tp: int) -> tuple[list[tuple[int, ...]], list[int]]:
    groups, idle = [], []
    for start in range(0, num_cards, domain):
        cards = list(range(start, min(start + domain, num_cards)))
        whole = len(cards) // tp * tp
        groups += [tuple(cards[i:i + tp]) for i in range(0, whole, tp)]
        idle += cards[whole:]
    return groups, idle


def place(topology: Topology, tp: int) -> Placement:
    per_switch, per_server = topology.cards_per_switch, topology.rack.cards_per_server
    options = []
    if tp <= per_switch:
        options.append(("switch", per_switch))
    if tp <= per_server:
        options.append(("server", per_server))
    options.append(("rack", tp if tp > per_server else topology.num_cards))
    best = None
    for scope, domain in options:
        groups, idle = _groups(topology.num_cards, domain, tp)
        if best is None or len(groups) > len(best[1]):
            best = (scope, groups, idle)
    scope, groups, idle = best
    return Placement(tp, tuple(groups), tuple(idle), scope)
