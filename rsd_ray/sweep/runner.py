"""Run sweep points in parallel: processes with the inline executor, or Ray tasks.

Every point keeps the base seed, so points differ only by what the grid says.
"""
from __future__ import annotations

import os
import signal
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any, Callable

from rsd_ray import signals
from rsd_ray.config import ConfigError, RunSpec
from rsd_ray.sweep.points import apply

ROW_METRICS = ("window_output_throughput", "output_throughput", "total_token_throughput", "request_throughput", "median_ttft_ms", "p90_ttft_ms",
               "p99_ttft_ms", "median_tpot_ms", "p90_tpot_ms", "p99_tpot_ms", "p99_itl_ms", "p99_e2el_ms",
               "rack_power_w", "output_tokens_per_s_per_watt")
POLL_S = 0.2               # how often a waiting sweep looks for a stop signal


def run_spec(spec: RunSpec) -> dict[str, Any]:
    """One inline run, reduced to what a sweep keeps."""
    from rsd_ray.rack.controller import Controller
    from rsd_ray.report.results import build
    doc = build(Controller(spec).run())
    if doc["status"] != "completed":        # stopped or failed part-way: its figures are not the point's
        raise RuntimeError(f"run {doc['status']}: {doc['reason']}")
    kept = {"summary": doc["summary"], "requests": doc["requests"], "emulator": doc["emulator"]}
    return kept | ({"disaggregation": doc["disaggregation"]} if "disaggregation" in doc else {})


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


def _workers_leave_signals_to_the_sweep() -> None:
    """A worker process ignores stop signals (a terminal's Ctrl-C reaches the whole group): the sweep decides,
    and ends the workers it no longer needs."""
    for signum in signals.STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def run_points(task: Callable, spec: RunSpec, points: list[dict], workers: int | None = None,
               parallel: str = "processes", on_done: Callable | None = None) -> list[dict]:
    """``task(spec, point)`` for every point, in parallel; results in the points' order. A point
    that raises becomes ``failed_point`` (its reason), and the others go on. A stop signal ends the sweep:
    the points done are kept, running ones are stopped (their processes or tasks ended) and every point not
    done is a row saying so; a second signal exits at once."""
    workers = workers or default_workers()
    results: list[dict | None] = [None] * len(points)

    def settle(i: int, get: Callable) -> None:
        try:
            results[i] = get()
        except Exception as err:            # noqa: BLE001  (any failure is one point's row, not the sweep's end)
            results[i] = failed_point(points[i], getattr(err, "cause", None) or err)
        if on_done:
            on_done(results[i])

    stopped = lambda: signals.first_received() is not None      # noqa: E731
    with signals.graceful(signals.RECORD):
        if parallel == "ray":
            import ray
            remote = ray.remote(num_cpus=1)(task)
            refs = {remote.remote(spec, p): i for i, p in enumerate(points)}
            pending = list(refs)
            while pending and not stopped():
                done, pending = ray.wait(pending, num_returns=1, timeout=POLL_S)
                for ref in done:
                    settle(refs[ref], lambda: ray.get(ref))
            for ref in pending:
                ray.cancel(ref, force=True)
        elif workers == 1:
            for i, p in enumerate(points):
                if stopped():
                    break
                settle(i, lambda: task(spec, p))
        else:
            pool = ProcessPoolExecutor(max_workers=workers, initializer=_workers_leave_signals_to_the_sweep)
            futures = {pool.submit(task, spec, p): i for i, p in enumerate(points)}
            pending = set(futures)
            try:
                while pending and not stopped():
                    done, pending = wait(pending, timeout=POLL_S, return_when=FIRST_COMPLETED)
                    for fut in done:
                        settle(futures[fut], fut.result)
            finally:
                if pending:                 # stopped: end the running points' processes too
                    for process in list(getattr(pool, "_processes", {}).values()):
                        process.kill()              # (they ignore stop signals: see above)
                pool.shutdown(wait=True, cancel_futures=True)
    why = signals.reason(signals.first_received()) if stopped() else ""
    return [r or {"point": p, "error": f"not run: {why}"} for r, p in zip(results, points)]
