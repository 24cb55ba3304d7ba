"""Routers across loads on a shared-prefix trace: round robin, least loaded, power of two, prefix affinity.

    python sweeps/prefix_routing.py [--duration 120]

A Mooncake-format trace is generated (every prompt: one of 40 shared 6-block documents + 2 blocks of its own,
512 tokens a block; Poisson arrivals) and replayed with prefix caching on, at three loads
(``workload.trace.time_scale`` 2, 1 and 0.5: 1, 2 and 4 requests/s on 4 instances of Llama 3 8B at TP 2). Prints tokens/s, TTFT
and the prefix-cache hit rate per router; saves sweep-results/prefix_routing/sweep.png.
"""
import json
import random
from pathlib import Path

from rsd_ray.sweep import run_script


def make_trace(path: Path, requests: int = 1000, docs: int = 40, rate: float = 2.0, seed: int = 0) -> Path:
    rng, t, own, rows = random.Random(seed), 0.0, 10_000, []
    for _ in range(requests):
        t += rng.expovariate(rate)
        ids = [rng.randrange(docs) * 100 + k for k in range(6)] + [own, own + 1]
        own += 2
        rows.append({"timestamp": int(t * 1000), "input_length": len(ids) * 512 - 100, "output_length": 64,
                     "hash_ids": ids})
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


if __name__ == "__main__":
    Path("sweep-results").mkdir(exist_ok=True)
    trace = make_trace(Path("sweep-results") / "prefix_routing.jsonl")
    run_script("prefix_routing", "Routers on a shared-prefix trace (Mooncake format), prefix caching on",
               [{"router.policy": p, "workload.trace.time_scale": s}
                for p in ("round_robin", "least_loaded", "power_of_two", "prefix_affinity") for s in (2.0, 1.0, 0.5)],
               rack="mini", model="llama3-8b", tp=2, workload=f"trace:mooncake:{trace}",
               engine={"enable_prefix_caching": True}, duration_s=120.0)
