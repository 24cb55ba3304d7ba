"""The rack as a tree of links, and the paths between any two cards.

::

    tor ── nic{s} ── host{s} ──┬── sw{s}.0 ──┬── card0 … card7
                               │             (PCIe Gen5 x16 each, full duplex)
                               └── sw{s}.1 ──┴── card8 … card15

Every physical link is two ``Link`` objects, one per direction (full duplex).
A path goes up from the source to the lowest common node, then down.

A rack with a ``fabric`` (a GPU server's NVLink into NVSwitch) also joins every card of a server to
``fab{s}``; traffic between two cards of one server takes that fabric (card → fab → card), everything
else (host DMA, weights, other servers) the PCIe tree.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from rsd_ray.calibration import LINK_EFFICIENCY
from rsd_ray.config import DeviceSpec, LinkSpec, RackSpec


@dataclass
class Link:
    """One direction of a link, with its byte and busy-time counters."""
    name: str
    kind: str
    bandwidth: float   # payload bytes/s after LINK_EFFICIENCY
    latency: float     # seconds per hop
    bytes: float = field(default=0.0)

    @property
    def busy_s(self) -> float:
        return self.bytes / self.bandwidth


class Topology:
    """Servers, PCIe switches, cards, NICs and the ToR switch of one rack."""

    def __init__(self, rack: RackSpec, device: DeviceSpec):
        self.rack, self.device = rack, device
        self.num_cards = rack.servers * rack.cards_per_server
        self.cards_per_switch = rack.cards_per_server // rack.switches_per_server
        self.parent: dict[str, str] = {}
        self.links: dict[tuple[str, str], Link] = {}
        self._paths: dict[tuple[str, str], tuple[Link, ...]] = {}    # the tree never changes: remember paths
        for s in range(rack.servers):
            self._connect(f"host{s}", f"nic{s}", rack.switch_uplink)
            self._connect(f"nic{s}", "tor", rack.nic)
            for k in range(rack.switches_per_server):
                self._connect(f"sw{s}.{k}", f"host{s}", rack.switch_uplink)
        for c in range(self.num_cards):
            self._connect(self.card_node(c), self.switch_of(c), device.link)
            if rack.fabric:
                self._add_link(self.card_node(c), f"fab{self.server_of(c)}", rack.fabric)
        self.by_name = {link.name: link for link in self.links.values()}
        self.nominal = {name: link.bandwidth for name, link in self.by_name.items()}   # as built

    def degrade(self, name: str, percent: float) -> bool:
        """A ``link`` fault: link ``name`` keeps ``percent`` % of its bandwidth as built; False if there is
        no such link."""
        if name not in self.by_name:
            return False
        self.by_name[name].bandwidth = self.nominal[name] * percent / 100.0
        return True

    def _connect(self, child: str, parent: str, spec: LinkSpec) -> None:
        self.parent[child] = parent
        self._add_link(child, parent, spec)

    def _add_link(self, child: str, parent: str, spec: LinkSpec) -> None:
        bw = spec.bandwidth_gbps * 1e9 * LINK_EFFICIENCY
        for a, b in ((child, parent), (parent, child)):
            self.links[(a, b)] = Link(f"{a}->{b}", spec.name, bw, spec.latency_us * 1e-6)

    @staticmethod
    def card_node(card: int) -> str:
        return f"card{card}"

    def server_of(self, card: int) -> int:
        return card // self.rack.cards_per_server

    def switch_of(self, card: int) -> str:
        local = card % self.rack.cards_per_server
        return f"sw{self.server_of(card)}.{local // self.cards_per_switch}"

    def _ancestors(self, node: str) -> list[str]:
        chain = [node]
        while chain[-1] in self.parent:
            chain.append(self.parent[chain[-1]])
        return chain

    def path(self, src: str, dst: str) -> tuple[Link, ...]:
        """Directed links from ``src`` to ``dst`` (nodes by name)."""
        key = (src, dst)
        if key not in self._paths:
            up, down = self._ancestors(src), self._ancestors(dst)
            below = set(down)
            common = next(n for n in up if n in below)
            hops = up[: up.index(common) + 1] + down[: down.index(common)][::-1]
            self._paths[key] = tuple(self.links[(a, b)] for a, b in zip(hops, hops[1:]))
        return self._paths[key]

    def card_path(self, a: int, b: int) -> tuple[Link, ...]:
        if self.rack.fabric and a != b and self.server_of(a) == self.server_of(b):
            fab = f"fab{self.server_of(a)}"
            return (self.links[(self.card_node(a), fab)], self.links[(fab, self.card_node(b))])
        return self.path(self.card_node(a), self.card_node(b))

    def host_path(self, card: int) -> tuple[Link, ...]:
        """The card's DMA path to its own host (External HDMA)."""
        return self.path(self.card_node(card), f"host{self.server_of(card)}")

    def load_path(self, card: int) -> tuple[Link, ...]:
        """The path its host loads the card's weights over (host to card)."""
        return self.path(f"host{self.server_of(card)}", self.card_node(card))
