"""Compile → place → start hosts → run epochs → gather. Executor-agnostic.

Each epoch of virtual time: the workload's arrivals in [t, t+epoch) are routed
on the telemetry of the previous epoch, every host runs its instances to the
epoch's end, and the finished requests and fresh telemetry come back. After
``duration_s`` no new requests arrive; the rack drains what it accepted (up to
``drain_s``), and anything still unfinished is reported as such.
"""
from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass

from rsd_ray.card import CardFrame
from rsd_ray.collectives import sharers
from rsd_ray.compiler import Plan, compile_plan
from rsd_ray.config import RunSpec
from rsd_ray.executor import get_executor
from rsd_ray.host import HostSetup
from rsd_ray.instance import InstanceFrame
from rsd_ray.request import RequestRecord
from rsd_ray.router import Router
from rsd_ray.topology import Topology
from rsd_ray.workload import Workload


@dataclass(frozen=True)
class Outcome:
    """Everything a run produced, before it is turned into a results document."""
    spec: RunSpec
    plan: Plan
    records: tuple[RequestRecord, ...]
    refused: int
    instances: tuple[InstanceFrame, ...]
    window_cards: tuple[CardFrame, ...]     # at the end of the measurement window
    final_cards: tuple[CardFrame, ...]
    link_bytes: dict[str, float]
    links: dict[str, tuple[str, float]]      # name -> (kind, payload bandwidth)
    end_s: float
    epochs: int
    wall_s: float
    executor: str


def host_setups(spec: RunSpec, topology: Topology, plan: Plan, spans: bool = True) -> list[HostSetup]:
    shared = tuple(sorted(sharers(topology, [list(g) for g in plan.placement.groups]).items()))
    by_server = defaultdict(list)
    for iid, group in enumerate(plan.placement.groups):
        by_server[topology.server_of(group[0])].append((iid, group))
    per = spec.rack.cards_per_server
    return [HostSetup(s, tuple(range(s * per, (s + 1) * per)), tuple(by_server[s]), shared, spans)
            for s in range(spec.rack.servers)]


def check_plan(spec: RunSpec) -> Plan:
    """Compile and place without starting anything: raises ConfigError when the config cannot run."""
    return compile_plan(spec, Topology(spec.rack, spec.device))


class Controller:
    def __init__(self, spec: RunSpec, executor: str = "inline", spans: bool = True, **executor_options):
        self.spec = spec
        self.topology = Topology(spec.rack, spec.device)
        self.plan = compile_plan(spec, self.topology)
        self.instance_server = [self.topology.server_of(g[0]) for g in self.plan.placement.groups]
        setups = host_setups(spec, self.topology, self.plan, spans)
        self.executor = get_executor(executor)(spec, self.plan, setups, **executor_options)
        self.router = Router(spec.router, len(self.instance_server), spec.seed)
        max_len = spec.engine.max_model_len or spec.model.max_seq_len
        self.workload = Workload(spec.workload, spec.rack.servers, max_len, spec.seed + 1)

    def run(self, on_epoch=None) -> Outcome:
        """Run the whole scenario; ``on_epoch(t, in_flight)`` is told after every epoch."""
        spec, wall0 = self.spec, time.perf_counter()
        records: list[RequestRecord] = []
        frames: dict[int, InstanceFrame] = {}
        window_cards: list[CardFrame] = []
        in_flight = epoch = 0
        t = 0.0
        while True:
            epoch += 1
            t_end = epoch * spec.epoch_s
            arrivals: dict[int, list] = defaultdict(list)
            for req in self.workload.arrivals(t, min(t_end, spec.duration_s)) if t < spec.duration_s else []:
                i = self.router.route()
                if i is None:
                    self.workload.done(1)
                    continue
                req.instance = i
                arrivals[self.instance_server[i]].append(req)
                in_flight += 1
            finished = 0
            for report in self.executor.advance(t_end, arrivals):
                records += report.finished
                finished += len(report.finished)
                self.router.observe(report.instances)
                frames.update((f.instance, f) for f in report.instances)
            in_flight -= finished
            self.workload.done(finished)
            t = t_end
            if not window_cards and t >= spec.duration_s - 1e-9:
                window_cards = self.executor.card_frames(spec.duration_s)
            if on_epoch:
                on_epoch(t, in_flight)
            if t >= spec.duration_s - 1e-9 and (in_flight == 0 or t >= spec.duration_s + spec.drain_s):
                break
        records += self.executor.unfinished()
        links = {l.name: (l.kind, l.bandwidth) for l in self.topology.links.values()}
        outcome = Outcome(spec, self.plan, tuple(sorted(records, key=lambda r: r.rid)), self.router.refused,
                          tuple(frames[i] for i in sorted(frames)), tuple(window_cards),
                          tuple(self.executor.card_frames(t)), self.executor.link_bytes(), links, t, epoch,
                          time.perf_counter() - wall0, self.executor.name)
        self.executor.shutdown()
        return outcome
