"""The host CPUs of one or more servers: the engines of their instances, driving their cards.

A TP group that spans servers is driven by the host of its first card's server
(the others lend it their cards), so every card belongs to exactly one host:
the cards of its instances, plus its own server's cards that no group uses.
On Ray each server's host is an actor; inline one ``Host`` drives every server,
so the engine steps all of the rack's instances together.
"""
from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from dataclasses import dataclass

from rsd_ray.calibration import CARD_RESTART_S
from rsd_ray.hardware.card import CardFrame
from rsd_ray.hardware.card_group import CardLost, LocalCardGroup, grid_epoch
from rsd_ray.compiler import Plan, PoolPlan
from rsd_ray.config import RunSpec
from rsd_ray.rack.epoch import EpochIn, EpochOut, Failure, Kind, Recovery
from rsd_ray.engine.request import RequestRecord
from rsd_ray.engine.pricing import GroupSync
from rsd_ray.interconnect.topology import Topology
from rsd_ray.engine.core import EngineCore
from rsd_ray.engine.pools import PoolCores
from rsd_ray.engine.prefix_cache import host_blocks
from rsd_ray.interconnect.transfers import Transfers

ABORTED = "aborted: the client went away"


@dataclass(frozen=True)
class HostSetup:
    """What one server's host builds: the TP groups it drives and the idle cards it holds."""
    server: int
    instances: tuple[tuple[int, tuple[int, ...]], ...]   # (instance id, card ids)
    idle_cards: tuple[int, ...]
    shared_links: tuple[tuple[str, int], ...]           # groups per link, rack-wide

    @property
    def cards(self) -> tuple[int, ...]:
        return tuple(sorted({c for _, group in self.instances for c in group} | set(self.idle_cards)))


