"""Emulation speed, side by side in one run: virtual seconds per wall second, and offline requests per
wall second.

    python benchmarks/speed.py [--duration 300] [--prompts 100000] [--repeat 3] [--ray-duration 30] [--ray-rack]
                               [--scaling]

Rows, each a whole process (`rsd-ray run --executor inline`: start-up, compile and results included; the
median of ``--repeat`` runs) with its run loop alone beside it: the 224-card rack at the default load (256
closed-loop clients a server) and lightly loaded (448 clients in all, 8 an instance), one ATOM server, and
one H100 instance (a rack of one card) on ``--prompts`` offline requests of 512 in / 128 out (requests per
wall second, as simulators of vLLM are compared). Then the Ray executor (embedded Ray, in this process): start-up, card-actor memory
(PSS) and its run loop, on one ATOM server (one host actor) at 0.05 s and 1 s epochs, and on the two-server
test rack under a light closed loop (two host actors that run over quiet epochs together).
``--ray-rack`` adds the 224-card rack on Ray (minutes to start on a laptop);
``--scaling`` adds wall time per virtual second per card for 1, 2, 4, 7 and 14 servers and for
15 → 120 virtual seconds: flat when cost grows linearly with cards and with time.
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
from rsd_ray.rack.controller import Controller
from rsd_ray.report.results import build


def inline_process(label: str, rack: str, *args: str, repeat: int = 1) -> dict:
    """The row of the run whose whole process took the median time of ``repeat`` (this machine's speed
    drifts between runs a minute apart)."""
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "rsd_ray.cli", "run", "--executor", "inline", "--rack", rack,
                              *args, "--json", "--no-progress"], capture_output=True, text=True, check=True)
        runs.append((time.perf_counter() - t0, out.stdout))
    whole, stdout = sorted(runs)[len(runs) // 2]
    doc = json.loads(stdout)
    emu = doc["emulator"]
    offline = doc.get("offline")
    return {"rack": rack, "load": label, "executor": "inline", "cards": emu["cards"], "virtual_s": emu["virtual_s"],
            "start_s": whole - emu["wall_s"], "whole": emu["virtual_s"] / whole, "loop": emu["virtual_per_wall"],
            "requests_per_s": offline["num_requests"] / whole if offline else None, "pss_gb": None}


def ray_in_process(rack: str, duration: float, epoch: float, clients: int | None = None) -> dict:
    """``clients``: a light closed loop of that many clients for the whole rack (default: the default load)."""
    import ray
    cards = 224 if rack == "rsd-rack" else 16
    t0 = time.perf_counter()
    ray.init(address="local", resources={"atom_card": cards}, include_dashboard=False, logging_level="WARNING")
    try:
        light = {"workload": {"arrival": "closed", "concurrency": clients, "per_server": False}} if clients else {}
        spec = load_run(None, rack=rack, duration_s=duration, epoch_s=epoch, model="llama3-8b", tp=4, **light)
        controller = Controller(spec, executor="ray")
        start = time.perf_counter() - t0
        pss = sum(p["pss_bytes"] for p in controller.executor.processes()) / 1e9
        emu = build(controller.run())["emulator"]
    finally:
        ray.shutdown()
    whole = time.perf_counter() - t0
    load = (f"{clients} clients, " if clients else "") + f"epoch {epoch:g} s"
    return {"rack": rack, "load": load, "executor": "ray", "cards": emu["cards"],
            "virtual_s": emu["virtual_s"], "start_s": start, "whole": emu["virtual_s"] / whole,
            "loop": emu["virtual_per_wall"], "requests_per_s": None, "pss_gb": pss}


def run_loop_ms(servers: int, duration: float) -> float:
    """Wall ms per virtual second per card of the inline run loop ."""
    spec = load_run(None, rack="rsd-rack", duration_s=duration)
    spec = dataclasses.replace(spec, rack=dataclasses.replace(spec.rack, servers=servers))
    emu = build(Controller(spec).run())["emulator"]
    return emu["wall_s"] / emu["virtual_s"] / emu["cards"] * 1e3


def scaling_table(title: str, label: str, points: list[tuple[int, float]]) -> Table:
    t = Table(title=title)
    t.add_column(label, justify="right")
    t.add_column("ms per virtual s per card", justify="right")
    for x, ms in points:
        t.add_row(str(x), f"{ms:.3f}")
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=300.0, help="virtual seconds of arrivals, inline")
    ap.add_argument("--prompts", type=int, default=100_000, help="offline requests on one H100 instance")
    ap.add_argument("--ray-duration", type=float, default=30.0, help="virtual seconds of arrivals, on Ray")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each inline row; the median's is shown")
    ap.add_argument("--epoch", type=float, default=0.05, help="epoch of the Ray rows (the default run's)")
    ap.add_argument("--long-epoch", type=float, default=1.0, help="also the Ray row at this epoch (batch runs)")
    ap.add_argument("--ray-rack", action="store_true", help="also the 224-card rack on Ray (minutes to start)")
    ap.add_argument("--scaling", action="store_true", help="also cost against cards (1 → 14 servers) and time")
    args = ap.parse_args()
    console = Console(width=max(100, Console().width))
    duration, n = ("--duration", str(args.duration)), max(1, args.repeat)
    rows = [inline_process("256/server", "rsd-rack", *duration, repeat=n),
            inline_process("448 clients", "rsd-rack", *duration, "--concurrency", "448", repeat=n),
            inline_process("256/server", "atom-server", *duration, repeat=n),
            inline_process(f"{args.prompts:,} offline", "h100-single", "--tp", "1", "--num-prompts",
                           str(args.prompts), "--input-len", "512", "--output-len", "128", repeat=n),
            ray_in_process("atom-server", args.ray_duration, args.epoch),
            ray_in_process("atom-server", args.ray_duration, args.long_epoch),
            ray_in_process("mini", args.ray_duration, args.epoch, clients=8)]   # two hosts, a light closed loop
    if args.ray_rack:
        rows.append(ray_in_process("rsd-rack", args.ray_duration, args.long_epoch))
    t = Table(title="emulation speed: virtual seconds per wall second (× real time); offline: requests per wall s")
    for col in ("rack", "load", "exec", "cards", "virtual s", "start s", "whole", "loop", "req/s", "PSS GB"):
        t.add_column(col, justify="right")
    for r in rows:
        t.add_row(r["rack"], r["load"], r["executor"], str(r["cards"]), f"{r['virtual_s']:.0f}", f"{r['start_s']:.1f}",
                  f"{r['whole']:.1f}×", f"{r['loop']:.1f}×",
                  "—" if r["requests_per_s"] is None else f"{r['requests_per_s']:,.0f}",
                  "—" if r["pss_gb"] is None else f"{r['pss_gb']:.2f}")
    console.print(t)
    if args.scaling:
        horizon = min(args.duration, 60.0)
        console.print(scaling_table("inline run loop against cards (flat = linear in cards)", "servers",
                                    [(n, run_loop_ms(n, horizon)) for n in (1, 2, 4, 7, 14)]))
        console.print(scaling_table("inline run loop against virtual time, 14 servers (flat = linear in time)",
                                    "virtual s", [(int(d), run_loop_ms(14, d)) for d in (15, 30, 60, 120)]))


if __name__ == "__main__":
    main()
