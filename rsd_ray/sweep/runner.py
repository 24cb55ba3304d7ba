"""Run sweep points in parallel: processes with the inline executor, or Ray tasks.

Every point keeps the base seed, so points differ only by what the grid says.
"""
from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Callable

from rsd_ray.config import ConfigError, RunSpec
from rsd_ray.sweep.points import apply

ROW_METRICS = ("window_output_throughput", "output_throughput", "total_token_throughput", "request_throughput", "median_ttft_ms", "p90_ttft_ms",
               "p99_ttft_ms", "median_tpot_ms", "p90_tpot_ms", "p99_tpot_ms", "p99_itl_ms", "p99_e2el_ms",
               "rack_power_w", "output_tokens_per_s_per_watt")


def run_spec(spec: RunSpec) -> dict[str, Any]:
    """One inline run, reduced to what a sweep keeps."""
    from rsd_ray.rack.controller import Controller
    from rsd_ray.report.results import build
    doc = build(Controller(spec).run())
    return {"summary": doc["summary"], "requests": doc["requests"], "emulator": doc["emulator"]}


def run_point(spec: RunSpec, point: dict[str, Any]) -> dict[str, Any]:
    return {"point": point, **run_spec(apply(spec, point))}


def default_workers() -> int:
    return max(1, (os.cpu_count() or 1))


def failed_point(point: dict, err: BaseException) -> dict[str, Any]:
    """A point that was refused or failed: a row with its reason, so the other points still count."""
    reason = str(err).strip() or type(err).__name__
    if not isinstance(err, ConfigError):
        reason = f"{type(err).__name__}: {reason}"
    return {"point": point, "error": reason.splitlines()[0]}


def run_points(task: Callable, spec: RunSpec, points: list[dict], workers: int | None = None,
               parallel: str = "processes", on_done: Callable | None = None) -> list[dict]:
    """``task(spec, point)`` for every point, in parallel; results in the points' order. A point
    that raises becomes ``failed_point`` (its reason), and the others go on."""
    workers = workers or default_workers()
    results: list[dict | None] = [None] * len(points)

    def settle(i: int, get: Callable) -> None:
        try:
            results[i] = get()
        except Exception as err:            # noqa: BLE001  (any failure is one point's row, not the sweep's end)
            results[i] = failed_point(points[i], getattr(err, "cause", None) or err)
        if on_done:
            on_done(results[i])

    if parallel == "ray":
        import ray
        remote = ray.remote(num_cpus=1)(task)
        refs = {remote.remote(spec, p): i for i, p in enumerate(points)}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            settle(refs[done[0]], lambda: ray.get(done[0]))
    elif workers == 1:
        for i, p in enumerate(points):
            settle(i, lambda: task(spec, p))
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(task, spec, p): i for i, p in enumerate(points)}
            for fut in as_completed(futures):
                settle(futures[fut], fut.result)
    return results
