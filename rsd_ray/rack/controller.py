"""The controller: a short driver between a source of requests and the sinks of each epoch.

Each epoch of virtual time: the source's arrivals in [t, t_end) (and requests
moved off failed instances) are routed on the telemetry of the previous epoch,
the executor runs every host to ``t_end`` and returns one ``EpochOut``, the
controller books it (finished, retried, errored, failed instances), and every
sink is told. After ``duration_s`` no new requests arrive; the rack drains
what it accepted (up to ``drain_s``). Every accepted request ends completed,
errored (no healthy instance could take it) or unfinished; a run stopped
early (``stop()``, Ctrl-C) or by a fatal error still returns what it has,
with its ``status``.
"""
from __future__ import annotations

import dataclasses
import signal
import threading
import time
from collections import defaultdict
from dataclasses import dataclass

from rsd_ray.hardware.card import CardFrame
from rsd_ray.interconnect.collectives import sharers
from rsd_ray.compiler import Plan, compile_plan
from rsd_ray.config import RunSpec
from rsd_ray.rack.epoch import Control, EpochIn, EpochOut, Failure, Recovery, Submit
from rsd_ray.rack.executor import get_executor
from rsd_ray.rack.frontend import Frontend
from rsd_ray.rack.host import ABORTED, HostSetup
from rsd_ray.engine.frames import InstanceFrame
from rsd_ray.engine.request import RequestRecord
from rsd_ray.router import Router
from rsd_ray.interconnect.topology import Topology
from rsd_ray.workload.synthetic import Workload

NO_HEALTHY_INSTANCE = "no healthy instance can take it"
EXIT_CODES = {"completed": 0, "failed": 1, "interrupted": 130}   # an Outcome's status as a command's exit code
OFFLINE_DRAIN_S = 1e6     # an offline run ends when its last request does; this only bounds a run that cannot


@dataclass(frozen=True)
class Outcome:
    """Everything a run produced, before it is turned into a results document."""
    spec: RunSpec
    plan: Plan
    records: tuple[RequestRecord, ...]       # one per accepted request
    offered: int                             # distinct requests the source sent
    refused: int                             # requests never accepted (each counted once)
    refusals: int                            # refusal events (a closed-loop client may retry several times)
    instances: tuple[InstanceFrame, ...]
    window_cards: tuple[CardFrame, ...]      # at the end of the measurement window
    window_s: float                          # its length: duration_s, or less when the run ended early
    final_cards: tuple[CardFrame, ...]
    link_bytes: dict[str, float]
    links: dict[str, tuple[str, float]]      # name -> (kind, payload bandwidth)
    failures: tuple[Failure, ...]
    end_s: float
    epochs: int
    wall_s: float
    executor: str
    status: str = "completed"                # completed | interrupted | failed
    reason: str | None = None
    recoveries: tuple[Recovery, ...] = ()
    faults: tuple = ()                        # the rsd_ray.rack.faults.Fault injected, by time
    functional: dict | None = None            # --model DIR: tokens computed and a few requests' text
    frontend: dict | None = None              # router.gateway_cores: the gateway's load and waits


def host_setups(spec: RunSpec, topology: Topology, plan: Plan) -> list[HostSetup]:
    """One host per server; a group is driven by the host of its first card, so each card has one host."""
    groups = plan.placement.groups
    shared = tuple(sorted(sharers(topology, [list(g) for g in groups]).items()))
    by_server = defaultdict(list)
    for iid, group in enumerate(groups):
        by_server[topology.server_of(group[0])].append((iid, group))
    idle = defaultdict(list)
    for c in plan.placement.idle_cards:
        idle[topology.server_of(c)].append(c)
    return [HostSetup(s, tuple(by_server[s]), tuple(idle[s]), shared) for s in range(spec.rack.servers)]


def check_plan(spec: RunSpec) -> Plan:
    """Compile and place without starting anything: raises ConfigError when the config cannot run."""
    return compile_plan(spec, Topology(spec.rack, spec.device))


