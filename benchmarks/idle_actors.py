"""CPU of idle card actors under Ray's own settings, side by side in one run.

    python benchmarks/idle_actors.py [--cards 16] [--seconds 10]

For each setting: a private local Ray with that ``_system_config``, ``--cards``
card actors that do nothing, and their CPU time (utime + stime from /proc)
over ``--seconds``, as % of one core per actor. Whatever Ray spends in an idle
worker (its signal-check loop, task-event and metrics reporting) shows here;
on a laptop it is what the full rack's 224 actors cost before any work.
"""
from __future__ import annotations

import argparse
import os
import time

import ray
from rich.console import Console
from rich.table import Table

from rsd_ray.actors.card_actor import CardActor
from rsd_ray.config import load_run

SETTINGS = {
    "Ray's defaults": {},
    "task events every 60 s": {"task_events_report_interval_ms": 60000},
    "metrics every 60 s": {"metrics_report_interval_ms": 60000},
    "no metrics collection": {"enable_metrics_collection": False},
    "no event stats": {"event_stats": False},
    "all of the above": {"task_events_report_interval_ms": 60000, "metrics_report_interval_ms": 60000,
                         "enable_metrics_collection": False, "event_stats": False},
}


def cpu_seconds(pids: list[int]) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])          # utime, stime
    return total / ticks


def idle_percent(system_config: dict, cards: int, seconds: float) -> float:
    """% of one core each idle card actor uses under ``system_config``."""
    spec = load_run(None, rack="atom-server")
    ray.init(address="local", resources={"atom_card": cards}, include_dashboard=False, logging_level="ERROR",
             _system_config=system_config or None)
    try:
        actors = [CardActor.options(resources={"atom_card": 1}).remote(c, spec.device, spec.epoch_s)
                  for c in range(cards)]
        pids = [p["pid"] for p in ray.get([a.process.remote() for a in actors])]
        time.sleep(3.0)                                       # let start-up work finish
        before = cpu_seconds(pids)
        time.sleep(seconds)
        return (cpu_seconds(pids) - before) / seconds / cards * 100
    finally:
        ray.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cards", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    table = Table(title=f"idle card actors ({args.cards}), % of one core each")
    table.add_column("setting")
    table.add_column("% of a core per actor", justify="right")
    table.add_column("224 cards, cores", justify="right")
    for name, config in SETTINGS.items():
        try:
            pct = idle_percent(config, args.cards, args.seconds)
            table.add_row(name, f"{pct:.2f}", f"{pct * 224 / 100:.2f}")
        except Exception as err:                          # noqa: BLE001  (a setting this Ray does not know)
            table.add_row(name, f"refused: {type(err).__name__}", "")
    Console().print(table)


if __name__ == "__main__":
    main()
