"""A Perfetto-readable timeline (Chrome trace events) of a window of a run.

``TraceSink`` is a controller sink: it asks for every step (``trace_steps``) and,
for the steps in the window, lays out what each card did, with the rules that
timed the step: the host's step time, then each card's commands in ATOM's
vocabulary (``neural_engine``, ``task_dma``, ``external_hdma``, ``host``) segment
by segment, each Device Sync once the group's slowest card reaches it, and with
layer pipelining the engine's own overlap recurrence (``engine.pricing.pipeline``). Tracks:
one process per server, one thread per card, one per instance's host; requests'
lifetimes are async events (arrival to last token, first token marked). Cards
are drawn at their nominal clock (a throttled card's steps are longer than shown).
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from rsd_ray.calibration import HostCost
from rsd_ray.interconnect.collectives import sharers
from rsd_ray.compiler.program import DEVICE_SYNC
from rsd_ray.hardware.costmodel import StepCost
from rsd_ray.rack.epoch import Needs
from rsd_ray.engine.pricing import GroupSync, pipeline

US = 1e6
HOST_TID = 100000          # an instance's host track: HOST_TID + instance
KV_TID = 200000            # a disaggregated decode instance's incoming KV caches: KV_TID + instance


@dataclass(frozen=True)
class _Pool:
    """What drawing a step of one pool's instance needs: its host's cost, each rank's command costs and
    names, and its collectives' names."""
    host: HostCost
    costs: list
    names: list
    sync_names: list

    @classmethod
    def of(cls, pool, device) -> "_Pool":
        return cls(HostCost.of(pool.engine, pool.tp), [StepCost(p, device) for p in pool.programs],
                   [[(c.name, c.kind, c.layer, c.chunk) for c in p.commands if c.kind != DEVICE_SYNC]
                    for p in pool.programs],
                   [(c.name, c.collective, c.layer, c.chunk) for c in pool.programs[0].commands
                    if c.kind == DEVICE_SYNC])


class TraceSink:
    needs = Needs(steps=True)
    def __init__(self, controller, t0: float, t1: float):
        self.t0, self.t1 = t0, t1
        spec, plan, topology = controller.spec, controller.plan, controller.topology
        self.groups = plan.placement.groups
        self.server_of = topology.server_of
        drawn = {id(pool): _Pool.of(pool, spec.device) for pool in plan.pools}
        self.pools = [drawn[id(plan.pool_of(iid))] for iid in range(len(self.groups))]
        shared = sharers(topology, [list(g) for g in self.groups])
        self.syncs = [GroupSync(plan.pool_of(iid).programs[0], list(g), topology, spec.compiler.collective, shared)
                      for iid, g in enumerate(self.groups)]
        self.events: list[dict] = []

    def __call__(self, out, in_flight: int = 0) -> None:
        for iid, t0, t1, shape in out.steps:
            if t0 < self.t1 and t1 > self.t0:
                self._step(iid, t0, t1, np.array(shape))
        for r in out.finished:
            end = r.token_times[-1] if r.token_times else None
            if end is not None and r.arrival < self.t1 and end > self.t0:
                self._request(r)

    def _step(self, iid: int, t0: float, t1: float, shape: np.ndarray) -> None:
        group, pool = self.groups[iid], self.pools[iid]
        host = float(pool.host.seconds(shape[2]))
        pid = self.server_of(group[0])
        self._x(f"step {int(shape[1])} tokens", "host", t0, host, pid, HOST_TID + iid,
                {"tokens": int(shape[1]), "sampled": int(shape[2])})
        times = [pool.costs[r].command_times(shape[None])[0] for r in range(len(group))]
        starts = [pool.costs[r].segment_starts for r in range(len(group))]
        segments = np.array([np.add.reduceat(t, s) for t, s in zip(times, starts)])
        slowest = segments.max(axis=0)
        coll = self.syncs[iid].times(shape[None])[0][0]
        at, links = pipeline(slowest[None], coll[None], self.syncs[iid].chunks)
        seg_at, link_at = at[0].tolist(), links[0].tolist()
        base = t0 + host
        for r, card in enumerate(group):
            bounds = list(starts[r]) + [len(times[r])]
            for i in range(len(slowest)):
                t = base + seg_at[i]
                for k in range(bounds[i], bounds[i + 1]):
                    name, kind, layer, chunk = pool.names[r][k]
                    self._x(name, kind, t, times[r][k], self.server_of(card), card, {"layer": layer, "chunk": chunk})
                    t += times[r][k]
                if i < len(coll) and coll[i] > 0:
                    name, collective, layer, chunk = pool.sync_names[i]
                    self._x(name, DEVICE_SYNC, base + link_at[i], coll[i], self.server_of(card), card,
                            {"collective": collective, "layer": layer, "chunk": chunk, "cards": list(group)})

    def _request(self, r) -> None:
        pid = self.server_of(self.groups[r.instance][0])
        common = {"cat": "request", "id": r.rid, "pid": pid, "tid": HOST_TID + r.instance, "name": f"request {r.rid}"}
        self.events.append({**common, "ph": "b", "ts": r.arrival * US,
                            "args": {"prompt": r.prompt_len, "output": r.output_len, "instance": r.instance}})
        self.events.append({**common, "ph": "n", "ts": r.token_times[0] * US, "name": "first token"})
        self.events.append({**common, "ph": "e", "ts": r.token_times[-1] * US})
        h = r.handoff
        if h is not None:                         # its KV cache on its way from the prefill instance's cards
            self._x(f"KV of request {r.rid}", "kv_transfer", h.prefilled, h.ready - h.prefilled, pid,
                    KV_TID + r.instance, {"bytes": h.kv_bytes, "from instance": h.instance})

    def _x(self, name: str, cat: str, t: float, dur: float, pid: int, tid: int, args: dict) -> None:
        """A complete event; a step that overlaps the window is drawn whole, as the cards' ledgers count it."""
        self.events.append({"name": name, "cat": cat, "ph": "X", "ts": t * US, "dur": dur * US, "pid": pid,
                            "tid": tid, "args": args})

    def timeline(self) -> list[dict]:
        """The events in time order, track by track (an epoch's come host by host, and a call may hold many
        epochs); a track's events at one time keep the order they were drawn in, then requests by id."""
        return sorted(self.events, key=lambda e: (e["ts"], e["pid"], e["tid"], "id" in e, e.get("id", 0)))

    def write(self, path) -> None:
        write_trace(path, self.timeline(), (self.t0, self.t1))


def write_trace(path, events: list[dict], window: tuple[float, float]) -> None:
    """A Chrome-trace file of ``events``, with a name for every server and track."""
    meta = []
    for pid in sorted({e["pid"] for e in events}):
        meta.append({"name": "process_name", "ph": "M", "pid": pid, "tid": 0, "args": {"name": f"server {pid}"}})
    for pid, tid in sorted({(e["pid"], e["tid"]) for e in events}):
        label = (f"instance {tid - KV_TID} KV in" if tid >= KV_TID else f"instance {tid - HOST_TID} host"
                 if tid >= HOST_TID else f"card {tid}")
        meta.append({"name": "thread_name", "ph": "M", "pid": pid, "tid": tid, "args": {"name": label}})
    with open(path, "w") as fh:
        json.dump({"traceEvents": meta + events, "displayTimeUnit": "ms", "otherData": {"window_s": list(window)}}, fh)
