"""The seed's claim — the RSD rack gives "8× better TPS/W and TPS/$ than the competitor" — held against the
emulator's own figures.

    python sweeps/competitor.py [--per-instance 1024] [--out-dir sweep-results/competitor]

Every system runs the same job as ``vllm bench throughput`` would: Llama 3 8B, offline, 1,024 prompt and 128
output tokens, ``--per-instance`` requests for each of its instances, all sent at t = 0 (so each is at its
saturated throughput), on one server: an ATOM server (TP 4 as the RSD article runs it, and TP 2) and the GPU
servers of the presets (TP 1), each in fp16 and, where its fast units are 8-bit, W8A8 (ATOM's INT8, 128
TOPS) or FP8 (H100). Only the fp16 rows are held to the claim (the same model on each). Tokens/s per watt counts the whole server (cards, host, at the power the
model gives each; the sources are the presets'), and once the cards alone. "Same power" scales each
system to the RSD rack's power at this load: as many of its servers as fit (servers of an offline job do not
interact, so their throughput adds).

Prices: cloud rates, each with its source and date (``PRICES``). No public price for an ATOM card or
server could be found, so instead of a TPS/$ ratio the study prints the ATOM server-hour price at which the
rack would be 1× and 8× the GPU server's tokens per dollar. It is a study, not a fit: the figures are what
the emulator computes.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path

from rich.console import Console
from rich.progress import Progress

from rsd_ray.config import load_run
from rsd_ray.dashboards.tables import Folding
from rsd_ray.rack.controller import Controller
from rsd_ray.report.results import build

SYSTEMS = (("ATOM", "atom-server", 4, "none"), ("ATOM", "atom-server", 2, "none"), ("ATOM", "atom-server", 4, "w8a8"),
           ("H100", "dgx-h100", 1, "none"), ("H100", "dgx-h100", 1, "fp8"), ("A100", "dgx-a100", 1, "none"),
           ("L40S", "l40s-server", 1, "none"))   # one server each: 16 ATOM cards, 8 GPUs
PRICES = {   # USD per server-hour: (rate, source and date)
    "dgx-h100": (39.33, "AWS EC2 Capacity Blocks for ML pricing page, p5.48xlarge (8 x H100), US East, effective "
                        "instance hourly rate; the rates shown until their update of 2025-01-01"),
    "dgx-a100": (14.75, "AWS EC2 Capacity Blocks for ML pricing page, p4d.24xlarge (8 x A100 40 GB), US East, "
                        "effective instance hourly rate; the rates shown until their update of 2025-01-01"),
}
CLAIM = 8.0          # the seed's "8x better TPS/W and TPS/$ than the competitor"
RSD_SERVERS = 14     # the RSD rack


def run(rack: str, tp: int, quantization: str, per_instance: int) -> dict:
    spec = load_run(None, rack=rack, model="llama3-8b", tp=tp)
    spec = dataclasses.replace(spec, model=dataclasses.replace(spec.model, quantization=quantization))
    instances = spec.rack.servers * spec.rack.cards_per_server // tp
    workload = dataclasses.replace(spec.workload, arrival="offline", per_server=False,
                                   num_prompts=per_instance * instances,
                                   input=dataclasses.replace(spec.workload.input, dist="fixed", mean=1024),
                                   output=dataclasses.replace(spec.workload.output, dist="fixed", mean=128))
    doc = build(Controller(dataclasses.replace(spec, workload=workload)).run())
    s, cards = doc["summary"], doc["emulator"]["cards"]
    tokens = doc["offline"]["output_tokens_per_second"]
    power = s["rack_power_w"]
    card_w = s["card_power_w"] * cards
    return {"rack": rack, "tp": tp, "quantization": quantization, "cards": cards, "instances": instances, "output_tokens_per_s": tokens,
            "server_w": power, "cards_w": card_w, "tokens_per_s_per_w": tokens / power,
            "tokens_per_s_per_card_w": tokens / card_w}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-instance", type=int, default=1024, help="offline requests per instance (default 1024)")
    ap.add_argument("--out-dir", default="sweep-results/competitor")
    args = ap.parse_args(argv)
    console = Console()
    rows = []
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("competitor study: one server of each kind, offline", total=len(SYSTEMS))
        for label, rack, tp, quantization in SYSTEMS:
            rows.append({"system": label, **run(rack, tp, quantization, args.per_instance)})
            bar.advance(task)
    atom = rows[0]
    budget = atom["server_w"] * RSD_SERVERS
    for r in rows:
        r["servers_in_rsd_power"] = math.floor(budget / r["server_w"])
        r["tokens_per_s_at_rsd_power"] = r["servers_in_rsd_power"] * r["output_tokens_per_s"]
        r["atom_tokens_per_s_per_w_over_this"] = atom["tokens_per_s_per_w"] / r["tokens_per_s_per_w"]
        price = PRICES.get(r["rack"])
        if price:
            r["usd_per_server_hour"], r["price_source"] = price
            per_usd = r["output_tokens_per_s"] * 3600 / price[0]
            r["output_tokens_per_usd"] = per_usd
            # the ATOM server-hour price at which the RSD rack's tokens per dollar are 1x and 8x this system's
            r["atom_usd_per_hour_for_1x"] = atom["output_tokens_per_s"] * 3600 / per_usd
            r["atom_usd_per_hour_for_8x"] = r["atom_usd_per_hour_for_1x"] / CLAIM
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "competitor.json").write_text(json.dumps({"claim": CLAIM, "rsd_servers": RSD_SERVERS, "rows": rows},
                                                    indent=1))
    render(rows, console)
    if plot(rows, out / "competitor.png"):
        console.print(f"wrote {out / 'competitor.json'}, {out / 'competitor.png'}")
    else:
        console.print(f"wrote {out / 'competitor.json'} (pip install 'rsd-ray[plot]' for the PNG)")
    return 0


def render(rows: list[dict], console: Console) -> None:
    t = Folding(title="Llama 3 8B offline (1,024 in / 128 out), one server of each kind; ATOM×: the ATOM "
                      "server's (TP 4, fp16) tok/s/W over the row's; at RSD power: as many servers as 14 ATOM "
                      "servers' watts feed (cards-only tok/s/W in the JSON)")
    for col in ("server", "TP", "weights", "out tok/s", "W", "tok/s/W", "ATOM×", "at RSD power"):
        t.add_column(col, justify="right")
    for r in rows:
        t.add_row(r["system"], str(r["tp"]), r["quantization"].replace("none", "fp16"),
                  f"{r['output_tokens_per_s']:,.0f}", f"{r['server_w']:,.0f}", f"{r['tokens_per_s_per_w']:.2f}",
                  f"{r['atom_tokens_per_s_per_w_over_this']:.2f}",
                  f"{r['servers_in_rsd_power']}: {r['tokens_per_s_at_rsd_power']:,.0f}")
    console.print(t)
    atom = rows[0]
    for r in rows[1:]:
        if r["rack"] == atom["rack"] or r["quantization"] != "none":
            continue
        ratio = r["atom_tokens_per_s_per_w_over_this"]
        verdict = "supports" if ratio >= CLAIM else "does not support"
        console.print(f"TPS/W: the ATOM server (TP 4, fp16) gives {ratio:.2f}× the {r['system']} server's — {verdict} "
                      f"the {CLAIM:g}× claim.")
        if "usd_per_server_hour" in r:
            console.print(f"TPS/$: at ${r['usd_per_server_hour']:.2f} an {r['system']} server-hour, the ATOM server matches it "
                          f"at ${r['atom_usd_per_hour_for_1x']:.2f} an hour and is {CLAIM:g}× at "
                          f"${r['atom_usd_per_hour_for_8x']:.2f} ({r['price_source']}); no public ATOM price.")


def plot(rows: list[dict], path) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    labels = [f"{r['system']} TP {r['tp']}\n{r['quantization'].replace('none', 'fp16')}" for r in rows]
    fig, (ax_t, ax_w) = plt.subplots(1, 2, figsize=(12, 4.5))
    ax_t.bar(labels, [r["output_tokens_per_s"] for r in rows])
    ax_t.set_title("output tokens/s, one server")
    ax_w.bar(labels, [r["tokens_per_s_per_w"] for r in rows], label="whole server")
    ax_w.bar(labels, [r["tokens_per_s_per_card_w"] for r in rows], alpha=0.4, label="cards only")
    ax_w.axhline(rows[0]["tokens_per_s_per_w"] / CLAIM, color="k", ls="--", lw=0.8,
                 label=f"ATOM TP 4 / {CLAIM:g} (what the claim needs a GPU server below)")
    ax_w.set_title("output tokens/s per watt")
    ax_w.legend(fontsize=7)
    for ax in (ax_t, ax_w):
        ax.tick_params(axis="x", labelsize=8)
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


if __name__ == "__main__":
    raise SystemExit(main())
