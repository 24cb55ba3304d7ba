"""Emulation speed, side by side in one run: virtual seconds per wall second.

    python benchmarks/speed.py [--duration 300] [--ray-duration 30] [--ray-rack] [--scaling]

Rows: the inline executor as a whole process (`rsd-ray run --executor inline`,
start-up, compile and results included) and its run loop alone; the Ray
executor (embedded Ray, in this process): start-up, card-actor memory (PSS) and
its run loop. ``--ray-rack`` adds the 224-card rack on Ray (minutes to start on
a laptop); ``--scaling`` adds wall time per virtual second per card for 1, 2,
4, 7 and 14 servers, which is flat when cost grows linearly with cards.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time

from rich.console import Console
from rich.table import Table

from rsd_ray.config import load_run
from rsd_ray.controller import Controller
from rsd_ray.results import build


def inline_process(rack: str, duration: float) -> dict:
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "rsd_ray.cli", "run", "--executor", "inline", "--rack", rack,
                          "--duration", str(duration), "--json", "--no-progress"], capture_output=True, text=True,
                         check=True)
    whole = time.perf_counter() - t0
    emu = json.loads(out.stdout)["emulator"]
    return {"rack": rack, "executor": "inline", "cards": emu["cards"], "virtual_s": emu["virtual_s"],
            "start_s": whole - emu["wall_s"], "whole": emu["virtual_s"] / whole, "loop": emu["virtual_per_wall"],
            "pss_gb": None}


def ray_in_process(rack: str, duration: float) -> dict:
    import ray
    cards = 224 if rack == "rsd-rack" else 16
    t0 = time.perf_counter()
    ray.init(address="local", resources={"atom_card": cards}, include_dashboard=False, logging_level="WARNING")
    try:
        controller = Controller(load_run(None, rack=rack, duration_s=duration), executor="ray")
        start = time.perf_counter() - t0
        pss = sum(p["pss_bytes"] for p in controller.executor.processes()) / 1e9
        emu = build(controller.run())["emulator"]
    finally:
        ray.shutdown()
    whole = time.perf_counter() - t0
    return {"rack": rack, "executor": "ray", "cards": emu["cards"], "virtual_s": emu["virtual_s"], "start_s": start,
            "whole": emu["virtual_s"] / whole, "loop": emu["virtual_per_wall"], "pss_gb": pss}


def scaling(duration: float) -> list[tuple[int, float]]:
    """(servers, wall ms per virtual second per card) of the inline run loop."""
    out = []
    for servers in (1, 2, 4, 7, 14):
        spec = load_run(None, rack="rsd-rack", duration_s=duration)
        spec = dataclasses.replace(spec, rack=dataclasses.replace(spec.rack, servers=servers))
        emu = build(Controller(spec).run())["emulator"]
        out.append((servers, emu["wall_s"] / emu["virtual_s"] / emu["cards"] * 1e3))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=300.0, help="virtual seconds of arrivals, inline")
    ap.add_argument("--ray-duration", type=float, default=30.0, help="virtual seconds of arrivals, on Ray")
    ap.add_argument("--ray-rack", action="store_true", help="also the 224-card rack on Ray")
    ap.add_argument("--scaling", action="store_true", help="also 1 → 14 servers, inline")
    args = ap.parse_args()
    console = Console(width=max(110, Console().width))
    rows = [inline_process("atom-server", args.duration), inline_process("rsd-rack", args.duration),
            ray_in_process("atom-server", args.ray_duration)]
    if args.ray_rack:
        rows.append(ray_in_process("rsd-rack", args.ray_duration))
    t = Table(title="virtual seconds per wall second (default workload)")
    for col in ("rack", "executor", "cards", "virtual s", "start-up s", "whole process", "run loop", "card PSS GB"):
        t.add_column(col, justify="right")
    for r in rows:
        t.add_row(r["rack"], r["executor"], str(r["cards"]), f"{r['virtual_s']:.0f}", f"{r['start_s']:.1f}",
                  f"{r['whole']:.1f}×", f"{r['loop']:.1f}×", "—" if r["pss_gb"] is None else f"{r['pss_gb']:.2f}")
    console.print(t)
    if args.scaling:
        s = Table(title="inline run loop: wall ms per virtual second per card (flat = linear in cards)")
        s.add_column("servers", justify="right")
        s.add_column("ms", justify="right")
        for servers, ms in scaling(min(args.duration, 60.0)):
            s.add_row(str(servers), f"{ms:.3f}")
        console.print(s)


if __name__ == "__main__":
    main()
