"""`rsd-ray sweep`: a grid (or capacity search) from the command line."""
from __future__ import annotations

import functools
import json
from pathlib import Path

from rich.console import Console
from rich.progress import Progress

from rsd_ray import signals
from rsd_ray.config.arguments import finite, writable_dir
from rsd_ray.plugins import renderer
from rsd_ray.sweep import capacity_point, grid, parse_axis, parse_slo, run_points, run_sweep
from rsd_ray.sweep.points import apply


def add_arguments(p) -> None:
    p.add_argument("--grid", action="append", required=True, metavar="FIELD=V1,V2,...",
                   help="an axis of the grid, e.g. rack.servers=1,2,4,7,14 or router.policy=round_robin,power_of_two "
                        "(repeat for more axes)")
    p.add_argument("--workers", type=finite(int, lo=1), help="points run at once (default: one per CPU)")
    p.add_argument("--parallel", choices=["processes", "ray"], default="processes",
                   help="processes on this machine, or Ray tasks on a cluster (with --address)")
    p.add_argument("--address", help="Ray cluster for --parallel ray (default: a local one)")
    p.add_argument("--out-dir", default="sweep-results", help="where sweep.csv, sweep.json and sweep.png go")
    p.add_argument("--capacity", action="store_true",
                   help="per point, search the highest Poisson rate that meets every --slo")
    p.add_argument("--slo", action="append", default=[], metavar="METRIC=LIMIT", help="e.g. p99_ttft_ms=2000")
    p.add_argument("--bisect-iterations", type=finite(int, lo=0), default=6)


def run(spec, args) -> int:
    console = Console()
    axes = [parse_axis(g) for g in args.grid]
    if args.parallel == "ray":
        from rsd_ray.plugins import get_executor
        with get_executor("ray").session(args.address, cards=0):
            return _run(spec, args, axes, console)
    return _run(spec, args, axes, console)


def _run(spec, args, axes, console) -> int:
    writable_dir(args.out_dir, "--out-dir")           # before any point runs, not after every one has
    if not args.capacity:
        run_sweep(spec, axes, args.out_dir, args.workers, args.parallel, console)
        return signals.exit_code(0)
    render_capacity = renderer("render_capacity")
    slos = dict(parse_slo(s) for s in args.slo) or {"p99_ttft_ms": 2000.0, "p99_tpot_ms": 100.0}
    points = grid(axes)
    for p in points:
        apply(spec, p)
    task = functools.partial(capacity_point, slos=slos, iterations=args.bisect_iterations)
    with Progress(console=console, transient=True) as bar:
        t = bar.add_task(f"capacity search: {len(points)} configurations", total=len(points))
        results = run_points(task, spec, points, args.workers, args.parallel, on_done=lambda _: bar.advance(t))
    out = Path(args.out_dir)
    with signals.graceful(signals.RECORD):
        (out / "capacity.json").write_text(json.dumps({"schema": "rsd-ray/capacity/v1", **signals.status(),
                                                       "results": results}, indent=1))
        render_capacity(results, [name for name, _ in axes], console)
        console.print(f"wrote {out / 'capacity.json'}")
    return signals.exit_code(0)
