"""The Ray executor in CPU-seconds, and the full rack projected from them.

    python benchmarks/ray_cpu.py [--rack atom-server] [--duration 20] [--idle 5] [--cores 8 16 64]

On an embedded Ray with one rack's card actors (default: one ATOM server, 16 cards, one host actor, at
the default workload — each of the full rack's 14 hosts drives one such server), it measures from /proc:

* per card actor: CPU-seconds to start (process start, imports, loading its program), and the share of
  a core it uses idle (Ray's own loop);
* per virtual second of the run: CPU-seconds of each card actor, of the host actor and of the driver
  (controller, router, results).

From them it projects the 224-card rack (14 servers): start-up CPU-seconds (and the wall time if the
start-up spreads over every core), and virtual seconds per wall second on one machine of 8, 16, 64
cores and on a 14-node cluster of 16-core nodes. A projection takes each process as serial (one host
cannot go faster than its own CPU per virtual second allows; nor can the driver, whose work grows with
the rack's requests), and the cores left after the idle actors as shared by the rest.
"""
from __future__ import annotations

import argparse
import time

import ray
from rich.console import Console
from rich.table import Table

from idle_actors import cpu_seconds
from rsd_ray.config import load_run
from rsd_ray.rack.controller import Controller

RACK_SERVERS, RACK_CARDS = 14, 224


def measure(rack: str, duration: float, idle_s: float) -> dict:
    spec = load_run(None, rack=rack, duration_s=duration)
    cards = spec.rack.servers * spec.rack.cards_per_server
    ray.init(address="local", resources={"atom_card": cards}, include_dashboard=False, logging_level="WARNING")
    try:
        t0 = time.perf_counter()
        controller = Controller(spec, executor="ray")
        start_wall = time.perf_counter() - t0
        card_pids = [p["pid"] for p in controller.executor.processes()]
        host_pids = list(controller.executor.host_pids().values())
        out = {"rack": rack, "cards": len(card_pids), "hosts": len(host_pids), "start_wall_s": start_wall,
               "card_start_cpu_s": cpu_seconds(card_pids) / len(card_pids),
               "host_start_cpu_s": cpu_seconds(host_pids) / len(host_pids)}
        time.sleep(1.0)                                       # start-up's tail
        idle0 = cpu_seconds(card_pids)
        time.sleep(idle_s)
        out["card_idle_share"] = (cpu_seconds(card_pids) - idle0) / idle_s / len(card_pids)
        seen = {}

        def sample(epoch, in_flight):                         # the last sample before the executor shuts down
            seen.update(cards=cpu_seconds(card_pids), hosts=cpu_seconds(host_pids), driver=time.process_time(),
                        wall=time.perf_counter(), virtual=epoch.t_end)
        before = {"cards": cpu_seconds(card_pids), "hosts": cpu_seconds(host_pids),
                  "driver": time.process_time(), "wall": time.perf_counter()}
        controller.run([sample])
        virtual = seen["virtual"]
        out.update(virtual_s=virtual, run_wall_s=seen["wall"] - before["wall"],
                   card_cpu_per_vs=(seen["cards"] - before["cards"]) / virtual / len(card_pids),
                   host_cpu_per_vs=(seen["hosts"] - before["hosts"]) / virtual / len(host_pids),
                   driver_cpu_per_vs=(seen["driver"] - before["driver"]) / virtual)
        return out
    finally:
        ray.shutdown()


def project(m: dict, cores: int, nodes: int = 1) -> dict:
    """The 224-card rack on ``nodes`` machines of ``cores`` cores (cards and hosts spread evenly; the driver
    on the first): start-up and virtual seconds per wall second."""
    scale = RACK_SERVERS / m["hosts"]                         # the driver's work grows with the rack's requests
    driver = m["driver_cpu_per_vs"] * scale
    cards, hosts = RACK_CARDS / nodes, RACK_SERVERS / nodes
    start = RACK_CARDS * m["card_start_cpu_s"] + RACK_SERVERS * m["host_start_cpu_s"]
    free = cores - cards * m["card_idle_share"]
    work = cards * m["card_cpu_per_vs"] + hosts * m["host_cpu_per_vs"] + (driver if nodes == 1 else 0.0)
    speed = min(free / work if free > 0 else 0.0, 1.0 / driver, 1.0 / m["host_cpu_per_vs"])
    return {"where": f"{nodes} × {cores} cores" if nodes > 1 else f"{cores} cores", "start_cpu_s": start,
            "start_wall_s": start / (cores * nodes), "idle_cores": cards * m["card_idle_share"], "speed": speed}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rack", default="atom-server", help="the rack measured (one server of the full rack)")
    ap.add_argument("--duration", type=float, default=20.0, help="virtual seconds of arrivals")
    ap.add_argument("--idle", type=float, default=5.0, help="wall seconds of idle measured")
    ap.add_argument("--cores", type=int, nargs="+", default=[8, 16, 64], help="one machine's cores, projected")
    args = ap.parse_args()
    m = measure(args.rack, args.duration, args.idle)
    console = Console(width=max(100, Console().width))
    t = Table(title=f"measured on this machine: {args.rack} on Ray ({m['cards']} card actors, {m['hosts']} host)")
    t.add_column("figure")
    t.add_column("value", justify="right")
    for label, value in (("card actor: CPU-s to start", f"{m['card_start_cpu_s']:.2f}"),
                         ("host actor: CPU-s to start", f"{m['host_start_cpu_s']:.2f}"),
                         ("card actor idle: share of a core", f"{100 * m['card_idle_share']:.2f} %"),
                         ("card actor: CPU-s per virtual s", f"{m['card_cpu_per_vs']:.4f}"),
                         ("host actor: CPU-s per virtual s", f"{m['host_cpu_per_vs']:.3f}"),
                         ("driver: CPU-s per virtual s", f"{m['driver_cpu_per_vs']:.3f}"),
                         ("start-up wall s (this rack)", f"{m['start_wall_s']:.1f}"),
                         ("run: virtual s per wall s (this rack)", f"{m['virtual_s'] / m['run_wall_s']:.1f}×")):
        t.add_row(label, value)
    console.print(t)
    p = Table(title="projected: the 224-card rack (14 servers) on Ray")
    for col in ("where", "start-up CPU-s", "start-up wall s ≥", "idle actors, cores", "virtual s per wall s"):
        p.add_column(col, justify="right")
    for row in [project(m, c) for c in args.cores] + [project(m, 16, RACK_SERVERS)]:
        p.add_row(row["where"], f"{row['start_cpu_s']:.0f}", f"{row['start_wall_s']:.1f}", f"{row['idle_cores']:.1f}",
                  f"{row['speed']:.1f}×")
    console.print(p)


if __name__ == "__main__":
    main()
