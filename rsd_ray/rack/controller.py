"""The controller: the epoch driver between a source of requests and the sinks of each epoch.

Each epoch of virtual time: the source's arrivals in [t, t_end) (and requests moved off failed instances)
are routed on the telemetry of the previous epoch, the executor runs every host to ``t_end`` and returns one
``EpochOut``; the request ledger books it, the router learns health and load from it, and every sink is
told. After ``duration_s`` no new requests arrive; the rack drains what it accepted (up to ``drain_s``).
Controls, ``stop`` and ``close`` may come from any thread: they wait in a queue for the next boundary.
A run stopped early (``stop()``, Ctrl-C) or by a fatal error still returns what it has, with its ``status``.
"""
from __future__ import annotations

import dataclasses
import math
import queue
import time
from collections import defaultdict
from functools import reduce

from rsd_ray import signals
from rsd_ray.compiler import compile_plan
from rsd_ray.config import RunSpec
from rsd_ray.hardware.card_group import grid_epoch
from rsd_ray.interconnect.topology import Topology
from rsd_ray.plugins import get_executor
from rsd_ray.rack.epoch import Control, EpochIn, EpochOut, Kind, Needs, Submit
from rsd_ray.rack.executor import host_setups
from rsd_ray.rack.faults import FaultSchedule
from rsd_ray.rack.frontend import Frontend
from rsd_ray.rack.gc_pace import rarer_collections
from rsd_ray.rack.handoff import DECODE, Handoffs
from rsd_ray.rack.host import ABORTED
from rsd_ray.rack.ledger import RequestLedger
from rsd_ray.rack.outcome import Outcome, RunLog
from rsd_ray.rack.sources import request_source
from rsd_ray.router import Router

NO_HEALTHY_INSTANCE = "no healthy instance can take it"
OFFLINE_DRAIN_S = 1e6     # an offline run ends when its last request does; this only bounds a run that cannot


SKIP_MAX_S = 10.0   # the most virtual seconds one call may run over quiet epochs (a progress bar still moves)

IDLE_TELEMETRY_FACTOR = 5   # an idle rack's card telemetry comes this many times less often (each is a call
                            # to every card actor on Ray; an idle served rack's cost, benchmarks/idle_serve.py)


