"""Per-request records → the summary figures `vllm bench serve` prints.

Throughputs are measured over the window [0, duration]: tokens emitted in it
divided by its length. Latencies cover every completed request, including
those that finished while the rack drained.
"""
from __future__ import annotations

import itertools

import numpy as np

from rsd_ray.request import RequestRecord

PERCENTILES = (50, 90, 99)


def _stats(name: str, seconds) -> dict[str, float]:
    ms = np.asarray(seconds, dtype=float) * 1e3
    if ms.size == 0:
        return {f"{k}_{name}_ms": 0.0 for k in ("mean", "median", "std", "p90", "p99")}
    p50, p90, p99 = np.percentile(ms, PERCENTILES)
    return {f"mean_{name}_ms": float(ms.mean()), f"median_{name}_ms": float(p50),
            f"std_{name}_ms": float(ms.std()), f"p90_{name}_ms": float(p90), f"p99_{name}_ms": float(p99)}


def _flat_times(records) -> np.ndarray:
    """Every token time of every record, record after record, as one array (one pass, not one per record)."""
    return np.fromiter(itertools.chain.from_iterable(r.token_times for r in records), dtype=float,
                       count=sum(len(r.token_times) for r in records))


def _gaps(records) -> np.ndarray:
    """Inter-token latencies: the gaps between consecutive tokens of each record (none across records)."""
    flat = _flat_times(records)
    ends = np.cumsum([len(r.token_times) for r in records])[:-1]     # where one record's tokens stop
    return np.delete(np.diff(flat), ends[ends > 0] - 1) if flat.size else flat


TIMELINE_BINS = 600     # at most this many bins in a run's throughput time series (1 s each up to 10 minutes)


def throughput_series(records: list[RequestRecord], end_s: float) -> dict:
    """Output tokens/s in consecutive bins over [0, end_s) (whole seconds; 1 s up to 10 virtual minutes):
    the time series in which faults and recoveries show."""
    bin_s = float(max(1, int(np.ceil(end_s / TIMELINE_BINS))))
    bins = max(1, int(np.ceil(end_s / bin_s)))
    counts = np.bincount(np.minimum((_flat_times(records) // bin_s).astype(np.int64), bins - 1), minlength=bins)
    return {"bin_s": bin_s, "output_tokens_per_s": (counts / bin_s).tolist()}


def summarise(records: list[RequestRecord], duration: float) -> dict[str, float]:
    done = [r for r in records if r.finish is not None]
    started = [r for r in records if r.token_times and r.token_times[0] <= duration]
    window_tokens = int(np.count_nonzero(_flat_times(records) <= duration))
    input_tokens = sum(r.prompt_len for r in started)
    completed_in_window = sum(1 for r in done if r.finish <= duration)
    ttft = [r.token_times[0] - r.arrival for r in done]
    tpot = [(r.finish - r.token_times[0]) / (r.output_len - 1) for r in done if r.output_len > 1]
    itl = _gaps(done)
    e2el = [r.finish - r.arrival for r in done]
    summary = {
        "duration": duration,
        "completed": len(done),
        "total_input_tokens": sum(r.prompt_len for r in done),
        "total_output_tokens": sum(r.output_len for r in done),
        "request_throughput": completed_in_window / duration,
        "output_throughput": window_tokens / duration,
        "total_token_throughput": (window_tokens + input_tokens) / duration,
    }
    for name, values in (("ttft", ttft), ("tpot", tpot), ("itl", itl), ("e2el", e2el)):
        summary.update(_stats(name, values))
    return summary
