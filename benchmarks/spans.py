"""Spans against step-by-step execution, measured side by side in one run.

    python benchmarks/spans.py [--duration 30] [--rack-on-ray]

Llama 3 8B, TP 4, the default closed-loop workload per server (saturated at the
default 50 ms epoch). Prints virtual/wall for rsd-rack (224 cards) inline
without and with spans, and for the Ray executor on atom-server without and
with spans; --rack-on-ray adds rsd-rack on Ray with spans (minutes to start
224 card actors on a small machine).
"""
from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from rsd_ray.config import load_run
from rsd_ray.controller import Controller
from rsd_ray.results import build


def measure(rack: str, executor: str, spans: bool, duration: float) -> dict:
    doc = build(Controller(load_run(None, rack=rack, duration_s=duration), executor=executor, spans=spans).run())
    steps, in_spans = doc["emulator"]["steps"], doc["emulator"]["steps_in_spans"]
    return {"rack": rack, "executor": executor, "spans": spans, "wall_s": doc["emulator"]["wall_s"],
            "ratio": doc["emulator"]["virtual_per_wall"], "steps": steps, "in_spans": in_spans,
            "tokens_per_s": doc["summary"]["output_throughput"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--rack-on-ray", action="store_true")
    args = ap.parse_args()
    runs = [("rsd-rack", "inline", False), ("rsd-rack", "inline", True)]
    import ray
    ray.init(resources={"atom_card": 224 if args.rack_on_ray else 16}, include_dashboard=False,
             logging_level="WARNING")
    runs += [("atom-server", "ray", False), ("atom-server", "ray", True)]
    runs += [("rsd-rack", "ray", True)] if args.rack_on_ray else []
    table = Table(title=f"spans vs step-by-step, {args.duration:.0f} s of arrivals")
    for col in ("rack", "executor", "spans", "steps", "steps in spans", "wall s", "virtual/wall", "output tok/s"):
        table.add_column(col, justify="right")
    for rack, executor, spans in runs:
        r = measure(rack, executor, spans, args.duration)
        table.add_row(rack, executor, "on" if spans else "off", f"{r['steps']:,}", f"{r['in_spans']:,}",
                      f"{r['wall_s']:.2f}", f"{r['ratio']:.1f}×", f"{r['tokens_per_s']:,.0f}")
    Console().print(table)
    ray.shutdown()


if __name__ == "__main__":
    main()