class Host:
    """``groups`` maps each instance id (and None, for idle cards) to its card group; ``setups``
    are the servers this host drives (one on Ray, every server inline)."""

    def __init__(self, spec: RunSpec, plan: Plan, setups: list[HostSetup], groups: dict,
                 topology: Topology | None = None):
        self.servers = [s.server for s in setups]
        self.groups = groups
        self.topology = topology or Topology(spec.rack, spec.device)
        self.epoch_end, self.epoch_s = 0.0, spec.epoch_s
        self.recover, self.plan = spec.recover, plan
        self.restarts: dict[int, tuple[float, float, float, tuple[int, ...]]] = {}  # iid → failed, back, load s, cards
        shared = dict(setups[0].shared_links)
        self.cards = {c: s.server for s in setups for c in s.cards}          # card → the server it reports under
        self.card_instance = {c: iid for s in setups for iid, cards in s.instances for c in cards}
        self.instance_server = {iid: s.server for s in setups for iid, _ in s.instances}
        instances = [(iid, cards) for s in setups for iid, cards in s.instances]
        self.members = [(iid, groups[iid], GroupSync(plan.pool_of(iid).programs[0], list(cards), self.topology,
                                                     spec.compiler.collective, shared))
                        for iid, cards in instances]                        # kept: a test's oracle takes them
        self.num_blocks = plan.pools[-1].num_blocks
        self.offload = Transfers(self.topology) if any(e.kv_offloading_size for e in spec.engines) else None
        pools = [p for p in plan.pools if any(plan.pool_of(iid) is p for iid, _ in instances)]
        cores = [self._core(pool, [m for m in self.members if plan.pool_of(m[0]) is pool]) for pool in pools] or \
            [self._core(plan.pools[-1], [])]                                 # a host of idle cards only
        self.core = cores[0] if len(cores) == 1 else PoolCores(cores)

    def _core(self, pool: PoolPlan, members: list) -> EngineCore:
        """The engine of this host's instances of one pool."""
        engine, kv_bytes = pool.engine, pool.memory.kv_bytes_per_token
        return EngineCore(engine, members, pool.num_blocks,
                          host_blocks(engine, kv_bytes, pool.tp),
                          self._loader(members, kv_bytes) if engine.kv_offloading_size else None)

    def _loader(self, members: list, kv_bytes_per_token: float):
        """When ``tokens`` tokens' KV cache, asked at ``t`` of host memory, has reached every card of the
        ``k``-th of ``members`` (each card its share, over its own host path; shared links in turn)."""
        def load(k: int, tokens: int, t: float) -> float:
            return max(self.offload.load(c, tokens * kv_bytes_per_token, t) for c in members[k][1].card_ids)
        return load

    @property
    def server(self) -> int:
        """The server of a one-server host (as on Ray); -1 for a host of several."""
        return self.servers[0] if len(self.servers) == 1 else -1

    @classmethod
    def local(cls, spec: RunSpec, plan: Plan, setups: list[HostSetup], topology: Topology | None = None) -> "Host":
        """A host whose cards are plain objects in this process (sharing the rack's topology and cost models)."""
        groups, costs = {}, {}
        for s in setups:
            for iid, cards in s.instances:
                groups[iid] = LocalCardGroup(cards, spec.device, spec.epoch_s)
                groups[iid].load(plan.pool_of(iid).programs, plan.pool_of(iid).memory, costs)
        idle = tuple(c for s in setups for c in s.idle_cards)
        groups[None] = LocalCardGroup(idle, spec.device, spec.epoch_s)
        return cls(spec, plan, setups, groups, topology)

    def run_epoch(self, epoch: EpochIn) -> EpochOut:
        """Apply controls, take the routed arrivals, run every healthy instance to ``t_end``."""
        failures, orphans = [], []
        for control in epoch.controls:
            if control.kind == Kind.CARD and control.target in self.cards:
                failures.append(self._kill(control.target, f"card {control.target} was killed", Kind.CARD, orphans))
            elif control.kind == Kind.SERVER:
                for card in self._on_server(control.target):
                    failures.append(self._kill(card, f"server {control.target} was lost", Kind.SERVER, orphans))
            elif control.kind == Kind.LINK and self.topology.degrade(control.name, control.value):
                for sync in self.core.syncs:
                    sync.price(self.topology)
                self.core.reprice()
            elif control.kind == Kind.AMBIENT:
                for card in self._on_server(control.target):
                    self.groups[self.card_instance.get(card)].set_ambient(card, control.value)
        recoveries = self._restart(epoch.t_end, failures)
        arrivals = [s for server in self.servers for s in epoch.arrivals.get(server, ())]
        for s in self.core.submit(arrivals):         # routed before the router heard of the failure
            orphans.append(dataclasses.replace(s, retries=s.retries + 1))
        aborted = [self.core.abort(c.target, ABORTED) for c in epoch.controls if c.kind == Kind.ABORT]
        steps = [] if epoch.trace else None
        reached, losses = self.core.run_until(epoch.t_end, steps, self._boundaries(epoch), epoch.stop)
        for iid, lost, t in losses:
            failures.append(self._fail(lost.cards[0] if lost.cards else None, iid, lost, orphans, t))
        tokens = self.core.token_events() if epoch.tokens else []
        finished = [r for r in aborted if r is not None] + self.core.take_finished()
        self.epoch_end = reached
        cards = tuple(self.card_frames(reached)) if epoch.telemetry else ()
        links = tuple(self.link_bytes(cards).items()) if epoch.telemetry else ()
        return EpochOut(t_end=reached, server=self.server, finished=tuple(finished), orphans=tuple(orphans),
                        tokens=tuple(tokens), instances=tuple(self.core.frames()), cards=cards, link_bytes=links,
                        failures=tuple(f for f in failures if f is not None), steps=tuple(steps or ()),
                        recoveries=tuple(recoveries),
                        quiet_until=self.core.quiet_until(epoch.quiet) if epoch.quiet else math.nan)

    def _boundaries(self, epoch: EpochIn):
        """The epoch boundaries after ``t_end`` up to the horizon, on the controller's grid (k · epoch_s)."""
        if epoch.horizon is None or epoch.horizon <= epoch.t_end:
            return ()
        first, last = grid_epoch(epoch.t_end, self.epoch_s) + 1, grid_epoch(epoch.horizon, self.epoch_s)
        return (k * self.epoch_s for k in range(first, last + 1))

    def _on_server(self, server: int) -> list[int]:
        """The cards this host holds that sit in ``server``."""
        return [c for c in sorted(self.cards) if self.topology.server_of(c) == server]

    def _kill(self, card: int, reason: str, kind: Kind, orphans: list) -> Failure | None:
        iid = self.card_instance.get(card)
        if card in self.groups[iid].lost:
            return None
        self.groups[iid].kill(card, self.epoch_end)
        return self._fail(card, iid, CardLost([card], reason), orphans, self.epoch_end, kind)

    def _fail(self, card, iid, lost: CardLost, orphans: list, t: float, kind: Kind = Kind.CARD) -> Failure | None:
        """Mark the instance failed at ``t`` and hand back its requests; an idle card's loss fails nothing."""
        if iid is None:
            return Failure(t=float(t), kind=kind, server=self.cards[card], instances=(), cards=lost.cards,
                           reason=lost.reason)
        if self.core.is_failed(iid):
            return None
        orphans += self.core.evacuate(iid)
        cards = tuple(c for c, i in self.card_instance.items() if i == iid)
        if self.recover and kind != Kind.SERVER:
            self._plan_restart(iid, float(t), lost.cards or cards)
        return Failure(t=float(t), kind=kind, server=self.instance_server[iid], instances=(iid,),
                       cards=lost.cards or cards, reason=lost.reason)

    def _plan_restart(self, iid: int, t: float, cards: tuple[int, ...]) -> None:
        """``--recover``: the lost cards answer again ``CARD_RESTART_S`` after their loss, then reload their
        shards over their host paths (at those links' bandwidth now, degraded or not); the instance rejoins."""
        weights = self.plan.pool_of(iid).memory.weights
        load = max(weights / min(link.bandwidth for link in self.topology.load_path(c)) for c in cards)
        self.restarts[iid] = (t, t + CARD_RESTART_S + load, load, cards)

    def _restart(self, t_end: float, failures: list) -> list[Recovery]:
        """The instances whose cards are back before ``t_end`` rejoin, empty, at the time they are back;
        a card that does not come back is a failure of its own (no second restart)."""
        back = []
        for iid, (t_failed, t, load, cards) in sorted(self.restarts.items()):
            if t >= t_end:
                continue
            del self.restarts[iid]
            try:
                self.groups[iid].restart(cards, t)
            except CardLost as lost:
                failures.append(Failure(t=t, kind=Kind.CARD, server=self.instance_server[iid], instances=(iid,),
                                        cards=lost.cards, reason=lost.reason))
                continue
            self.core.rejoin(iid, t)
            back.append(Recovery(t_failed=t_failed, t=t, server=self.instance_server[iid], instance=iid, cards=cards,
                                 load_s=load))
        return back

    def card_frames(self, t: float) -> list[CardFrame]:
        frames = [f for group in self.groups.values() for f in group.frames(t)]
        return sorted(frames, key=lambda f: f.card)

    def link_bytes(self, cards) -> dict[str, float]:
        """Collective bytes per directed link, plus each card's External HDMA to its host."""
        out: dict[str, float] = defaultdict(float)
        for sync in self.core.syncs:
            for name, nbytes in sync.link_bytes().items():
                out[name] += nbytes
        for name, nbytes in (self.offload.bytes.items() if self.offload else ()):
            out[name] += nbytes
        for frame in cards:
            for link in self.topology.host_path(frame.card):
                out[link.name] += frame.host_link_bytes
        return dict(out)

    def unfinished(self) -> list[RequestRecord]:
        return self.core.unfinished()

    def close(self) -> None:
        for group in self.groups.values():
            group.close()
