"""One server's host CPU: runs the engines of its instances and drives its cards."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from rsd_ray.card import CardFrame
from rsd_ray.card_group import LocalCardGroup
from rsd_ray.compiler import Plan
from rsd_ray.config import RunSpec
from rsd_ray.instance import Instance, InstanceFrame
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
    spans: bool = True                                  # run decode spans in one call (same results)

    @property
    def idle_cards(self) -> tuple[int, ...]:
        used = {c for _, group in self.instances for c in group}
        return tuple(c for c in self.cards if c not in used)


@dataclass(frozen=True)
class EpochReport:
    server: int
    finished: tuple[RequestRecord, ...]
    instances: tuple[InstanceFrame, ...]


class Host:
    """``groups`` maps each instance id (and None, for idle cards) to its card group."""

    def __init__(self, spec: RunSpec, plan: Plan, setup: HostSetup, groups: dict):
        self.server, self.groups = setup.server, groups
        self.topology = Topology(spec.rack, spec.device)
        shared = dict(setup.shared_links)
        self.instances: dict[int, Instance] = {}
        for iid, cards in setup.instances:
            sync = GroupSync(plan.programs[0], list(cards), self.topology, spec.compiler.collective, shared)
            self.instances[iid] = Instance(iid, groups[iid], sync, spec.engine, plan.memory.num_blocks,
                                           spec.epoch_s, setup.spans)

    @classmethod
    def local(cls, spec: RunSpec, plan: Plan, setup: HostSetup) -> "Host":
        """A host whose cards are plain objects in this process."""
        groups = {}
        for iid, cards in tuple(setup.instances) + ((None, setup.idle_cards),):
            groups[iid] = LocalCardGroup(cards, spec.device, spec.model.dtype, spec.epoch_s)
            if iid is not None:
                groups[iid].load(plan.programs, plan.memory)
        return cls(spec, plan, setup, groups)

    def advance(self, t_end: float, arrivals: list[Request]) -> EpochReport:
        """Take this epoch's routed arrivals and run every instance to ``t_end``."""
        for req in arrivals:
            self.instances[req.instance].submit(req)
        finished: list[RequestRecord] = []
        for inst in self.instances.values():
            finished += inst.advance(t_end)
        return EpochReport(self.server, tuple(finished), tuple(i.frame() for i in self.instances.values()))

    def card_frames(self, t: float) -> list[CardFrame]:
        frames = [f for group in self.groups.values() for f in group.frames(t)]
        return sorted(frames, key=lambda f: f.card)

    def link_bytes(self) -> dict[str, float]:
        """Collective bytes per directed link, plus each card's External HDMA to its host."""
        out: dict[str, float] = defaultdict(float)
        for inst in self.instances.values():
            for name, nbytes in inst.sync.link_bytes().items():
                out[name] += nbytes
        for frame in self.card_frames(0.0):
            for link in self.topology.host_path(frame.card):
                out[link.name] += frame.host_link_bytes
        return dict(out)

    def unfinished(self) -> list[RequestRecord]:
        return [r for inst in self.instances.values() for r in inst.unfinished()]

    def close(self) -> None:
        for group in self.groups.values():
            group.close()
