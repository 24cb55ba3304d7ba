"""Functional mode's decode speed, inline and on Ray, measured side by side in one run.

    python benchmarks/functional.py [--tp 4] [--batch 8] [--steps 64] [--layers 4] [--hidden 256]

A random Llama from `make-model` (8 query heads, 2 KV heads), a batch of prompts prefilled in one
step, then ``--steps`` decode steps of the whole batch. Prints decode steps per second and tokens
per second for each executor, and their ratio. On Ray every layer costs two card-to-card
all-reduces (each card fetches its peers' partial sums from their object stores).
"""
from __future__ import annotations

import argparse
import tempfile
import time

from rich.console import Console
from rich.table import Table

from rsd_ray.functional.checkpoint import make_model
from rsd_ray.functional.split import SplitModel, card_shards

GIB = 2 ** 30


def decode_rate(model, batch: int, steps: int) -> float:
    """Decode steps per second (prefill excluded)."""
    prompts = [[(7 * i + j) % 250 + 1 for j in range(16 + i)] for i in range(batch)]
    model.step([(i, p, 0) for i, p in enumerate(prompts)])
    t0 = time.perf_counter()
    for k in range(steps):
        model.step([(i, [1 + (i + k) % 250], len(p) + k) for i, p in enumerate(prompts)])
    rate = steps / (time.perf_counter() - t0)
    for i in range(batch):
        model.release(i)
    return rate


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tp", type=int, default=4)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=256)
    args = ap.parse_args()
    path = tempfile.mkdtemp(prefix="rsd-ray-model-")
    config = make_model(path, layers=args.layers, hidden=args.hidden, heads=8, kv_heads=2,
                        intermediate=4 * args.hidden, vocab=1024)
    rates = {"inline": decode_rate(SplitModel(config, card_shards(path, args.tp, GIB)), args.batch, args.steps)}
    import ray

    from rsd_ray.actors.shard_actor import split_on_ray
    ray.init(address="local", resources={"atom_card": args.tp}, include_dashboard=False, logging_level="WARNING")
    rates["ray"] = decode_rate(split_on_ray(path, args.tp, GIB), args.batch, args.steps)
    ray.shutdown()
    table = Table(title=f"functional decode: {args.layers} layers, hidden {args.hidden}, TP {args.tp}, "
                        f"batch {args.batch}, {args.steps} steps")
    for col in ("executor", "decode steps/s", "tokens/s", "vs inline"):
        table.add_column(col, justify="right")
    for name, rate in rates.items():
        table.add_row(name, f"{rate:,.1f}", f"{rate * args.batch:,.0f}", f"{rate / rates['inline']:.2f}×")
    Console().print(table)


if __name__ == "__main__":
    main()
