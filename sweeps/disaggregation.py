"""Aggregated against disaggregated prefill and decode on the 224-card rack, at equal cards.

    python sweeps/disaggregation.py [--duration 60] [--out-dir sweep-results/disaggregation]

Llama 3 8B at TP 4 (56 instances, 4 a server), Poisson arrivals of 1,024-token prompts and 512-token
answers at two loads. Aggregated, every instance prefills and decodes (chunked prefill: a prompt's
chunk shares a step with the decodes); disaggregated, the first 16, 24 or 32 instances (4, 6 or 8
servers) prefill and the rest decode, each request's KV cache (128 KiB a token: 128 MiB for a prompt,
over the instance's four cards) moved to another server over the NIC and the top-of-rack switch —
after its prefill (vLLM's NixlConnector, Dynamo), and for one layout layer by layer as it is computed
(Splitwise). Two layouts give the prefill pool settings of its own, as vLLM's and Dynamo's prefill
workers take their own arguments: the cards of P16 as 32 instances of TP 2, and P16 with a prefill
engine of 8,192 tokens a step (the run's: 2,048). Both pools are routed round robin, as vLLM's
disaggregated proxy routes them (and the aggregated rack too, for a like comparison; with
``least_loaded`` the prefill pool queues far longer: see the README). The decode pool is routed when
the prefill's epoch comes back (``rack/handoff.py``): one layout again at ``epoch_s`` 0.01 shows what
that granularity costs.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich import box
from rich.console import Console
from rich.progress import Progress

from rsd_ray.config import load_run
from rsd_ray.dashboards.tables import Folding
from rsd_ray.sweep import run_point, run_points
from rsd_ray.sweep.table import pool_columns

RATES = (40.0, 80.0)                       # requests/s for the rack: about a third and two thirds of its reach
LAYOUTS = (("agg", 0, "after_prefill", 0.05, {}), ("P16", 16, "after_prefill", 0.05, {}),   # P: prefill instances
           ("P24", 24, "after_prefill", 0.05, {}), ("P32", 32, "after_prefill", 0.05, {}),
           ("P24 lw", 24, "layerwise", 0.05, {}), ("P24 e10", 24, "after_prefill", 0.01, {}),
           ("P32 tp2", 32, "after_prefill", 0.05, {"prefill.tp": 2}),            # the cards of P16, at TP 2
           ("P16 8k", 16, "after_prefill", 0.05, {"prefill.engine.max_num_batched_tokens": 8192}))


def points() -> list[dict]:
    return [{"workload.rate": rate, "router.prefill_instances": p, "router.kv_transfer": kv, "epoch_s": epoch, **own}
            for rate in RATES for _, p, kv, epoch, own in LAYOUTS]


def row(result: dict, label: str) -> dict:
    if "error" in result:
        return {"layout": label, **result["point"], "error": result["error"]}
    s, split = result["summary"], result.get("disaggregation")
    out = {"layout": label, "rate": result["point"]["workload.rate"], "out_tok_s": s["window_output_throughput"],
           "ttft_p50_ms": s["median_ttft_ms"], "ttft_p99_ms": s["p99_ttft_ms"], "tpot_p50_ms": s["median_tpot_ms"],
           "itl_p99_ms": s["p99_itl_ms"], "tok_s_per_w": s["output_tokens_per_s_per_watt"],
           "unfinished": result["requests"]["unfinished"]}
    return out | pool_columns(split) | ({"kv_gb": split["kv_bytes"] / 1e9} if split else {})


def render(rows: list[dict], console: Console) -> None:
    """One table a load: aggregated (agg) or P of the 56 instances prefilling (lw: KV sent layer by layer;
    e10: a 10 ms epoch; tp2: prefill instances of TP 2; 8k: a prefill engine of 8,192 tokens a step);
    latencies in ms; KV, wait: TTFT's mean parts moving the KV cache and waiting for the decode instance."""
    for rate in RATES:
        t = Folding(title=f"224 cards, Llama 3 8B TP 4, Poisson {rate:g} req/s of 1024 in / 512 out, round robin "
                          "(ms; 50, 99: percentiles; KV, wait: TTFT's mean parts; P, D: each pool's busy share)",
                    box=box.SIMPLE_HEAD)
        for col in ("layout", "tok/s", "TTFT50", "TTFT99", "TPOT50", "ITL99", "KV", "wait", "P", "D"):
            t.add_column(col, justify="right")
        for r in (r for r in rows if r.get("rate", r.get("workload.rate")) == rate):
            if "error" in r:
                t.add_row(r["layout"], "[red]failed[/]", *[""] * 8)
                continue
            split = "prefill_busy" in r
            t.add_row(r["layout"], f"{r['out_tok_s']:,.0f}", f"{r['ttft_p50_ms']:,.0f}", f"{r['ttft_p99_ms']:,.0f}",
                      f"{r['tpot_p50_ms']:,.1f}", f"{r['itl_p99_ms']:,.0f}", f"{r['mean_ttft_transfer_ms']:.1f}" if split else "",
                      f"{r['mean_ttft_wait_ms']:.1f}" if split else "", f"{r['prefill_busy']:.0%}" if split else "",
                      f"{r['decode_busy']:.0%}" if split else "")
        console.print(t)


def plot(rows: list[dict], path) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    labels = [name for name, *_ in LAYOUTS]
    for rate in RATES:
        mine = {r["layout"]: r for r in rows if r.get("rate") == rate and "error" not in r}
        for ax, key, title in zip(axes, ("out_tok_s", "ttft_p50_ms", "itl_p99_ms"),
                                  ("output tokens/s", "TTFT p50 (ms)", "ITL p99 (ms)")):
            ax.plot(labels, [mine[n][key] if n in mine else float("nan") for n in labels], "o-",
                    label=f"{rate:g} req/s")
            ax.set_title(title)
    for ax in axes:
        ax.tick_params(axis="x", labelsize=7, rotation=30)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("aggregated and disaggregated layouts of the 224-card rack (Llama 3 8B TP 4, 1024 in / 512 out)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=60.0, help="virtual seconds of arrivals per point")
    ap.add_argument("--workers", type=int, help="points at once (default: one per CPU)")
    ap.add_argument("--out-dir", default="sweep-results/disaggregation")
    args = ap.parse_args(argv)
    spec = load_run(None, rack="rsd-rack", model="llama3-8b", tp=4, duration_s=args.duration,
                    router={"policy": "round_robin"},
                    workload={"arrival": "poisson", "rate": RATES[0], "per_server": False,
                              "input": {"dist": "fixed", "mean": 1024}, "output": {"dist": "fixed", "mean": 512}})
    console, grid = Console(), points()
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task(f"disaggregation: {len(grid)} runs", total=len(grid))
        results = run_points(run_point, spec, grid, args.workers, on_done=lambda _: bar.advance(task))
    labels = [name for _ in RATES for name, *_ in LAYOUTS]
    rows = [row(res, label) for res, label in zip(results, labels)]
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "disaggregation.json").write_text(json.dumps({"rows": rows, "results": results}, indent=1))
    render(rows, console)
    drawn = plot(rows, out / "disaggregation.png")
    console.print(f"wrote {out / 'disaggregation.json'}" + (f", {out / 'disaggregation.png'}" if drawn else
                                                             " (pip install 'rsd-ray[plot]' for the PNG)"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
