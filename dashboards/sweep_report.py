"""Sweep results on the terminal (rich) and as a PNG (matplotlib, an optional extra)."""
from __future__ import annotations

from collections import defaultdict

from rich.console import Console
from rsd_ray.dashboards.tables import Folding
from rsd_ray.sweep.table import SCALING_AXES

COLUMNS = (("cards", "{:,}"), ("window_output_throughput", "{:,.0f}"), ("scaling_efficiency", "{:.1%}"),
           ("output_tokens_per_s_per_watt", "{:.3f}"), ("p99_ttft_ms", "{:,.0f}"), ("p99_tpot_ms", "{:,.1f}"),
           ("refused", "{:,}"))
OPTIONAL_COLUMNS = (("prefix_cache_hit_rate", "{:.1%}"), ("prefill_busy", "{:.0%}"),   # shown when a point
                    ("decode_busy", "{:.0%}"))                                         # reports it
SCALING_ONLY = ("scaling_efficiency",)     # against the fewest cards: only when the rack's size is an axis
HEADERS = {"model.quantization": "weights", "engine.kv_cache_dtype": "KV", "prefix_cache_hit_rate": "prefix hits", "window_output_throughput": "out tok/s", "scaling_efficiency": "efficiency",
           "output_tokens_per_s_per_watt": "tok/s/W", "p99_ttft_ms": "TTFT p99 ms", "p99_tpot_ms": "TPOT p99 ms",
           "prefill_busy": "P busy", "decode_busy": "D busy", "router.prefill_instances": "prefill inst",
           "router.kv_transfer": "KV sent"}


def render(rows: list[dict], axes: list[str], console: Console, title: str = "sweep") -> None:
    t = Folding(title=title)
    columns = COLUMNS + tuple(c for c in OPTIONAL_COLUMNS if any(c[0] in row for row in rows))
    if not _scaling(axes):
        columns = tuple(c for c in columns if c[0] not in SCALING_ONLY)
    for name in axes:
        t.add_column(HEADERS.get(name, name.rsplit(".", 1)[-1]))
    for name, _ in columns:
        t.add_column(HEADERS.get(name, name), justify="right")
    for row in rows:
        figures = ([fmt.format(row[name]) if name in row else "" for name, fmt in columns] if "error" not in row else
                   ["[red]failed[/]"] + [""] * (len(columns) - 1))
        t.add_row(*[str(row[a]) for a in axes], *figures)
    console.print(t)
    for row in rows:
        if "error" in row:
            console.print(f"[red]failed[/] {', '.join(f'{a}={row[a]}' for a in axes)}: {row['error']}")


def render_capacity(results: list[dict], axes: list[str], console: Console) -> None:
    t = Folding(title="capacity: highest request rate meeting the SLOs")
    for name in axes + ["capacity req/s", "out tok/s there", "first failing req/s", "runs"]:
        t.add_column(name, justify="right")
    for res in results:
        if "error" in res:
            t.add_row(*[str(res["point"][a]) for a in axes], f"[red]failed: {res['error']}[/]", "", "", "")
            continue
        bad = res["first_failing_rate"]
        t.add_row(*[str(res["point"][a]) for a in axes], f"{res['capacity_rate']:.2f}",
                  f"{res['output_throughput_at_capacity']:,.0f}", "—" if bad is None else f"{bad:.2f}",
                  str(len(res["trials"])))
    console.print(t)


def _scaling(axes: list[str]) -> bool:
    return any(a in SCALING_AXES for a in axes)


def _independent(rows: list[dict], axes: list[str]) -> list[str]:
    """The axes after the first that split the plot's lines, less any that only follows the others (a
    70B model's TP that follows its weight format): one line per combination of the rest."""
    kept = list(axes[1:])
    for a in axes[1:]:
        rest = [b for b in kept if b != a]
        keys = [tuple(str(r[b]) for b in [axes[0], *rest]) for r in rows]
        if len(set(keys)) == len(keys):
            kept = rest
    return kept


def plot(rows: list[dict], axes: list[str], path) -> bool:
    """Tokens/s (with the ideal linear line) , tokens/s per watt and latency vs the first axis.
    Returns False when matplotlib is not installed (``pip install rsd-ray[plot]``)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    x_axis = axes[0]
    scaling = _scaling(axes[:1])
    series = defaultdict(list)
    ran = [r for r in rows if "error" not in r]
    lines = _independent(ran, axes)
    for row in ran:
        series[", ".join(f"{a}={row[a]}" for a in lines) or "run"].append(row)
    fig, (ax_tps, ax_w, ax_lat) = plt.subplots(1, 3, figsize=(15, 4.5))
    for label, group in series.items():
        xs = [r["cards"] if scaling else r[x_axis] for r in group]
        ticks = [str(x) for x in xs]
        pos = xs if all(isinstance(x, (int, float)) for x in xs) else list(range(len(xs)))
        ax_tps.plot(pos, [r["window_output_throughput"] for r in group], "o-", label=label)
        if scaling:
            ax_tps.plot(pos, [r["ideal_output_throughput"] for r in group], "k--", alpha=0.5, label=f"ideal ({label})")
            for p, r in zip(pos, group):
                ax_tps.annotate(f"{r['scaling_efficiency']:.0%}", (p, r["window_output_throughput"]), fontsize=8,
                                textcoords="offset points", xytext=(0, -12), ha="center")
        ax_w.plot(pos, [r["output_tokens_per_s_per_watt"] for r in group], "o-", label=label)
        for key, style in (("median_ttft_ms", "o-"), ("p99_ttft_ms", "o--"), ("p99_tpot_ms", "s:")):
            ax_lat.plot(pos, [r[key] for r in group], style, label=f"{key} {label}" if len(series) > 1 else key)
        for ax in (ax_tps, ax_w, ax_lat):
            if pos != xs:
                ax.set_xticks(pos, ticks)
    xlabel = "cards" if scaling else x_axis
    for ax, title in ((ax_tps, "output tokens/s"), (ax_w, "output tokens/s per watt"), (ax_lat, "latency (ms)")):
        ax.set_xlabel(xlabel)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    ax_lat.set_yscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
