"""One versioned JSON document per run: config, summary, rack, emulator figures."""
from __future__ import annotations

import dataclasses
import json
from collections import defaultdict

import numpy as np

from rsd_ray.calibration import ALL as CALIBRATION
from rsd_ray.rack.outcome import Outcome
from rsd_ray.report.columns import Columns
from rsd_ray.report.disaggregation import pools
from rsd_ray.report.metrics import by_class, offline_throughput, summarise, throughput_series
from rsd_ray.report.saturation import saturation

SCHEMA = "rsd-ray/run/v1"
WALL_CLOCK_FIELDS = ("wall_s", "virtual_per_wall")   # the only fields that differ between equal runs


def build(outcome: Outcome) -> dict:
    spec, window = outcome.spec, outcome.window_s or outcome.spec.duration_s
    rack = spec.rack
    records = list(outcome.records)
    columns = Columns(records)
    summary = summarise(records, window, columns)
    cards = [dataclasses.asdict(f) for f in outcome.window_cards]
    card_energy = sum(f.energy_j for f in outcome.window_cards)
    other_w = rack.host_power_w * rack.servers + rack.tor_power_w
    rack_energy = card_energy + other_w * window
    rack_w = rack_energy / window
    summary.update(rack_power_w=rack_w, energy_j=rack_energy, card_power_w=card_energy / window / max(1, len(cards)),
                   server_power_w=(card_energy / window + rack.host_power_w * rack.servers) / rack.servers,
                   output_tokens_per_s_per_watt=summary["window_output_throughput"] / rack_w,
                   joules_per_output_token=rack_energy / max(1, summary["window_output_throughput"] * window))
    if any(e.enable_prefix_caching for e in spec.engines):     # vLLM's counters, prompt tokens, over instances
        queries = sum(f.prefix_cache_queries for f in outcome.instances)
        hits = sum(f.prefix_cache_hits for f in outcome.instances)
        summary.update(prefix_cache_queries=queries, prefix_cache_hits=hits,
                       prefix_cache_hit_rate=hits / queries if queries else 0.0)
    if any(e.kv_offloading_size for e in spec.engines):        # of those hits, brought back from host memory first
        summary.update(kv_offload_hits=sum(f.kv_offload_hits for f in outcome.instances),
                       kv_offload_stored=sum(f.kv_offload_stored for f in outcome.instances))
    if rack.price:
        p = rack.price
        usd_h = (len(cards) * p.card_usd_per_hour + rack.servers * p.server_usd_per_hour
                 + rack_w / 1000 * p.usd_per_kwh)
        summary.update(usd_per_hour=usd_h, output_tokens_per_usd=summary["window_output_throughput"] * 3600 / usd_h
                       if usd_h else None)
    servers = defaultdict(lambda: {"card_energy_j": 0.0, "cards": 0})
    for f in outcome.window_cards:
        s = servers[f.card // rack.cards_per_server]
        s["card_energy_j"] += f.energy_j
        s["cards"] += 1
    server_list = [{"server": k, "cards": v["cards"],
                    "power_w": v["card_energy_j"] / window + rack.host_power_w} for k, v in sorted(servers.items())]
    elapsed = outcome.end_s
    covered = max([elapsed] + [f.clock_s for f in outcome.instances])   # a step begun before the end counts whole
    links = []
    for name, nbytes in sorted(outcome.link_bytes.items()):
        kind, bw = outcome.links[name]
        links.append({"link": name, "kind": kind, "bytes": nbytes, "busy_s": nbytes / bw,
                      "utilisation": nbytes / bw / covered if covered else 0.0})
    requests = {"offered": outcome.offered, "accepted": len(records), "refused": outcome.refused,
                "refusals": outcome.refusals,
                "completed": int(columns.done.sum()),
                "errored": int(columns.errored.sum()),
                "unfinished": int(np.count_nonzero(~columns.done & ~columns.errored)),
                "retried": int(np.count_nonzero(columns.retries > 0)),
                "preemptions": int(columns.preemptions.sum()),
                "clipped": outcome.clipped}       # shortened to fit max_model_len (vLLM would refuse or cut them)
    placement = outcome.plan.placement
    prefill = outcome.plan.prefill_pool
    verdict = saturation(records, outcome.refused, window, closed_loop=outcome.closed_loop, columns=columns)
    return {
        "schema": SCHEMA,
        "status": outcome.status,
        "reason": outcome.reason,
        "config": dataclasses.asdict(spec),
        "calibration": CALIBRATION,
        "summary": summary | {"saturation": verdict["verdict"]},
        "saturation": verdict,
        "requests": requests,
        "placement": {"tp": placement.tp, "scope": placement.scope, "instances": len(placement.groups),
                      "groups": [list(g) for g in placement.groups], "idle_cards": list(placement.idle_cards),
                      **({"prefill_tp": prefill.tp} if prefill else {})},
        "memory_plan": dataclasses.asdict(outcome.plan.memory),
        **({"prefill_memory_plan": dataclasses.asdict(prefill.memory)} if prefill else {}),
        "servers": server_list,
        "instances": [dataclasses.asdict(f) for f in outcome.instances],
        "cards": cards,
        "links": links,
        "failures": [dataclasses.asdict(f) for f in outcome.failures],
        "recoveries": [dataclasses.asdict(r) | {"duration_s": r.duration_s} for r in outcome.recoveries],
        "faults": faults_summary(outcome, requests),
        "timeline": throughput_series(records, elapsed, columns),
        **({"by_class": classes} if (classes := by_class(records, window)) else {}),
        **({"disaggregation": split} if (split := pools(outcome)) else {}),
        **({"functional": outcome.functional} if outcome.functional else {}),
        **({"offline": offline_throughput(summary)} if spec.workload.arrival == "offline" else {}),
        **({"frontend": outcome.frontend} if outcome.frontend else {}),
        "emulator": {"executor": outcome.executor, "virtual_s": elapsed, "epochs": outcome.epochs,
                     "steps": sum(f.steps for f in outcome.instances),
                     "servers": rack.servers, "cards": len(cards), "instances": len(placement.groups),
                     "wall_s": outcome.wall_s, "virtual_per_wall": elapsed / outcome.wall_s if outcome.wall_s else None},
    }


def faults_summary(outcome: Outcome, requests: dict) -> dict:
    """What went wrong and how the rack coped: faults injected, failures by kind, recoveries and their
    times, and the requests that were retried or ended in an error."""
    kinds: dict[str, int] = defaultdict(int)
    for f in outcome.failures:
        kinds[f.kind] += 1
    times = [r.duration_s for r in outcome.recoveries]
    return {"recover": outcome.spec.recover,
            "injected": [dataclasses.asdict(f) for f in outcome.faults],
            "failures": len(outcome.failures), "failures_by_kind": dict(sorted(kinds.items())),
            "recoveries": len(times),
            "mean_recovery_s": sum(times) / len(times) if times else None, "max_recovery_s": max(times, default=None),
            "retried_requests": requests["retried"], "errored_requests": requests["errored"]}


def without_wall_clock(doc: dict) -> dict:
    """The document minus the fields that depend on the host machine's speed."""
    doc = json.loads(json.dumps(doc))
    for key in WALL_CLOCK_FIELDS:
        doc["emulator"].pop(key, None)
    return doc


def not_run(spec, executor: str, reason: str, status: str = "interrupted") -> dict:
    """The document of a run that ended before its first epoch (stopped, or its rack lost while starting):
    what was asked, why it did not run, no figures."""
    return {"schema": SCHEMA, "status": status, "reason": reason, "config": dataclasses.asdict(spec),
            "calibration": CALIBRATION, "summary": {}, "requests": {"offered": 0, "accepted": 0, "refused": 0},
            "emulator": {"executor": executor, "epochs": 0}}


def dump(doc: dict, path) -> None:
    with open(path, "w") as fh:
        json.dump(doc, fh, indent=1)


def write_requests_csv(outcome: Outcome, path) -> None:
    """Optional per-request CSV: one line per request with its timings."""
    import csv
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["rid", "instance", "arrival_s", "prompt_len", "output_len", "ttft_s", "finish_s", "preemptions"])
        for r in outcome.records:
            ttft = r.token_times[0] - r.arrival if r.token_times else ""
            w.writerow([r.rid, r.instance, r.arrival, r.prompt_len, r.output_len, ttft,
                        "" if r.finish is None else r.finish, r.preemptions])
