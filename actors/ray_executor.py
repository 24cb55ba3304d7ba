"""The Ray executor: every card an actor, one host actor per server.

Placement: one placement group per emulated server — the host bundle plus one
``atom_card`` bundle per card, STRICT_PACK — so a server's PCIe traffic never
crosses Ray nodes. A rack that the cluster's ``atom_card`` resources cannot
hold is refused before anything is created.

Every host runs its epoch in parallel (one future each). A host that dies or
stops answering (its actor killed, its node lost) becomes a ``Failure`` in the
epoch's output; the rest of the rack goes on without it.
"""
from __future__ import annotations

import dataclasses
import time

import ray
from ray.util.placement_group import placement_group, placement_group_table, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from rsd_ray.actors.card_actor import CardActor
from rsd_ray.actors.host_actor import HostActor
from rsd_ray.config import ConfigError
from rsd_ray.rack.epoch import EpochIn, EpochOut, Failure, Kind, merge
from rsd_ray.rack.executor import RackLost

HOST_CPU = 0.01
"""CPU share reserved for a host actor's bundle. It only keeps the bundle non-empty:
hosts and cards take CPU as they run (num_cpus=0), which lets a 224-card rack run on a laptop."""
"""Above this many card actors per CPU of the cluster, plain calls replace compiled graphs.
Measured here: an idle card actor inside a compiled graph spends ~12 % of a core polling its
channel (0.7 % outside one), so 224 of them on 2 cores would starve the emulation itself."""
READY_TIMEOUT_S = 600.0   # placement and actor start-up
CALL_TIMEOUT_S = 300.0    # one epoch of one host; beyond it that host is declared lost
SHUTDOWN_WAIT_S = 10.0


def host_input(epoch: EpochIn, server: int) -> EpochIn:
    """One host's share of an epoch: its arrivals, and every control (a host acts on its own cards)."""
    return dataclasses.replace(epoch, arrivals={server: epoch.arrivals.get(server, ())})


def _get(refs, what: str, timeout: float = CALL_TIMEOUT_S):
    try:
        return ray.get(refs, timeout=timeout)
    except ray.exceptions.GetTimeoutError as err:
        raise RackLost(f"{what}: no answer within {timeout:.0f} s; a node may be lost") from err
    except ray.exceptions.RayError as err:
        raise RackLost(f"{what} failed: {ray_reason(err)}") from err