class Controller:
    def __init__(self, spec: RunSpec, executor: str = "inline", source=None, **executor_options):
        """``source``: where requests come from (default: the spec's synthetic workload; ``rsd-ray serve`` passes its gateway)."""
        self.spec = spec
        self.topology = Topology(spec.rack, spec.device)
        self.plan = compile_plan(spec, self.topology)
        self.instance_server = [self.topology.server_of(g[0]) for g in self.plan.placement.groups]
        # the links as built: inline, the hosts share this topology and a degraded link changes it there
        self.links = {l.name: (l.kind, l.bandwidth) for l in self.topology.links.values()}
        setups = host_setups(spec, self.topology, self.plan)
        self.executor = get_executor(executor)(spec, self.plan, setups, topology=self.topology, **executor_options)
        self.router = Router(spec.router, len(self.instance_server), spec.seed)
        cores = spec.router.gateway_cores
        self.frontend = Frontend(cores, self.topology) if cores else None
        self.sent_at: dict[int, float] = {}              # rid → when its client sent it (front end on)
        max_len = spec.engine.max_model_len or spec.model.max_seq_len
        if source is None and spec.workload.arrival == "trace":
            from rsd_ray.workload.trace_source import TraceSource
            source = TraceSource(spec.workload.trace, max_len, spec.seed + 1, spec.engine.hash_block_tokens)
        self.source = source or Workload(spec.workload, spec.rack.servers, max_len, spec.seed + 1)
        if spec.model.checkpoint and source is None:     # a checkpoint's weights write the requests' tokens
            from rsd_ray.functional.source import FunctionalSource
            from rsd_ray.functional.writer import FunctionalWriter
            writer = FunctionalWriter(spec.model.checkpoint, spec.tp, spec.device.usable_bytes)
            self.source = FunctionalSource(self.source, writer, spec.seed + 3)
        self.duration_s, self.drain_s = spec.duration_s, spec.drain_s
        self.offline = getattr(self.source, "offline", False)
        if self.offline:                                 # all at t = 0: one epoch of arrivals, then until done
            self.duration_s, self.drain_s = spec.epoch_s, OFFLINE_DRAIN_S
        self.telemetry_every_s: float | None = None      # card frames this often, besides the window's end
        self.t, self.epochs = 0.0, 0
        self.stream_tokens = False                       # a streaming sink turns this on
        self.trace_steps = False                         # a trace sink turns this on
        self.in_flight: dict[int, Submit] = {}          # accepted, not yet ended: rid → as last placed
        self.retry: list[Submit] = []                    # moved off a failed instance, to place next epoch
        self.errored: list[tuple[int, str]] = []         # ended with an error this epoch (told to the sinks)
        self.records: list[RequestRecord] = []
        self.refused = self.refusals = 0
        self.failures: list[Failure] = []
        self.recoveries: list[Recovery] = []
        self.injected: list = []                         # faults handed to the rack so far
        self.frames: dict[int, InstanceFrame] = {}
        self.window_cards: tuple[CardFrame, ...] = ()
        self.window_s = 0.0
        self.cards: tuple[CardFrame, ...] = ()
        self.link_bytes: dict[str, float] = {}
        self.controls: list[Control] = []
        self.faults: list = []                           # rsd_ray.rack.faults.Fault, by time, not yet injected
        self._stop: str | None = None

    # --- inputs -------------------------------------------------------------------------------------
    def control(self, control: Control) -> None:
        """Enters the rack with the next epoch; an abort of a request waiting to be re-placed ends it here."""
        if control.kind == "abort":
            waiting = [s for s in self.retry if s.rid == control.target]
            if waiting:
                self.retry.remove(waiting[0])
                self._error(waiting[0], ABORTED)
                return
        self.controls.append(control)

    def inject(self, faults) -> None:
        """Faults to inject, each at the start of the epoch that contains its time."""
        self.faults = sorted(list(self.faults) + list(faults), key=lambda f: f.at_s)

    def stop(self, reason: str = "stopped") -> None:
        """End the run at the next epoch boundary, with ``status: interrupted``."""
        self._stop = reason

    def close(self, drain_s: float) -> None:
        """No arrivals after the current epoch; drain what was accepted for at most ``drain_s``, then end
        with ``status: completed`` (how a server shuts down)."""
        self.duration_s, self.drain_s = self.t, drain_s

    # --- the loop -----------------------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        t, end = self.t, self.duration_s
        if t < end - 1e-9:
            return False
        idle = not self.in_flight and not self.retry and not self.source.waiting_to_retry()
        return idle or t >= end + self.drain_s - 1e-9

    def step(self) -> EpochOut:
        """One epoch: route, advance every host, book what came back."""
        spec, t0, end = self.spec, self.t, self.duration_s
        t_end = (self.epochs + 1) * spec.epoch_s
        if t0 < end < t_end:
            t_end = end                                   # an epoch ends exactly at the window's end
        arrivals: dict[int, list[Submit]] = defaultdict(list)
        retry, self.retry, self.errored = self.retry, [], []
        for sub in retry:
            self._place(sub, arrivals, force=True)
        offered = self.source.arrivals(t0, min(t_end, end)) if t0 < end else []
        full, refused = False, []
        for sub in offered:           # a full rack stays full this epoch: the rest are refused without routing
            if (full and sub.instance < 0) or not self._place(sub, arrivals, force=self.offline):
                refused.append(sub)
                full = full or sub.instance < 0
        if refused:
            self._refuse(refused, t0)
        window = not self.window_cards and t_end >= end - 1e-9 and not self.offline   # offline: the whole run
        every = self.telemetry_every_s
        telemetry = window or bool(every and (self.epochs == 0 or t_end // every > t0 // every))
        while self.faults and self.faults[0].at_s < t_end:
            self.injected.append(self.faults.pop(0))
            self.controls.append(self.injected[-1].control())
        controls, self.controls = tuple(self.controls), []
        epoch = EpochIn(t_end, {s: tuple(v) for s, v in arrivals.items()}, controls, telemetry, self.stream_tokens,
                        self.trace_steps)
        out = self.executor.advance(epoch)
        self.t, self.epochs = t_end, self.epochs + 1
        self._book(out)
        if window:
            self.window_cards, self.window_s = out.cards, t_end
        return dataclasses.replace(out, errored=tuple(self.errored)) if self.errored else out

    def _place(self, sub: Submit, arrivals, force: bool = False) -> bool:
        """Route one request at the arrival time its source gave it. A new request that names its instance
        (a per-instance endpoint) goes there or is refused."""
        i = self.router.route(force, None if force or sub.instance < 0 else sub.instance, sub.hash_ids, sub.session)
        if i is None:
            if force:
                self._error(sub, NO_HEALTHY_INSTANCE)
            return force
        sub = dataclasses.replace(sub, instance=i)
        if self.frontend and sub.retries == 0:            # through the gateway and the network to its server
            self.sent_at[sub.rid] = sub.arrival
            sub = dataclasses.replace(sub, arrival=self.frontend.reach(sub, self.instance_server[i]))
        self.in_flight[sub.rid] = sub
        arrivals[self.instance_server[i]].append(sub)
        return True

    def _refuse(self, subs: list[Submit], t: float) -> None:
        self.refusals += len(subs)
        self.refused += self.source.refused(subs, t)

    def _error(self, sub: Submit, reason: str) -> None:
        self.in_flight.pop(sub.rid, None)
        self.errored.append((sub.rid, reason))
        self.records.append(sub.record(reason))
        self.source.done(self.records[-1:])

    def _book(self, out: EpochOut) -> None:
        for rid, times in out.tokens:                     # a lost host's requests keep what was streamed
            sub = self.in_flight[rid]
            self.in_flight[rid] = dataclasses.replace(sub, token_times=sub.token_times + times)
        for r in out.finished:
            self.in_flight.pop(r.rid, None)
        self.records += out.finished
        self.source.done(out.finished)
        self.retry += [dataclasses.replace(o, session=self.in_flight[o.rid].session) if o.rid in self.in_flight else o
                       for o in out.orphans]         # engines do not keep the session: the router needs it
        for r in out.recoveries:                          # before this epoch's failures: it may fail again
            self.recoveries.append(r)
            self.router.recover(r.instance)
        for f in out.failures:
            self.failures.append(f)
            self.router.fail(f.instances)
            if f.kind == "host":                          # its requests' state died with it: start again
                lost = set(f.instances)
                self.retry += [dataclasses.replace(s, retries=s.retries + 1) for s in self.in_flight.values()
                               if s.instance in lost]
        self.router.observe(out.instances)
        self.frames.update((f.instance, f) for f in out.instances)
        for f in out.failures:                            # a lost host sends no frames: mark its instances here
            for i in f.instances:
                if i in self.frames:
                    self.frames[i] = dataclasses.replace(self.frames[i], failed=True)
        if out.cards:
            self.cards = out.cards
            self.link_bytes = dict(out.link_bytes)

    def _on_sigint(self, signum, frame) -> None:
        """Ctrl-C ends the run at the next epoch boundary, so every request stays accounted for;
        a second Ctrl-C interrupts at once."""
        if self._stop:
            raise KeyboardInterrupt
        self.stop("interrupted (Ctrl-C)")

    def run(self, sinks=()) -> "Outcome":
        """Run to the end (or ``stop()``, Ctrl-C, a fatal error); every sink is called with each EpochOut
        and the number of requests in flight. The executor is shut down in every case."""
        wall0, status, reason = time.perf_counter(), "completed", None
        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, self._on_sigint) if main else None
        try:
            while not self.finished:
                if self._stop:
                    status, reason = "interrupted", self._stop
                    break
                out = self.step()
                for sink in sinks:
                    sink(out, len(self.in_flight))
        except KeyboardInterrupt:
            status, reason = "interrupted", "interrupted (Ctrl-C)"
        except Exception as err:                          # noqa: BLE001  (reported in the results, not lost)
            status, reason = "failed", f"{type(err).__name__}: {err}"
        finally:
            if main:
                signal.signal(signal.SIGINT, previous)
        try:
            return self._outcome(status, reason, wall0)
        finally:
            self.executor.shutdown()

    def _outcome(self, status: str, reason: str | None, wall0: float) -> Outcome:
        records = list(self.records)
        try:                                              # final telemetry (no time passes) and what is left
            self._book(self.executor.advance(EpochIn(self.t, telemetry=True)))
            records += [r for r in self.executor.unfinished() if r.rid in self.in_flight]
        except Exception as err:                          # noqa: BLE001  (the first reason stands)
            if status != "failed":
                status, reason = "failed", f"{type(err).__name__}: {err}"
        reported = {r.rid for r in records}
        for sub in list(self.in_flight.values()) + self.retry:
            if sub.rid not in reported:                   # on a host that is gone, or waiting to be re-placed
                reported.add(sub.rid)
                records.append(sub.record())
        if self.sent_at:                                  # latencies as the client sees them: from its send
            records = [dataclasses.replace(r, arrival=self.sent_at.get(r.rid, r.arrival)) for r in records]
        spec = self.spec if self.duration_s == self.spec.duration_s else dataclasses.replace(
            self.spec, duration_s=self.duration_s, drain_s=self.drain_s)      # a served rack's window, as it ran
        return Outcome(spec, self.plan, tuple(sorted(records, key=lambda r: r.rid)), self.source.next_id,
                       self.refused + self.source.waiting_to_retry(), self.refusals,
                       tuple(self.frames[i] for i in sorted(self.frames)), self.window_cards or self.cards,
                       self.window_s if self.window_cards else self.t, self.cards, self.link_bytes, self.links, tuple(self.failures), self.t, self.epochs,
                       time.perf_counter() - wall0, self.executor.name, status, reason, tuple(self.recoveries),
                       tuple(self.injected), self._functional(),
                       self.frontend.summary(self.t) if self.frontend else None)

    def _functional(self) -> dict | None:
        source = self.source
        if not hasattr(source, "samples"):
            return None
        return {"checkpoint": self.spec.model.checkpoint, "tokens_computed": source.tokens,
                "samples": source.samples}
