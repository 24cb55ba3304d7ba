"""`rsd-ray compile` on the terminal: shards, per-card memory, step costs, link volumes."""
from __future__ import annotations

from rich.console import Console
from rsd_ray.dashboards.tables import Folding

GIB = 1024 ** 3


def _bytes(n: float) -> str:
    for unit, size in (("GiB", GIB), ("MiB", 1024 ** 2), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:,.2f} {unit}"
    return f"{n:,.0f} B"


def _precision(q: dict, console: Console) -> None:
    t = Folding(title=f"number formats (quantization {q['quantization']}) beside the unquantised model")
    for col in ("", "this plan", "unquantised"):
        t.add_column(col, justify="right")
    group = f" (fp16 scale per {q['group_size']})" if q["group_size"] else ""
    runs = q["matmul_compute"] + ("" if q["matmul_runs_in"] == q["matmul_compute"]
                                  else f" → run in {q['matmul_runs_in']}: no {q['matmul_compute']} units")
    t.add_row("linear weights", q["weights"] + group, q["activations"])
    t.add_row("matmuls compute in", f"{runs} ({q['matmul_peak_tflops']:,.0f} T peak)", q["activations"])
    t.add_row("KV cache", q["kv_cache"], q["activations"])
    t.add_row("weights per card", _bytes(q["quantised"]["weights"]), _bytes(q["unquantised"]["weights"]))
    plain = q["unquantised"]["num_blocks"]
    t.add_row("KV blocks", f"{q['quantised']['num_blocks']:,}", "does not fit" if plain is None else f"{plain:,}")
    console.print(t)


def render(d: dict, console: Console) -> None:
    p = d["placement"]
    console.print(f"[bold]{d['model']}[/] at TP {d['tp']} on [bold]{d['rack']}[/] ({d['device']}): "
                  f"{p['instances']} instances, groups under one {p['scope']}, idle cards {p['idle_cards'] or 'none'}")
    t = Folding(title="tensor-parallel split (per card)")
    for col in ("tensor", "full shape", "split", "card shape", "×", "then"):
        t.add_column(col)
    for s in d["shards"]:
        t.add_row(s["name"], str(tuple(s["shape"])), s["split"], str(tuple(s["card_shape"])), str(s["count"]),
                  s["collective"] or "")
    console.print(t)
    m = d["memory"]
    t = Folding(title="memory plan of every card")
    t.add_column("region")
    t.add_column("size", justify="right")
    for region in ("weights", "workspace", "comm_buffers", "kv_cache"):
        t.add_row(region, _bytes(m[region]))
    t.add_row("free", _bytes(m["budget"] - sum(m[r] for r in ("weights", "workspace", "comm_buffers", "kv_cache"))))
    t.add_row("[bold]budget", _bytes(m["budget"]))
    t.add_row("KV blocks", f"{m['num_blocks']:,} × {m['block_size']} tokens ({_bytes(m['kv_bytes_per_token'])}/token)")
    console.print(t)
    pool = d.get("prefill_pool")
    if pool:
        pm = pool["memory"]
        console.print(f"prefill pool: {pool['instances']} instances of TP {pool['tp']} (placed first), "
                      f"{_bytes(pm['weights'])} of weights and {pm['num_blocks']:,} KV blocks a card")
    _precision(d["precision"], console)
    e = d["experts"]
    if e:
        shared = f", {e['shared']} shared" if e["shared"] else ""
        pairs = ", ".join(f"{q:.2f}" for q in e["pairs_per_token_by_card"])
        console.print(f"experts: {e['experts']} ({e['per_token']} a token{shared}) in {e['moe_layers']} layers, "
                      f"{e['per_card']} whole experts a card; token-expert pairs per token by card: {pairs}; "
                      f"busiest card {e['busiest_over_mean']:.2f}× the mean (skew {e['skew']:g})")
    console.print("command stream: " + ", ".join(f"{k} ×{v}" for k, v in d["commands"].items())
                  + f"; layer pipelining chunks {d['pipeline_chunks']}; msgpack {_bytes(d['program_bytes'])}")
    t = Folding(title="one step, per card")
    for col in ("step", "FLOPs", "DRAM bytes", "host link", "compute", "collectives", "step", "tokens/s"):
        t.add_column(col, justify="right")
    for s in d["steps"]:
        t.add_row(s["step"], f"{s['flops'] / 1e9:,.1f} G", _bytes(s["dram_bytes"]), _bytes(s["host_link_bytes"]),
                  f"{s['compute_s'] * 1e3:.2f} ms", f"{s['collective_s'] * 1e3:.2f} ms",
                  f"{s['step_s'] * 1e3:.2f} ms", f"{s['tokens_per_s']:,.0f}")
    console.print(t)
    for s in d["steps"]:
        t = Folding(title=f"collective volume per link, {s['step']} (instance 0)")
        t.add_column("link")
        t.add_column("bytes", justify="right")
        for name, n in s["link_bytes"].items():
            t.add_row(name, _bytes(n))
        console.print(t)
