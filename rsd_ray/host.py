"""One server's host CPU: runs the engines of its instances and drives their cards.

A TP group that spans servers is driven by the host of its first card's server
(the others lend it their cards), so every card belongs to exactly one host:
the cards of its instances, plus its own server's cards that no group uses.
"""
from __future__ import annotations

import dataclasses
from collections import defaultdict
from dataclasses import dataclass

from rsd_ray.card import CardFrame
from rsd_ray.card_group import CardLost, LocalCardGroup
from rsd_ray.compiler import Plan
from rsd_ray.config import RunSpec
from rsd_ray.epoch import EpochIn, EpochOut, Failure
from rsd_ray.instance import Instance
from rsd_ray.request import Request, RequestRecord
from rsd_ray.sync import GroupSync
from rsd_ray.topology import Topology


@dataclass(frozen=True)
class HostSetup:
    """What one host builds: its server, the TP groups it drives and the idle cards it holds."""
    server: int
    instances: tuple[tuple[int, tuple[int, ...]], ...]   # (instance id, card ids)
    idle_cards: tuple[int, ...]
    shared_links: tuple[tuple[str, int], ...]           # groups per link, rack-wide
    spans: bool = True                                  # run decode spans in one call (same results)

    @property
    def cards(self) -> tuple[int, ...]:
        return tuple(sorted({c for _, group in self.instances for c in group} | set(self.idle_cards)))


class Host:
    """``groups`` maps each instance id (and None, for idle cards) to its card group."""

    def __init__(self, spec: RunSpec, plan: Plan, setup: HostSetup, groups: dict, topology: Topology | None = None):
        self.server, self.groups = setup.server, groups
        self.topology = topology or Topology(spec.rack, spec.device)
        self.t = 0.0
        shared = dict(setup.shared_links)
        self.instances: dict[int, Instance] = {}
        self.cards = set(setup.cards)
        self.card_instance = {c: iid for iid, cards in setup.instances for c in cards}
        for iid, cards in setup.instances:
            sync = GroupSync(plan.programs[0], list(cards), self.topology, spec.compiler.collective, shared)
            blocks = spec.engine.num_blocks_override or plan.memory.num_blocks
            self.instances[iid] = Instance(iid, groups[iid], sync, spec.engine, blocks, setup.spans)

    @classmethod
    def local(cls, spec: RunSpec, plan: Plan, setup: HostSetup, topology: Topology | None = None) -> "Host":
        """A host whose cards are plain objects in this process (sharing the rack's topology)."""
        groups = {}
        for iid, cards in tuple(setup.instances) + ((None, setup.idle_cards),):
            groups[iid] = LocalCardGroup(cards, spec.device, spec.model.dtype, spec.epoch_s)
            if iid is not None:
                groups[iid].load(plan.programs, plan.memory)
        return cls(spec, plan, setup, groups, topology)

    def advance(self, epoch: EpochIn) -> EpochOut:
        """Apply controls, take the routed arrivals, run every healthy instance to ``t_end``."""
        failures, orphans = [], []
        for control in epoch.controls:
            if control.kind == "kill_card" and control.target in self.cards:
                iid = self.card_instance.get(control.target)
                self.groups[iid].kill(control.target, self.t)
                failures.append(self._fail(iid, CardLost([control.target], f"card {control.target} was killed"),
                                           orphans, self.t))
        for s in epoch.arrivals.get(self.server, ()):
            inst = self.instances.get(s.instance)
            if inst is None or inst.failed:          # routed before the router heard of the failure
                orphans.append(dataclasses.replace(s, retries=s.retries + 1))
            else:
                inst.submit(Request.from_submit(s))
        finished, tokens, steps = [], [], []
        for iid, inst in self.instances.items():
            if inst.failed:
                continue
            inst.trace = steps if epoch.trace else None
            inst.cards.begin_epoch(self.t)                # the governor samples once, at the epoch's start
            try:
                inst.advance(epoch.t_end)
            except CardLost as lost:
                failures.append(self._fail(iid, lost, orphans, inst.clock))
            if epoch.tokens:
                tokens += inst.token_events()
            finished += inst.take_finished()
        self.t = epoch.t_end
        cards = tuple(self.card_frames(epoch.t_end)) if epoch.telemetry else ()
        links = tuple(self.link_bytes(cards).items()) if epoch.telemetry else ()
        return EpochOut(epoch.t_end, self.server, tuple(finished), (), tuple(orphans), tuple(tokens),
                        tuple(i.frame() for i in self.instances.values()), cards, links,
                        tuple(f for f in failures if f is not None), tuple(steps))

    def _fail(self, iid, lost: CardLost, orphans: list, t: float) -> Failure | None:
        """Mark the instance failed at ``t`` and hand back its requests; an idle card's loss fails nothing."""
        if iid is None:
            return Failure(float(t), "card", self.server, (), lost.cards, lost.reason)
        inst = self.instances[iid]
        if inst.failed:
            return None
        orphans += inst.evacuate()
        cards = tuple(c for c, i in self.card_instance.items() if i == iid)
        return Failure(float(t), "card", self.server, (iid,), lost.cards or cards, lost.reason)

    def card_frames(self, t: float) -> list[CardFrame]:
        frames = [f for group in self.groups.values() for f in group.frames(t)]
        return sorted(frames, key=lambda f: f.card)

    def link_bytes(self, cards) -> dict[str, float]:
        """Collective bytes per directed link, plus each card's External HDMA to its host."""
        out: dict[str, float] = defaultdict(float)
        for inst in self.instances.values():
            for name, nbytes in inst.sync.link_bytes().items():
                out[name] += nbytes
        for frame in cards:
            for link in self.topology.host_path(frame.card):
                out[link.name] += frame.host_link_bytes
        return dict(out)

    def unfinished(self) -> list[RequestRecord]:
        return [r for inst in self.instances.values() for r in inst.unfinished()]

    def close(self) -> None:
        for group in self.groups.values():
            group.close()
