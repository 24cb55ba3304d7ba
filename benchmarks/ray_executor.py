"""The Ray executor, measured side by side in one run.

    python benchmarks/ray_executor.py [--rack-duration 10] [--skip-rack]

1. Per-step dispatch of a 4-card group: plain actor calls vs a compiled graph.
2. atom-server (16 card actors), Llama 3 8B TP 4, 30 s: virtual/wall ratio.
3. rsd-rack (224 card actors): time until ready, memory of the card actors
   (proportional set size, so shared pages count once), virtual/wall ratio.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import ray
from rich.console import Console
from rich.table import Table

from rsd_ray.actors.card_actor import CardActor
from rsd_ray.actors.card_group import RayCardGroup
from rsd_ray.config import load_run
from rsd_ray.controller import Controller, check_plan
from rsd_ray.results import build

console = Console()


def dispatch_ms(steps: int = 300) -> dict[str, float]:
    """Four card actors loaded with Llama 3 8B TP 4 programs, one step driven both ways from here."""
    spec = load_run(None)
    plan = check_plan(spec)
    handles = [CardActor.options(resources={"atom_card": 1}).remote(c, spec.device, "fp16", spec.epoch_s)
               for c in range(4)]
    ray.get([h.load.remote(p.to_msgpack(), plan.memory) for h, p in zip(handles, plan.programs)])
    x = np.array([1.0, 64, 64, 64 * 1024, 64 * 1024])
    out = {}
    for name, fast in (("plain calls", False), ("compiled graph", True)):
        group = RayCardGroup(dict(enumerate(handles)), fast=fast)
        group.propose(x[None], 0.0)
        t0 = time.perf_counter()
        for i in range(steps):
            group.accept([float(i)])
            group.propose(x[None], 1.0 + i)
        out[name] = (time.perf_counter() - t0) / steps * 1e3
        group.close()
    for h in handles:
        ray.kill(h)
    return out


def timed_run(rack: str, duration: float) -> dict:
    t0 = time.perf_counter()
    controller = Controller(load_run(None, rack=rack, duration_s=duration), executor="ray")
    ready = time.perf_counter() - t0
    procs = controller.executor.processes()
    doc = build(controller.run())
    return {"rack": rack, "cards": len(procs), "ready_s": ready,
            "dispatch": "compiled graph" if controller.executor.fast else "plain calls",
            "card_memory_gb": sum(p["pss_bytes"] for p in procs) / 1e9,
            "virtual_s": doc["emulator"]["virtual_s"], "wall_s": doc["emulator"]["wall_s"],
            "ratio": doc["emulator"]["virtual_per_wall"], "tokens_per_s": doc["summary"]["output_throughput"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--server-duration", type=float, default=30.0)
    ap.add_argument("--rack-duration", type=float, default=5.0)
    ap.add_argument("--skip-rack", action="store_true")
    args = ap.parse_args()
    ray.init(address="local", resources={"atom_card": 16 if args.skip_rack else 224}, include_dashboard=False,
             logging_level="WARNING")
    d = dispatch_ms()
    t = Table(title="per-step dispatch, 4-card group")
    t.add_column("path")
    t.add_column("ms/step", justify="right")
    for name, ms in d.items():
        t.add_row(name, f"{ms:.3f}")
    t.add_row("ratio", f"{d['plain calls'] / d['compiled graph']:.1f}×")
    console.print(t)
    t = Table(title="ray executor, Llama 3 8B TP 4, default closed-loop workload")
    for col in ("rack", "card actors", "dispatch", "ready s", "card memory GB", "virtual s", "wall s",
                "virtual/wall", "output tok/s"):
        t.add_column(col, justify="right")
    runs = [("atom-server", args.server_duration)] + ([] if args.skip_rack else [("rsd-rack", args.rack_duration)])
    for rack, duration in runs:
        r = timed_run(rack, duration)
        t.add_row(r["rack"], str(r["cards"]), r["dispatch"], f"{r['ready_s']:.1f}", f"{r['card_memory_gb']:.2f}",
                  f"{r['virtual_s']:.1f}", f"{r['wall_s']:.1f}", f"{r['ratio']:.2f}×", f"{r['tokens_per_s']:,.0f}")
        console.print(r)
    console.print(t)
    ray.shutdown()


if __name__ == "__main__":
    main()
