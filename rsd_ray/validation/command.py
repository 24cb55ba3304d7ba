"""`rsd-ray validate`: the suite's table, predicted against measured, with the signed error of each row
and the median absolute error over the suite and per device–model pair."""
from __future__ import annotations

import json
import sys

from rsd_ray import signals
from rsd_ray.config.arguments import writable
from rsd_ray.validation.suite import PRIMARY, compare, load_rows, summary


def add_arguments(p) -> None:
    p.add_argument("--suite", help="a validation YAML (default: every shipped suite)")
    p.add_argument("--only", help="rows whose id contains this text")
    p.add_argument("--out", help="write the results JSON here")
    p.add_argument("--json", action="store_true", help="print the results JSON on stdout")


def run(args) -> int:
    from rich.console import Console
    from rich.progress import Progress

    from rsd_ray.config import ConfigError
    writable(args.out, "--out")
    rows = [r for r in load_rows(args.suite) if not args.only or args.only in r["id"]]
    if not rows:
        raise ConfigError("command line", "--only", args.only, "no row's id contains it; see the suite's ids")
    console = Console(stderr=args.json)
    with Progress(console=console, transient=True) as progress, signals.graceful(signals.RECORD):
        task = progress.add_task("replaying published rows", total=len(rows))
        results = compare(rows, on_row=lambda r: progress.advance(task))
    signum = signals.first_received()
    with signals.graceful(signals.RECORD):
        _report(args, console, results)
    if signum:
        print(f"rsd-ray: validate {signals.reason(signum)} after {len(results)} of {len(rows)} rows", file=sys.stderr)
    return signals.exit_code(0)


def _report(args, console, results) -> None:
    from rsd_ray.dashboards.tables import Folding
    doc = {"schema": "rsd-ray/validate/v1", **signals.status(), "results": results, "summary": summary(results)}
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(doc, fh, indent=1)
    if args.json:
        json.dump(doc, sys.stdout)
        print()
        return
    table = Folding(title=f"validation: {PRIMARY} (tok/s), predicted against measured")
    table.add_column("row", no_wrap=True)
    for col in ("measured", "predicted", "error", "TTFT ms meas / pred"):
        table.add_column(col, justify="right")
    for r in results:
        m, p, e = r["measured"], r["predicted"], r["error"][PRIMARY]
        ttft = f"{m['mean_ttft_ms']:,.0f} / {p['mean_ttft_ms']:,.0f}" if "mean_ttft_ms" in m else "—"
        table.add_row(r["id"], f"{m[PRIMARY]:,.1f}", f"{p[PRIMARY]:,.1f}", _error(e), ttft)
    console.print(table)
    s = doc["summary"]
    for title, key, names in (("median error by source", "by_source", ("source",)),
                              ("median error by device, model and TP", "by_group", ("device", "model", "tp"))):
        groups = Folding(title=title)
        for col in (*names, "rows", "median |error|", "median signed"):
            groups.add_column(col, justify="left" if col in names else "right")
        for g in s[key]:
            groups.add_row(*(str(g[n]) for n in names), str(g["rows"]), _error(g["median_abs_error"], signed=False),
                           f"{g['median_signed_error']:+.1%}")
        console.print(groups)
    if results:
        console.print(f"suite: {s['rows']} rows from {len(s['by_source'])} sources, median absolute error of "
                      f"{PRIMARY} {s['median_abs_error']:.1%}")
    if args.out:
        console.print(f"results: {args.out}")


def _error(e: float, signed: bool = True) -> str:
    """An error coloured by what it allows: green within 5 %, yellow within 10 %, red beyond."""
    colour = "green" if abs(e) <= 0.05 else "yellow" if abs(e) <= 0.10 else "red"
    return f"[{colour}]{e:+.1%}" if signed else f"[{colour}]{e:.1%}"
