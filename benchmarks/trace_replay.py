"""Replay a one-hour Azure-format trace of 100,000 requests on the 224-card rack, inline.

    python benchmarks/trace_replay.py [--requests 100000] [--hours 1] [--epoch 0.05]

The trace is generated here (Poisson arrivals, lognormal lengths like Azure's conversation trace: about
1,000 tokens in, 250 out), written in the Azure CSV format and replayed by
``rsd-ray run --executor inline --rack rsd-rack --workload trace:azure:FILE`` in a child process; prints the
wall time, virtual seconds per wall second and the child's peak memory (targets: faster than real time,
under 2 GB).
"""
import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_trace(path: Path, requests: int, seconds: float, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    times = np.sort(rng.uniform(0, seconds, requests))
    prompt = np.clip(np.round(rng.lognormal(np.log(1000) - 0.5, 1.0, requests)), 1, 8000).astype(int)
    output = np.clip(np.round(rng.lognormal(np.log(250) - 0.5, 1.0, requests)), 1, 2000).astype(int)
    start = np.datetime64("2023-11-16T18:00:00")
    with open(path, "w") as fh:
        fh.write("TIMESTAMP,ContextTokens,GeneratedTokens\n")
        for t, p, o in zip(times, prompt, output):
            stamp = str(start + np.timedelta64(int(t * 1e6), "us")).replace("T", " ")
            fh.write(f"{stamp}0,{p},{o}\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--hours", type=float, default=1.0)
    ap.add_argument("--epoch", type=float, default=0.05)
    args = ap.parse_args()
    seconds = args.hours * 3600
    with tempfile.TemporaryDirectory() as tmp:
        trace, out = Path(tmp) / "azure.csv", Path(tmp) / "run.json"
        make_trace(trace, args.requests, seconds)
        t0 = time.perf_counter()
        res = subprocess.run([sys.executable, "-m", "rsd_ray.cli", "run", "--executor", "inline", "--rack", "rsd-rack",
                              "--workload", f"trace:azure:{trace}", "--duration", str(seconds), "--epoch",
                              str(args.epoch), "--no-progress", "--out", str(out)], capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if res.returncode:
            print(res.stderr[-2000:], file=sys.stderr)
            return res.returncode
        doc = json.loads(out.read_text())
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    req, s = doc["requests"], doc["summary"]
    print(f"trace: {args.requests:,} requests over {seconds:,.0f} s (Azure format), rsd-rack inline, epoch {args.epoch}")
    print(f"completed {req['completed']:,}, refused {req['refused']:,}, unfinished {req['unfinished']:,}; "
          f"{s['window_output_throughput']:,.0f} output tok/s, TTFT p99 {s['p99_ttft_ms']:,.0f} ms")
    print(f"wall {wall:,.1f} s → {doc['emulator']['virtual_s'] / wall:.2f}× real time; peak memory {peak_mb:,.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
