"""One server's host CPU: runs the engines of its instances and drives its cards."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from rsd_ray.card import Card, CardFrame
from rsd_ray.compiler import Plan
from rsd_ray.config import RunSpec
from rsd_ray.instance import CardGroup, Instance, InstanceFrame
from rsd_ray.request import Request, RequestRecord
from rsd_ray.sync import GroupSync
from rsd_ray.topology import Topology


@dataclass(frozen=True)
class HostSetup:
    """What one host builds: its server and the TP groups it drives."""
    server: int
    cards: tuple[int, ...]
    instances: tuple[tuple[int, tuple[int, ...]], ...]   # (instance id, card ids)
    shared_links: tuple[tuple[str, int], ...]           # groups per link, rack-wide


@dataclass(frozen=True)
class EpochReport:
    server: int
    finished: tuple[RequestRecord, ...]
    instances: tuple[InstanceFrame, ...]


class Host:
    def __init__(self, spec: RunSpec, plan: Plan, setup: HostSetup):
        self.server = setup.server
        topology = Topology(spec.rack, spec.device)
        self.topology = topology
        self.cards = {c: Card(c, spec.device, spec.model.dtype) for c in setup.cards}
        shared = dict(setup.shared_links)
        self.instances: dict[int, Instance] = {}
        for iid, group in setup.instances:
            for rank, c in enumerate(group):
                self.cards.setdefault(c, Card(c, spec.device, spec.model.dtype))
                self.cards[c].load(plan.programs[rank], plan.memory)
            sync = GroupSync(plan.programs[0], list(group), topology, spec.compiler.collective, shared)
            cards = CardGroup([self.cards[c] for c in group])
            self.instances[iid] = Instance(iid, cards, sync, spec.engine, plan.memory.num_blocks)

    def advance(self, t_end: float, arrivals: list[Request]) -> EpochReport:
        """Take this epoch's routed arrivals and run every instance to ``t_end``."""
        for req in arrivals:
            self.instances[req.instance].submit(req)
        finished: list[RequestRecord] = []
        for inst in self.instances.values():
            finished += inst.advance(t_end)
        return EpochReport(self.server, tuple(finished), tuple(i.frame() for i in self.instances.values()))

    def card_frames(self, t: float) -> list[CardFrame]:
        for card in self.cards.values():
            card.advance_to(t)
        return [card.frame() for card in self.cards.values()]

    def link_bytes(self) -> dict[str, float]:
        out: dict[str, float] = defaultdict(float)
        for inst in self.instances.values():
            for name, nbytes in inst.sync.link_bytes().items():
                out[name] += nbytes
        for card in self.cards.values():
            for link in self.topology.host_path(card.card_id):
                out[link.name] += card.host_link_bytes
        return dict(out)

    def unfinished(self) -> list[RequestRecord]:
        return [r for inst in self.instances.values() for r in inst.unfinished()]
