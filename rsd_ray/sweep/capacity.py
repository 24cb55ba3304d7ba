"""Capacity search: the highest Poisson request rate that meets the SLOs, by bisection.

A rate passes when every SLO holds (e.g. ``p99_ttft_ms ≤ 2000``) and nothing was
refused or left unfinished. The search doubles from a first guess until a rate
fails, then bisects between the last pass and the first fail.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

from rsd_ray.config import ConfigError, RunSpec
from rsd_ray.compiler import check_plan
from rsd_ray.sweep.points import apply
from rsd_ray.sweep.runner import run_spec

FIRST_GUESS_PER_INSTANCE = 1.0   # requests/s per instance to start doubling from
MAX_DOUBLINGS = 12


def parse_slo(text: str) -> tuple[str, float]:
    if "=" not in text:
        raise ConfigError("--slo", text, text, "write METRIC=LIMIT, e.g. p99_ttft_ms=2000")
    name, limit = text.split("=", 1)
    try:
        value = float(limit)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ConfigError("--slo", name.strip(), limit, "the limit must be a finite number > 0")
    return name.strip(), value


def passes(result: dict, slos: dict[str, float]) -> bool:
    s, r = result["summary"], result["requests"]
    unknown = [k for k in slos if k not in s]
    if unknown:
        raise ConfigError("--slo", unknown[0], unknown[0], f"not a summary metric; e.g. {', '.join(list(s)[7:15])}")
    return r["refused"] == 0 and r["unfinished"] == 0 and all(s[k] <= v for k, v in slos.items())


def search(spec: RunSpec, slos: dict[str, float], iterations: int = 6) -> dict[str, Any]:
    def at(rate: float) -> dict:
        wl = dataclasses.replace(spec.workload, arrival="poisson", rate=rate, per_server=False)
        res = run_spec(dataclasses.replace(spec, workload=wl))
        trials.append({"rate": rate, "pass": passes(res, slos), **{k: res["summary"][k] for k in slos},
                       "output_throughput": res["summary"]["window_output_throughput"]})
        return trials[-1]

    trials: list[dict] = []
    instances = len(check_plan(spec).placement.groups)
    good, bad = 0.0, None
    rate = FIRST_GUESS_PER_INSTANCE * instances
    for _ in range(MAX_DOUBLINGS):
        if at(rate)["pass"]:
            good, rate = rate, rate * 2
        else:
            bad = rate
            break
    for _ in range(iterations if bad else 0):
        mid = (good + bad) / 2
        if at(mid)["pass"]:
            good = mid
        else:
            bad = mid
    best = max((t for t in trials if t["pass"] and t["rate"] == good), key=lambda t: t["rate"], default=None)
    return {"capacity_rate": good, "first_failing_rate": bad, "slos": slos,
            "output_throughput_at_capacity": best["output_throughput"] if best else 0.0, "trials": trials}


def capacity_point(spec: RunSpec, point: dict, slos: dict[str, float], iterations: int) -> dict[str, Any]:
    return {"point": point, **search(apply(spec, point), slos, iterations)}
