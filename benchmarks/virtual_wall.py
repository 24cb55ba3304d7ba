"""Virtual/wall ratio of a 30 s run on one ATOM server and on the 224-card RSD rack.

    python benchmarks/virtual_wall.py [--duration 30]

Both runs use the same scenario (Llama 3 8B, TP 4, the default closed-loop
workload per server) on the inline executor, measured side by side in one
process. A ratio above 1 means faster than real time.
"""
from __future__ import annotations

import argparse
import time

from rich.console import Console
from rich.table import Table

from rsd_ray.config import load_run
from rsd_ray.controller import Controller
from rsd_ray.results import build


def measure(rack: str, duration: float) -> dict:
    t0 = time.perf_counter()
    controller = Controller(load_run(None, rack=rack, duration_s=duration))
    built = time.perf_counter() - t0
    doc = build(controller.run())
    emu = doc["emulator"]
    return {"rack": rack, "cards": emu["cards"], "build_s": built, "virtual_s": emu["virtual_s"],
            "wall_s": emu["wall_s"], "ratio": emu["virtual_per_wall"],
            "tokens_per_s": doc["summary"]["output_throughput"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=30.0)
    args = ap.parse_args()
    table = Table(title=f"virtual/wall, {args.duration:.0f} s of arrivals, inline executor")
    for col in ("rack", "cards", "build s", "virtual s", "wall s", "virtual/wall", "output tok/s"):
        table.add_column(col, justify="right")
    for rack in ("atom-server", "rsd-rack"):
        r = measure(rack, args.duration)
        table.add_row(r["rack"], str(r["cards"]), f"{r['build_s']:.2f}", f"{r['virtual_s']:.1f}",
                      f"{r['wall_s']:.2f}", f"{r['ratio']:.1f}×", f"{r['tokens_per_s']:,.0f}")
    Console().print(table)


if __name__ == "__main__":
    main()
