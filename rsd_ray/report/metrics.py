"""Per-request records → the summary figures `vllm bench serve` and `vllm bench throughput` print.

Two kinds of throughput, under different names:
- ``request_throughput``, ``output_throughput``, ``total_token_throughput`` count as `vllm bench serve`
  does: the completed requests' tokens over the benchmark's ``duration``, from the first request sent to
  the last one completed (the drain included);
- ``window_*`` count the tokens emitted inside the measurement window [0, ``window_s``] over its length:
  the steady-state rate of a rack under a sustained load, with no ramp-down.
Latencies cover every completed request, including those that finished while the rack drained.
"""
from __future__ import annotations

import numpy as np

from rsd_ray.engine.request import RequestRecord
from rsd_ray.report.columns import Columns

PERCENTILES = (50, 90, 99)


def latency_stats(name: str, seconds, scratch: bool = False) -> dict[str, float]:
    """Mean, median, std, p90 and p99 in ms. The percentiles partition the array of ms in place (a run's
    inter-token latencies are ten million: no second copy), after the mean and std have read it in order.
    ``scratch``: ``seconds`` is a temporary of the caller's, turned into ms where it lies."""
    ms = np.multiply(seconds, 1e3, out=seconds) if scratch else np.asarray(seconds, dtype=float) * 1e3
    if ms.size == 0:
        return {f"{k}_{name}_ms": 0.0 for k in ("mean", "median", "std", "p90", "p99")}
    mean, std = float(ms.mean()), float(ms.std())
    p50, p90, p99 = np.percentile(ms, PERCENTILES, overwrite_input=True)
    return {f"mean_{name}_ms": mean, f"median_{name}_ms": float(p50),
            f"std_{name}_ms": std, f"p90_{name}_ms": float(p90), f"p99_{name}_ms": float(p99)}


TIMELINE_BINS = 600     # at most this many bins in a run's throughput time series (1 s each up to 10 minutes)


def throughput_series(records: list[RequestRecord], end_s: float, columns: Columns | None = None) -> dict:
    """Output tokens/s in consecutive bins over [0, end_s) (whole seconds; 1 s up to 10 virtual minutes):
    the time series in which faults and recoveries show."""
    flat = (columns or Columns(records)).flat
    bin_s = float(max(1, int(np.ceil(end_s / TIMELINE_BINS))))
    bins = max(1, int(np.ceil(end_s / bin_s)))
    # token times are never negative: truncating to an integer is flooring (one array, no float copy first)
    binned = flat.astype(np.int64) if bin_s == 1.0 else (flat // bin_s).astype(np.int64)
    counts = np.bincount(np.minimum(binned, bins - 1, out=binned), minlength=bins)
    return {"bin_s": bin_s, "output_tokens_per_s": (counts / bin_s).tolist()}


def summarise(records: list[RequestRecord], window: float, columns: Columns | None = None) -> dict[str, float]:
    c = columns or Columns(records)
    done = c.done
    started = (c.lengths > 0) & (c.first <= window)
    window_tokens = int(np.count_nonzero(c.flat <= window))
    input_tokens = int(c.prompt[started].sum())
    completed = int(done.sum())
    completed_in_window = int(np.count_nonzero(c.finish[done] <= window))
    total_in, total_out = int(c.prompt[done].sum()), int(c.lengths[done].sum())
    duration = float(c.finish[done].max() - c.arrival.min()) if completed else 0.0
    per_s = 1.0 / duration if duration > 0 else 0.0
    ttft = c.first[done] - c.arrival[done]
    several = done & (c.lengths > 1)
    tpot = (c.finish[several] - c.first[several]) / (c.lengths[several] - 1)
    itl = c.gaps(done)
    e2el = c.finish[done] - c.arrival[done]
    summary = {
        "duration": duration,
        "completed": completed,
        "total_input_tokens": total_in,
        "total_output_tokens": total_out,
        "request_throughput": completed * per_s,
        "output_throughput": total_out * per_s,
        "total_token_throughput": (total_in + total_out) * per_s,
        "window_s": window,
        "window_request_throughput": completed_in_window / window,
        "window_output_throughput": window_tokens / window,
        "window_total_token_throughput": (window_tokens + input_tokens) / window,
    }
    for name, values in (("ttft", ttft), ("tpot", tpot), ("itl", itl), ("e2el", e2el)):   # temporaries, each
        summary.update(latency_stats(name, values, scratch=True))
    return summary


def by_class(records: list[RequestRecord], window: float) -> dict[str, dict]:
    """Every summary figure for each service class (``workload.classes``, or served requests' priorities),
    with the class's priority; empty when no request carries a class."""
    groups: dict[str, list[RequestRecord]] = {}
    for r in records:
        if r.service_class:
            groups.setdefault(r.service_class, []).append(r)
    return {name: {"priority": rs[0].priority, "requests": len(rs), **summarise(rs, window)}
            for name, rs in sorted(groups.items(), key=lambda g: (g[1][0].priority, g[0]))}


def offline_throughput(summary: dict) -> dict[str, float]:
    """What `vllm bench throughput` reports for an offline run (all requests at t = 0): its JSON's names,
    plus the output-token rate it prints."""
    elapsed = summary["duration"]
    total = summary["total_input_tokens"] + summary["total_output_tokens"]
    return {"elapsed_time": elapsed, "num_requests": summary["completed"], "total_num_tokens": total,
            "requests_per_second": summary["request_throughput"], "tokens_per_second": summary["total_token_throughput"],
            "output_tokens_per_second": summary["output_throughput"]}
