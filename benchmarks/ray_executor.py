"""The cost of one card sync on Ray, plain actor calls vs a compiled graph, side by side.

    python benchmarks/ray_executor.py [--epochs 300]

A 4-card group loaded with Llama 3 8B TP 4 programs: each epoch the host tells
every card the step it ran and reads back its governor's clock factor — the
call a card that may throttle costs each epoch in which it runs (a steady card
is not sampled: ``hardware/card_group.py``). Whole-rack speed, start-up and
memory are in ``benchmarks/speed.py``; CPU-seconds in ``benchmarks/ray_cpu.py``.
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
from rsd_ray.compiler import check_plan


def sync_ms(epochs: int) -> dict[str, float]:
    spec = load_run(None)
    plan = check_plan(spec)
    handles = [CardActor.options(resources={"atom_card": 1}).remote(c, spec.device, spec.epoch_s)
               for c in range(4)]
    ray.get([h.load.remote(p.to_msgpack(), plan.memory) for h, p in zip(handles, plan.programs)])
    x = np.array([[1.0, 64, 64, 64 * 1024, 64 * 1024]])
    out = {}
    for name, fast in (("plain calls", False), ("compiled graph", True)):
        group = RayCardGroup(dict(enumerate(handles)), spec.epoch_s, plan.programs, spec.device, fast=fast)
        group.propose(x, 0.0)
        t0 = time.perf_counter()
        for i in range(epochs):
            group.accept([float(i)], x)
            group.forget_sample()                  # as a group whose cards may throttle: sample each epoch
            group.propose(x, float(i) + 0.5)
        out[name] = (time.perf_counter() - t0) / epochs * 1e3
        group.close()
    for h in handles:
        ray.kill(h)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=300)
    args = ap.parse_args()
    ray.init(address="local", resources={"atom_card": 4}, include_dashboard=False, logging_level="WARNING")
    try:
        d = sync_ms(args.epochs)
    finally:
        ray.shutdown()
    t = Table(title="one card sync per epoch, 4-card group")
    t.add_column("path")
    t.add_column("ms/epoch", justify="right")
    for name, ms in d.items():
        t.add_row(name, f"{ms:.3f}")
    t.add_row("ratio", f"{d['plain calls'] / d['compiled graph']:.1f}×")
    Console().print(t)


if __name__ == "__main__":
    main()
