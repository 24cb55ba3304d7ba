"""The Ray executor: every card an actor, one host actor per server.

Placement: one placement group per emulated server — the host bundle plus one
``atom_card`` bundle per card, STRICT_PACK — so a server's PCIe traffic never
crosses Ray nodes. A rack that the cluster's ``atom_card`` resources cannot
hold is refused before anything is created.
"""
from __future__ import annotations

import time

import ray
from ray.util.placement_group import placement_group, placement_group_table, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from rsd_ray.actors.card_actor import CardActor
from rsd_ray.actors.host_actor import HostActor
from rsd_ray.config import ConfigError
from rsd_ray.executor import sum_counts

HOST_CPU = 0.01
"""CPU share reserved for a host actor's bundle. It only keeps the bundle non-empty:
hosts and cards take CPU as they run (num_cpus=0), which lets a 224-card rack run on a laptop."""
GRAPH_MAX_CARDS_PER_CPU = 8
"""Above this many card actors per CPU of the cluster, plain calls replace compiled graphs.
Measured here: an idle card actor inside a compiled graph spends ~12 % of a core polling its
channel (0.7 % outside one), so 224 of them on 2 cores would starve the emulation itself."""
READY_TIMEOUT_S = 600.0   # placement and actor start-up
CALL_TIMEOUT_S = 300.0    # one epoch on every host; beyond it the rack is declared lost
SHUTDOWN_WAIT_S = 10.0


class RackLost(RuntimeError):
    """A host or card actor (or its node) died, or stopped answering; the run cannot go on."""


def _get(refs, what: str, timeout: float = CALL_TIMEOUT_S):
    try:
        return ray.get(refs, timeout=timeout)
    except ray.exceptions.GetTimeoutError as err:
        raise RackLost(f"{what}: no answer within {timeout:.0f} s; a node may be lost") from err
    except ray.exceptions.RayError as err:
        raise RackLost(f"{what} failed: {type(err).__name__}: {str(err).splitlines()[0]}") from err


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

    def __init__(self, spec, plan, setups, fast: bool | None = None):
        """``fast``: compiled graphs (True), plain calls (False), or by cards per CPU (None)."""
        self.setups = setups
        self.pgs, self.hosts, self.cards = [], [], {}
        check_capacity(spec.rack)
        if fast is None:
            cards = spec.rack.servers * spec.rack.cards_per_server
            fast = cards <= GRAPH_MAX_CARDS_PER_CPU * ray.cluster_resources().get("CPU", 1)
        self.fast = fast
        try:
            self._start(spec, plan, fast)
        except BaseException:
            self.shutdown()
            raise

    def _start(self, spec, plan, fast: bool) -> None:
        per = spec.rack.cards_per_server
        for s in self.setups:
            bundles = [{"CPU": HOST_CPU}] + [{"atom_card": 1}] * per
            self.pgs.append(placement_group(bundles, strategy="STRICT_PACK"))
        _get([pg.ready() for pg in self.pgs], "placing the servers", READY_TIMEOUT_S)
        blobs = [p.to_msgpack() for p in plan.programs]
        loads = []
        for s, pg in zip(self.setups, self.pgs):
            for local, c in enumerate(s.cards):
                self.cards[c] = CardActor.options(
                    resources={"atom_card": 1}, scheduling_strategy=PlacementGroupSchedulingStrategy(
                        pg, placement_group_bundle_index=1 + local)).remote(c, spec.device, spec.model.dtype, spec.epoch_s)
            for _, group in s.instances:
                loads += [self.cards[c].load.remote(blobs[rank], plan.memory) for rank, c in enumerate(group)]
        _get(loads, "loading programs onto the cards", READY_TIMEOUT_S)
        for s, pg in zip(self.setups, self.pgs):
            handles = {c: self.cards[c] for c in s.cards}
            self.hosts.append(HostActor.options(num_cpus=HOST_CPU, scheduling_strategy=PlacementGroupSchedulingStrategy(
                pg, placement_group_bundle_index=0)).remote(spec, plan, s, handles, fast))
        _get([h.ready.remote() for h in self.hosts], "starting the hosts", READY_TIMEOUT_S)

    def advance(self, t_end, arrivals):
        refs = [h.advance.remote(t_end, arrivals.get(s.server, [])) for h, s in zip(self.hosts, self.setups)]
        return _get(refs, f"epoch ending at {t_end:.3f} virtual s")

    def card_frames(self, t):
        return [f for frames in _get([h.card_frames.remote(t) for h in self.hosts], "card telemetry") for f in frames]

    def link_bytes(self):
        return sum_counts(_get([h.link_bytes.remote() for h in self.hosts], "link counters"))

    def unfinished(self):
        return [r for part in _get([h.unfinished.remote() for h in self.hosts], "unfinished requests") for r in part]

    def processes(self) -> list[dict]:
        """Each card actor's pid, memory and loaded heavy modules (for benchmarks and tests)."""
        return _get([c.process.remote() for c in self.cards.values()], "card processes")

    def shutdown(self) -> None:
        """Ask the hosts to close their compiled graphs, wait a little, then kill everything."""
        if self.hosts:
            try:
                ray.get([h.close.remote() for h in self.hosts], timeout=SHUTDOWN_WAIT_S)
            except ray.exceptions.RayError:
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