def ray_reason(err: BaseException) -> str:
    """Ray's own words: the error's first line, and for a dead actor the node it was on and why it died."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()] or ["?"]
    detail = [line.split(" Some common causes")[0] for line in lines[1:]      # what happened, not Ray's guesses
              if line.startswith("ip:") or "exit" in line.lower()]
    return f"{type(err).__name__}: {lines[0]}" + (f" ({'; '.join(detail)})" if detail else "")


def check_capacity(rack) -> None:
    """Refuse up front a rack the cluster cannot hold, instead of leaving it pending."""
    need = rack.servers * rack.cards_per_server
    have = ray.cluster_resources().get("atom_card", 0)
    if have < need:
        raise ConfigError(rack.name, "servers", rack.servers,
                          f"the rack needs {need} atom_card resources ({rack.servers} servers × "
                          f"{rack.cards_per_server} cards); the Ray cluster has {have:g}. Start nodes with "
                          f"--resources='{{\"atom_card\": {rack.cards_per_server}}}' or use a smaller rack")


class RayExecutor:
    name = "ray"

    def __init__(self, spec, plan, setups, topology=None, fast: bool | None = None, report=None):
        """``fast``: a compiled graph per instance for its governor's samples (True), or plain calls (False, or
        None: a card that cannot throttle is not sampled, so a graph's members would poll their channels, ~12 %
        of a core each, for the few calls it would carry).
        ``topology`` is not shared: each host actor builds its own, in its own process. ``report(phase, done,
        total)`` hears how start-up goes (placing servers, starting card actors n / N, starting hosts)."""
        self.setups = setups
        self.report = report or (lambda phase, done=0, total=0: None)
        self.pgs, self.hosts, self.cards = [], [], {}
        self.dead: set[int] = set()          # servers whose host was lost
        check_capacity(spec.rack)
        self.fast = bool(fast) and not spec.recover      # a compiled graph does not outlive one of its actors
        try:
            self._start(spec, plan, self.fast)
        except BaseException:
            self.shutdown()
            raise

    def _start(self, spec, plan, fast: bool) -> None:
        per = spec.rack.cards_per_server
        for _ in self.setups:
            bundles = [{"CPU": HOST_CPU}] + [{"atom_card": 1}] * per
            self.pgs.append(placement_group(bundles, strategy="STRICT_PACK"))
        self.report("placing servers", 0, len(self.pgs))
        _get([pg.ready() for pg in self.pgs], "placing the servers", READY_TIMEOUT_S)
        blobs = {id(pool): [p.to_msgpack() for p in pool.programs] for pool in plan.pools}
        loads = []
        for server, pg in enumerate(self.pgs):          # a card lives in its own server's group
            for local in range(per):
                c = server * per + local
                bundle = PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=1 + local)
                self.cards[c] = CardActor.options(                  # --recover: Ray restarts a killed card
                    resources={"atom_card": 1}, max_restarts=-1 if spec.recover else 0,
                    scheduling_strategy=bundle).remote(c, spec.device, spec.epoch_s)
        for iid, group in enumerate(plan.placement.groups):
            pool = plan.pool_of(iid)
            loads += [(c, self.cards[c].load.remote(blobs[id(pool)][rank], pool.memory))
                      for rank, c in enumerate(group)]
        for n, (c, ref) in enumerate(loads):              # a card that dies while starting is named
            self.report("starting card actors", n, len(loads))
            _get(ref, f"starting card {c} (server {c // per}) and loading its program", READY_TIMEOUT_S)
        for s, pg in zip(self.setups, self.pgs):
            handles = {c: self.cards[c] for c in s.cards}
            self.hosts.append(HostActor.options(num_cpus=HOST_CPU, scheduling_strategy=PlacementGroupSchedulingStrategy(
                pg, placement_group_bundle_index=0)).remote(spec, plan, s, handles, fast))
        hosts = [(s, h.ready.remote()) for s, h in zip(self.setups, self.hosts)]
        for n, (s, ref) in enumerate(hosts):
            self.report("compiling graphs" if fast else "starting hosts", n, len(hosts))
            _get(ref, f"starting the host of server {s.server}", READY_TIMEOUT_S)

    @property
    def one_host(self) -> bool:
        """One host actor drives the rack (a one-server rack, or one server left): the controller may run it
        over quiet epochs in one call, as inline (``Controller._horizon``) — there is no other host to agree
        with on where to stop."""
        return len(self._alive()) == 1

    def _alive(self):
        return [(h, s) for h, s in zip(self.hosts, self.setups) if s.server not in self.dead]

    def run_epoch(self, epoch) -> EpochOut:
        """Every live host's epoch in parallel; a host that fails is a ``Failure`` value, not an exception."""
        futures = [(s, h.run_epoch.remote(host_input(epoch, s.server))) for h, s in self._alive()]
        deadline = time.monotonic() + CALL_TIMEOUT_S
        parts = []
        for s, ref in futures:
            try:
                parts.append(ray.get(ref, timeout=max(0.0, deadline - time.monotonic())))
            except (ray.exceptions.RayError, TimeoutError) as err:
                parts.append(self._host_lost(s, epoch.t_end, ray_reason(err)))
        return merge(epoch.t_end, parts, epoch.quiet)

    def _host_lost(self, setup, t: float, reason: str) -> EpochOut:
        self.dead.add(setup.server)
        ray.kill(self.hosts[self.setups.index(setup)])
        failure = Failure(t=t, kind=Kind.HOST, server=setup.server, instances=tuple(i for i, _ in setup.instances),
                          cards=setup.cards, reason=f"host of server {setup.server} lost: {reason}")
        return EpochOut(t_end=t, server=setup.server, failures=(failure,))

    def unfinished(self):
        refs = [h.unfinished.remote() for h, _ in self._alive()]
        out = []
        for ref in refs:
            try:
                out += ray.get(ref, timeout=CALL_TIMEOUT_S)
            except (ray.exceptions.RayError, TimeoutError):
                pass                         # the controller reports that host's requests from its own ledger
        return out

    @staticmethod
    def session(address, cards: int):
        from rsd_ray.actors.session import ray_session
        return ray_session(address, cards)

    @staticmethod
    def run_session(spec, sinks, address=None, show=None, faults=(), refresh_s: float = 1.0, trace=None):
        """``rsd-ray run`` on Ray: embedded (or joined) Ray around a controller actor; ``show`` gets
        dashboard frames; ``trace``: (t0, t1, path), drawn in the controller actor, written here. A sink with
        a ``phase`` method is told the start-up phases."""
        from rsd_ray.actors.session import ray_session, run_on_ray
        for sink in sinks:
            getattr(sink, "phase", lambda *a: None)("starting Ray" if not address else "joining Ray")
        with ray_session(address, spec.rack.servers * spec.rack.cards_per_server):
            return run_on_ray(spec, sinks, show=show, faults=faults, refresh_s=refresh_s, trace=trace)

    @staticmethod
    def serve_session(spec, options, address, version: str, body, faults=()):
        """``rsd-ray serve`` on Ray: embedded (or joined) Ray around a ServeActor; ``body(server)`` serves
        through a proxy that answers as the inline ``RackServer`` does."""
        from rsd_ray.actors.serve_actor import RemoteServer
        from rsd_ray.actors.session import ray_session, serve_on_ray
        with ray_session(address, spec.rack.servers * spec.rack.cards_per_server):
            return serve_on_ray(spec, options, version, lambda actor: body(RemoteServer(actor)), faults)

    @staticmethod
    def split_model(path, tp: int, budget: int, timer=None, beside_rack: bool = False):
        from rsd_ray.actors.shard_actor import split_on_ray
        return split_on_ray(path, tp, budget, timer=timer, resources={} if beside_rack else {"atom_card": 1})

    @staticmethod
    def card_memory(model) -> list[dict]:
        return ray.get([c.memory.remote() for c in model.cards])

    def processes(self) -> list[dict]:
        """Each card actor's pid, memory and loaded heavy modules (for benchmarks and tests)."""
        return _get([c.process.remote() for c in self.cards.values()], "card processes")

    def host_pids(self) -> dict[int, int]:
        """Server → its host actor's pid (for fault tests that kill it from outside)."""
        return dict(zip((s.server for s in self.setups), _get([h.pid.remote() for h in self.hosts], "host pids")))

    def shutdown(self) -> None:
        """Ask the hosts to close their compiled graphs, wait a little, then kill everything."""
        if self.hosts:
            try:
                ray.get([h.close.remote() for h, _ in self._alive()], timeout=SHUTDOWN_WAIT_S)
            except (ray.exceptions.RayError, TimeoutError):
                pass
        for actor in self.hosts + list(self.cards.values()):
            ray.kill(actor)
        for pg in self.pgs:
            remove_placement_group(pg)
        deadline = time.monotonic() + SHUTDOWN_WAIT_S     # resources return once the groups are gone
        while self.pgs and time.monotonic() < deadline:
            if all(placement_group_table(pg).get("state") == "REMOVED" for pg in self.pgs):
                break
            time.sleep(0.05)
        self.hosts, self.cards, self.pgs = [], {}, []
