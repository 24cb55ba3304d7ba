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

import itertools

import numpy as np

from rsd_ray.engine.request import RequestRecord

PERCENTILES = (50, 90, 99)


def _stats(name: str, seconds) -> dict[str, float]:
    ms = np.asarray(seconds, dtype=float) * 1e3
    if ms.size == 0:
        return {f"{k}_{name}_ms": 0.0 for k in ("mean", "median", "std", "p90", "p99")}
    p50, p90, p99 = np.percentile(ms, PERCENTILES)
    return {f"mean_{name}_ms": float(ms.mean()), f"median_{name}_ms": float(p50),
            f"std_{name}_ms": float(ms.std()), f"p90_{name}_ms": float(p90), f"p99_{name}_ms": float(p99)}


class TokenTimes:
    """Every token time of every record, record after record, as one array (one pass, not one per record
    and not one per figure), with each record's count."""

    def __init__(self, records):
        self.lengths = np.fromiter((len(r.token_times) for r in records), dtype=np.int64, count=len(records))
        self.flat = np.fromiter(itertools.chain.from_iterable(r.token_times for r in records), dtype=float,
                                count=int(self.lengths.sum()))

    def gaps(self, keep: np.ndarray) -> np.ndarray:
        """Inter-token latencies of the records ``keep`` marks: the gaps between consecutive tokens of each
        (none across records)."""
        flat, lengths = self.flat[np.repeat(keep, self.lengths)], self.lengths[keep]
        ends = np.cumsum(lengths)[:-1]                              # where one record's tokens stop
        return np.delete(np.diff(flat), ends[ends > 0] - 1) if flat.size else flat


TIMELINE_BINS = 600     # at most this many bins in a run's throughput time series (1 s each up to 10 minutes)


def throughput_series(records: list[RequestRecord], end_s: float, tokens: TokenTimes | None = None) -> dict:
    """Output tokens/s in consecutive bins over [0, end_s) (whole seconds; 1 s up to 10 virtual minutes):
    the time series in which faults and recoveries show."""
    flat = (tokens or TokenTimes(records)).flat
    bin_s = float(max(1, int(np.ceil(end_s / TIMELINE_BINS))))
    bins = max(1, int(np.ceil(end_s / bin_s)))
    counts = np.bincount(np.minimum((flat // bin_s).astype(np.int64), bins - 1), minlength=bins)
    return {"bin_s": bin_s, "output_tokens_per_s": (counts / bin_s).tolist()}


def summarise(records: list[RequestRecord], window: float, tokens: TokenTimes | None = None) -> dict[str, float]:
    tokens = tokens or TokenTimes(records)
    finished = np.fromiter((r.finish is not None for r in records), dtype=bool, count=len(records))
    done = [r for r in records if r.finish is not None]
    started = [r for r in records if r.token_times and r.token_times[0] <= window]
    window_tokens = int(np.count_nonzero(tokens.flat <= window))
    input_tokens = sum(r.prompt_len for r in started)
    completed_in_window = sum(1 for r in done if r.finish <= window)
    total_in, total_out = sum(r.prompt_len for r in done), sum(r.output_len for r in done)
    duration = max(r.finish for r in done) - min(r.arrival for r in records) if done else 0.0
    per_s = 1.0 / duration if duration > 0 else 0.0
    ttft = [r.token_times[0] - r.arrival for r in done]
    tpot = [(r.finish - r.token_times[0]) / (r.output_len - 1) for r in done if r.output_len > 1]
    itl = tokens.gaps(finished)
    e2el = [r.finish - r.arrival for r in done]
    summary = {
        "duration": duration,
        "completed": len(done),
        "total_input_tokens": total_in,
        "total_output_tokens": total_out,
        "request_throughput": len(done) * per_s,
        "output_throughput": total_out * per_s,
        "total_token_throughput": (total_in + total_out) * per_s,
        "window_s": window,
        "window_request_throughput": completed_in_window / window,
        "window_output_throughput": window_tokens / window,
        "window_total_token_throughput": (window_tokens + input_tokens) / window,
    }
    for name, values in (("ttft", ttft), ("tpot", tpot), ("itl", itl), ("e2el", e2el)):
        summary.update(_stats(name, values))
    return summary


def offline_throughput(summary: dict) -> dict[str, float]:
    """What `vllm bench throughput` reports for an offline run (all requests at t = 0): its JSON's names,
    plus the output-token rate it prints."""
    elapsed = summary["duration"]
    total = summary["total_input_tokens"] + summary["total_output_tokens"]
    return {"elapsed_time": elapsed, "num_requests": summary["completed"], "total_num_tokens": total,
            "requests_per_second": summary["request_throughput"], "tokens_per_second": summary["total_token_throughput"],
            "output_tokens_per_second": summary["output_throughput"]}
