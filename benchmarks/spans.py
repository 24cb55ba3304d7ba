"""The reference engine's spans against its step-by-step execution, measured side by side in one run.

    python benchmarks/spans.py [--duration 30] [--ray-rack-duration 5] [--skip-ray-rack]

Llama 3 8B, TP 4, the default closed-loop workload per server (saturated at the
default 50 ms epoch). Prints virtual/wall for rsd-rack (224 cards) inline
without and with spans, for the Ray executor on atom-server without and with
spans, and for rsd-rack on Ray with spans (a shorter window: starting 224 card
actors takes minutes on a small machine).
"""
from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from rsd_ray.config import load_run
from rsd_ray.controller import Controller
from rsd_ray.results import build


def measure(rack: str, executor: str, spans: bool, duration: float) -> dict:
    doc = build(Controller(load_run(None, rack=rack, duration_s=duration), executor=executor, spans=spans,
                                stepper="reference").run())
    steps, in_spans = doc["emulator"]["steps"], doc["emulator"]["steps_in_spans"]
    return {"rack": rack, "executor": executor, "spans": spans, "wall_s": doc["emulator"]["wall_s"],
            "ratio": doc["emulator"]["virtual_per_wall"], "steps": steps, "in_spans": in_spans,
            "tokens_per_s": doc["summary"]["output_throughput"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--ray-rack-duration", type=float, default=5.0)
    ap.add_argument("--skip-ray-rack", action="store_true")
    args = ap.parse_args()
    d = args.duration
    runs = [("rsd-rack", "inline", False, d), ("rsd-rack", "inline", True, d),
            ("atom-server", "ray", False, d), ("atom-server", "ray", True, d)]
    runs += [] if args.skip_ray_rack else [("rsd-rack", "ray", True, args.ray_rack_duration)]
    import ray
    ray.init(address="local", resources={"atom_card": 16 if args.skip_ray_rack else 224}, include_dashboard=False,
             logging_level="WARNING")
    table = Table(title="spans vs step-by-step")
    for col in ("rack", "executor", "spans", "arrivals s", "steps", "steps in spans", "wall s", "virtual/wall",
                "output tok/s"):
        table.add_column(col, justify="right")
    for rack, executor, spans, duration in runs:
        r = measure(rack, executor, spans, duration)
        table.add_row(rack, executor, "on" if spans else "off", f"{duration:g}", f"{r['steps']:,}", f"{r['in_spans']:,}",
                      f"{r['wall_s']:.2f}", f"{r['ratio']:.1f}×", f"{r['tokens_per_s']:,.0f}")
    Console().print(table)
    ray.shutdown()


if __name__ == "__main__":
    main()