class Controller:
    def __init__(self, spec: RunSpec, executor: str = "inline", source=None, **executor_options):
        """``source``: where requests come from (default: the spec's workload; ``rsd-ray serve`` passes its
        gateway)."""
        self.spec = spec
        self.topology = Topology(spec.rack, spec.device)
        self.plan = compile_plan(spec, self.topology)
        self.instance_server = [self.topology.server_of(g[0]) for g in self.plan.placement.groups]
        self.links = {l.name: (l.kind, l.bandwidth) for l in self.topology.links.values()}   # as built
        setups = host_setups(spec, self.topology, self.plan)
        self.executor = get_executor(executor)(spec, self.plan, setups, topology=self.topology, **executor_options)
        self.handoffs = Handoffs(spec, self.plan, self.topology) if spec.router.prefill_instances else None
        self.router = Router(spec.router, len(self.instance_server), spec.seed, pools=2 if self.handoffs else 1)
        self.decodes: list[Submit] = []           # handed off to the decode pool, for the next epoch's hosts
        self.frontend = Frontend(spec.router.gateway_cores, self.topology) if spec.router.gateway_cores else None
        self.source = source or request_source(spec, type(self.executor))
        self.ledger, self.faults, self.log = RequestLedger(self.source), FaultSchedule(), RunLog()
        self.duration_s, self.drain_s = spec.duration_s, spec.drain_s
        self.offline = getattr(self.source, "offline", False)
        if self.offline:                                 # all at t = 0: one epoch of arrivals, then until done
            self.duration_s, self.drain_s = spec.epoch_s, OFFLINE_DRAIN_S
        self.t, self.epochs = 0.0, 0
        self.quiet_until = math.nan               # several hosts: their stop cannot come before this boundary
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()   # (what, value) from any thread, for the next epoch
        self.controls: list[Control] = []
        self._stop: str | None = None

    # --- inputs, from any thread: each waits in the inbox for the next epoch boundary -----------------
    def control(self, control: Control) -> None:
        """Into the rack with the next epoch (an abort of a request waiting to be re-placed ends it here)."""
        self.inbox.put(("control", control))

    def inject(self, faults) -> None:
        """Faults, each injected at the start of the epoch that contains its time."""
        self.inbox.put(("faults", tuple(faults)))

    def stop(self, reason: str = "stopped") -> None:
        """End the run at the next boundary, ``status: interrupted``."""
        self.inbox.put(("stop", reason))

    def close(self, drain_s: float) -> None:
        """No arrivals after this epoch; drain for at most ``drain_s``, then end (a server's shutdown)."""
        self.inbox.put(("close", drain_s))

    def _read_inbox(self) -> None:
        while not self.inbox.empty():
            what, value = self.inbox.get()
            if what == "control" and not (value.kind == Kind.ABORT and self.ledger.abort_waiting(value.target,
                                                                                                  ABORTED)):
                self.controls.append(value)
            elif what == "faults":
                self.faults.add(value)
            elif what == "stop":
                self._stop = value
            elif what == "close":
                self.duration_s, self.drain_s = self.t, value

    # --- the loop -----------------------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        t, end = self.t, self.duration_s
        return t >= end - 1e-9 and (self.ledger.idle or t >= end + self.drain_s - 1e-9)

    def step(self, needs: Needs = Needs()) -> EpochOut:
        """One epoch: route, run every host to its end, book what came back. An epoch with nothing for the
        hosts to do (no request in flight or arriving, no control, no telemetry due) calls none: each host
        catches up the idle time at its next epoch (its cards' heat and energy integrate any span exactly),
        so an idle served rack costs its Ray actors nothing between telemetry samples."""
        self._read_inbox()
        self._skip_quiet(needs)
        t0, end = self.t, self.duration_s
        t_end = (self.epochs + 1) * self.spec.epoch_s
        if t0 < end < t_end:
            t_end = end                                   # an epoch ends exactly at the window's end
        arrivals: dict[int, list[Submit]] = defaultdict(list)
        for sub in self.ledger.new_epoch():
            self._place(sub, arrivals, force=True)
        for sub in self.decodes:
            arrivals[self.instance_server[sub.instance]].append(sub)
        self.decodes = []
        refused = self._place_new(self.source.arrivals(t0, min(t_end, end)) if t0 < end else [], arrivals)
        if refused:
            self.ledger.refuse(refused, t0)
        window = not self.log.window_cards and t_end >= end - 1e-9 and not self.offline   # offline: the whole run
        every = self._telemetry_every(needs, idle=self.ledger.idle and not arrivals)
        controls, self.controls = tuple(self.controls + self.faults.due(t_end)), []
        for c in controls:               # KV moves and the gateway's network see a degraded link as the hosts
            if c.kind == Kind.LINK:      # do (on Ray the hosts' topologies are not this one; inline it is)
                self.topology.degrade(c.name, c.value)
        faulted = any(c.kind != Kind.ABORT for c in controls)     # a lost card reads lost at once
        telemetry = window or faulted or bool(every and (self.epochs == 0 or t_end // every > t0 // every))
        if not (arrivals or controls or telemetry) and self.ledger.idle:
            out = EpochOut(t_end=t_end, instances=self.log.last_frames)    # an idle rack: no host has work
        else:
            horizon, stop = (t_end, "") if telemetry or window else self._horizon(needs, t_end, bool(arrivals))
            out = self.executor.run_epoch(EpochIn(
                t_end=t_end, arrivals={s: tuple(v) for s, v in arrivals.items()}, controls=controls,
                telemetry=telemetry, tokens=needs.tokens, trace=needs.steps, horizon=horizon, stop=stop,
                quiet="" if self._one_host else self._stop_kind(t_end)))
        self.t, self.quiet_until = out.t_end, out.quiet_until
        self.epochs = self.epochs + 1 if out.t_end <= t_end else grid_epoch(out.t_end, self.spec.epoch_s)
        out = self._book(out, window)
        return dataclasses.replace(out, errored=self.ledger.take_errored(), healthy=tuple(self.router.healthy.tolist()))

    @property
    def _one_host(self) -> bool:
        return getattr(self.executor, "one_host", False)

    def _horizon(self, needs: Needs, t_end: float, routed: bool) -> tuple[float, str]:
        """How far the hosts may run in this call beyond ``t_end``: over the epochs in which nothing would be
        routed, controlled, sampled or shown, to the boundary before the next arrival, fault, telemetry
        sample or the measurement window's end (``SKIP_MAX_S`` at most), and what ends it early: the
        epoch in which a request finishes when that brings a new one (``"answer"``: a closed loop), or,
        draining, the one after which the rack is empty (``"empty"``). Every figure is the one of running
        each epoch (``tests/test_engine_oracle.py``). Several hosts (on Ray) could not agree where to stop
        without a round trip, so they run with no early stop as far as that stop could not have come, as
        they said at the end of the last call (``EpochOut.quiet_until``: the first host to see a finish,
        the last to empty; not when this call brings arrivals, which change their batches).
        Not while a failed instance may come back (``--recover``), which its host alone knows when."""
        next_arrival = getattr(self.source, "next_arrival", None)
        if (next_arrival is None or needs.every_epoch or self.ledger.retry or self.controls
                or not self.inbox.empty() or (self.spec.recover and not self.router.healthy.all())):
            return t_end, ""
        epoch, end = self.spec.epoch_s, self.duration_s
        stop = self._stop_kind(t_end)
        draining = t_end >= end - 1e-9
        limit = min(t_end + SKIP_MAX_S, end + self.drain_s if draining else min(next_arrival(t_end), end - 1e-9))
        if self.faults.pending:
            limit = min(limit, self.faults.pending[0].at_s)
        every = self._telemetry_every(needs, idle=False)
        if every:
            limit = min(limit, (t_end // every + 1) * every - 1e-9)
        horizon = grid_epoch(limit, epoch) * epoch if limit < math.inf else t_end
        if not self._one_host:
            if not stop or routed or not self.quiet_until > t_end:     # NaN: a host could not say
                return t_end, ""
            horizon, stop = min(horizon, self.quiet_until), ""
        return (horizon, stop) if horizon > t_end else (t_end, "")

    def _stop_kind(self, t_end: float) -> str:
        """What ends a run over quiet epochs early: in a closed loop or a disaggregated rack (a prefill
        that ends brings a decode), a finish; draining, an empty rack."""
        if self.handoffs or (getattr(self.source, "follows_answers", False) and t_end < self.duration_s - 1e-9):
            return "answer"
        return "empty" if t_end >= self.duration_s - 1e-9 else ""

    @staticmethod
    def _telemetry_every(needs: Needs, idle: bool) -> float | None:
        """Virtual seconds between card telemetry samples: what the sinks ask, less often while the rack is
        idle (its cards only cool)."""
        every = needs.telemetry_every_s
        return every * IDLE_TELEMETRY_FACTOR if every and idle else every

    def _skip_quiet(self, needs: Needs) -> None:
        """An idle rack whose source can wait for its next request (a served rack's gateway: ``quiet_until``)
        jumps over the epochs in which nothing happens: no request in flight, no control or fault due, no
        telemetry due. Nothing would have run in them (``step``), so no figure changes; a served rack idles
        at a few steps a second instead of a hundred."""
        quiet = getattr(self.source, "quiet_until", None)
        if quiet is None or not self.ledger.idle or self.controls or self.epochs == 0 or self.t >= self.duration_s:
            return
        epoch, limit = self.spec.epoch_s, self.duration_s
        every = self._telemetry_every(needs, idle=True)
        if every:                                         # the epoch that crosses a telemetry boundary runs
            limit = min(limit, (self.t // every + 1) * every - epoch)
        if self.faults.pending:
            limit = min(limit, self.faults.pending[0].at_s)
        reached = quiet(self.t, limit)
        epochs = int(reached / epoch + 1e-9)
        if epochs > self.epochs + 1:                      # leave the epoch that holds ``reached`` to run
            self.epochs = epochs
            self.t = epochs * epoch

    def _place_new(self, subs: list[Submit], arrivals) -> list[Submit]:
        """Route the epoch's new requests in order (offline ones must go somewhere); returns those refused.
        Plain ones (none pinned, one pool, a policy that reads only loads) are routed together
        (``Router.route_many``), as one at a time would route them."""
        if self.router.in_turn and not self.handoffs and all(sub.instance < 0 for sub in subs):
            picks = self.router.route_many(len(subs), force=self.offline)
            for sub, i in zip(subs, picks):
                self._placed(sub, i, arrivals)
            refused = subs[len(picks):]
            if not self.offline:
                return refused
            for sub in refused:                           # offline: no healthy instance to take them
                self.ledger.error(sub, NO_HEALTHY_INSTANCE)
            return []
        full, refused = False, []
        for sub in subs:
            if (full and sub.instance < 0) or not self._place(sub, arrivals, force=self.offline):
                refused.append(sub)                       # a full rack stays full this epoch: no more routing
                full = full or sub.instance < 0
        return refused

    def _place(self, sub: Submit, arrivals, force: bool = False) -> bool:
        """Route one request at the arrival time its source gave it; a new request that names its instance
        (a per-instance endpoint) goes there or is refused. ``force``: it must go somewhere, or it errors."""
        pool = self.handoffs.pool(sub) if self.handoffs else 0
        i = self.router.route(force, None if force or sub.instance < 0 else sub.instance, sub.hash_ids, sub.session,
                              pool)
        if i is None:
            if force:
                self.ledger.error(sub, NO_HEALTHY_INSTANCE)
            return force
        self._placed(sub, i, arrivals)
        return True

    def _placed(self, sub: Submit, i: int, arrivals) -> None:
        """A request routed to instance ``i``: through the gateway and the network to its server, if any."""
        sub = sub.replaced(instance=i)
        if self.frontend and sub.retries == 0:
            self.ledger.sent_at[sub.rid] = sub.arrival
            sub = sub.replaced(arrival=self.frontend.reach(sub, self.instance_server[i]))
        self.ledger.placed(sub)
        arrivals[self.instance_server[i]].append(self.handoffs.for_instance(sub) if self.handoffs else sub)

    def _split(self, out: EpochOut) -> tuple[EpochOut, list]:
        """A disaggregated rack's epoch as the request ledger and the sinks see it: without the prefills
        that ended (to hand off) and their sampled token (the proxy drops it), each record its request's."""
        prefilled, finished = self.handoffs.prefilled(out.finished)
        prefilling = self.handoffs.prefilling
        tokens = tuple(t for t in out.tokens if t[0] not in prefilling)
        return dataclasses.replace(out, finished=tuple(finished), tokens=tokens), prefilled

    def _hand_off(self, prefilled: list) -> None:
        """Route each prefilled request in the decode pool (this epoch's telemetry) and move its KV there, in
        the order their prefills ended (the links serve them first come, first served)."""
        for record in sorted(prefilled, key=lambda r: (r.finish, r.rid)):
            sub = self.ledger.in_flight[record.rid]
            i = self.router.route(True, session=sub.session, hash_ids=sub.hash_ids, pool=DECODE)
            if i is None:
                self.handoffs.prefilling.pop(record.rid)
                self.ledger.error(sub, NO_HEALTHY_INSTANCE)
                continue
            decode = self.handoffs.hand_off(record, i)
            self.ledger.placed(decode)
            self.ledger.sent_at.setdefault(record.rid, sub.arrival)
            self.decodes.append(decode)

    def _book(self, out: EpochOut, window: bool = False) -> EpochOut:
        """Book the rack's epoch; returns it as the sinks see it."""
        prefilled = []
        if self.handoffs:
            out, prefilled = self._split(out)
            if out.cards:
                links = dict(out.link_bytes)
                for name, nbytes in self.handoffs.link_bytes().items():
                    links[name] = links.get(name, 0.0) + nbytes
                out = dataclasses.replace(out, link_bytes=tuple(sorted(links.items())))
        self.ledger.book(out)
        self.log.book(out, window)
        for r in out.recoveries:                          # before this epoch's failures: it may fail again
            self.router.recover(r.instance)
        for f in out.failures:
            self.router.fail(f.instances)
        self.router.observe(out.instances)
        self._hand_off(prefilled)
        return out

    def run(self, sinks=()) -> Outcome:
        """Run to the end (or ``stop()``, Ctrl-C, a fatal error); every sink (``rack.epoch.Sink``) is called
        with each EpochOut and the number of requests in flight. A sink that does not say what it ``needs`` is
        called at every epoch boundary (it may act on the rack at given times). The executor is shut down in
        every case."""
        wall0, status, reason = time.perf_counter(), "completed", None
        needs = reduce(lambda a, b: a | b, (getattr(s, "needs", Needs(every_epoch=True)) for s in sinks), Needs())
        try:
            with signals.graceful(self.stop), rarer_collections():   # a stop signal ends the run at the next epoch
                while True:
                    self._read_inbox()
                    if self.finished:
                        break
                    if self._stop:
                        status, reason = "interrupted", self._stop
                        break
                    out = self.step(needs)
                    for sink in sinks:
                        sink(out, len(self.ledger.in_flight))
        except KeyboardInterrupt as err:                  # a second signal (Interrupted), or Ctrl-C unhandled
            status, reason = "interrupted", str(err) or "interrupted (SIGINT, Ctrl-C)"
        except Exception as err:                          # noqa: BLE001  (reported in the results, not lost)
            status, reason = "failed", f"{type(err).__name__}: {err}"
        try:
            return self._outcome(status, reason, wall0)
        finally:
            self.executor.shutdown()

    def _outcome(self, status: str, reason: str | None, wall0: float) -> Outcome:
        unfinished = []
        try:                                              # final telemetry (no time passes) and what is left
            self._book(self.executor.run_epoch(EpochIn(t_end=self.t, telemetry=True)))
            unfinished = self.executor.unfinished()
        except Exception as err:                          # noqa: BLE001  (the first reason stands)
            if status != "failed":
                status, reason = "failed", f"{type(err).__name__}: {err}"
        if self.handoffs:
            unfinished = [self.handoffs.restore(r) for r in unfinished]
        records = self.ledger.final(unfinished)
        if self.handoffs:
            records = tuple(self.handoffs.restore(r) for r in records)
        return self.log.outcome(self, records, status, reason, time.perf_counter() - wall0)
