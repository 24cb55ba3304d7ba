"""Sweeps: grids of run configurations in parallel, and capacity search under SLOs."""
import sys

from rsd_ray import signals
from rsd_ray.sweep.capacity import capacity_point, parse_slo, search
from rsd_ray.sweep.points import apply, grid, parse_axis
from rsd_ray.sweep.runner import run_point, run_points, run_spec
from rsd_ray.sweep.table import rows, write

__all__ = ["apply", "grid", "parse_axis", "run_point", "run_points", "run_spec", "rows", "write", "search",
           "capacity_point", "parse_slo", "run_sweep"]


def run_sweep(spec, axes, out_dir, workers=None, parallel="processes", console=None, title="sweep",
              progress=True):
    """Run the grid, write ``sweep.csv``, ``sweep.json`` and ``sweep.png`` into ``out_dir``; returns the rows."""
    from pathlib import Path

    from rich.console import Console
    from rich.progress import Progress

    from rsd_ray.plugins import renderer
    plot, render = renderer("plot_sweep"), renderer("render_sweep")

    console = console or Console()
    points = axes if isinstance(axes, list) and axes and isinstance(axes[0], dict) else grid(axes)
    names = list(points[0])
    for p in points:                       # refuse a bad point before running any
        apply(spec, p)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with Progress(console=console, transient=True, disable=not progress) as bar:
        task = bar.add_task(f"{title}: {len(points)} points", total=len(points))
        results = run_points(run_point, spec, points, workers, parallel, on_done=lambda _: bar.advance(task))
    signum = signals.first_received()
    with signals.graceful(signals.RECORD):      # what ran is written whatever comes now
        table = rows(results, names)
        write(table, results, out / "sweep.csv", out / "sweep.json", **signals.status())
        render(table, names, console, title)
        _plot(plot, table, names, out, console)
    if signum:
        print(f"rsd-ray: sweep {signals.reason(signum)}; the points that ran are in {out / 'sweep.json'}",
              file=sys.stderr)
    return table


def _plot(plot, table, names, out, console) -> None:
    if plot(table, names, out / "sweep.png"):
        console.print(f"wrote {out / 'sweep.csv'}, {out / 'sweep.json'}, {out / 'sweep.png'}")
    else:
        console.print(f"wrote {out / 'sweep.csv'}, {out / 'sweep.json'} (pip install 'rsd-ray[plot]' for PNG plots)")


def run_script(name: str, title: str, points: list[dict], argv=None, **base):
    """What every script in ``sweeps/`` does: parse a few flags, run the points, print and plot."""
    import argparse

    from rsd_ray.config import load_run

    ap = argparse.ArgumentParser(description=title)
    ap.add_argument("--duration", type=float, default=base.pop("duration_s", 60.0), help="virtual seconds per point")
    ap.add_argument("--workers", type=int, help="points at once (default: one per CPU)")
    ap.add_argument("--out-dir", default=f"sweep-results/{name}")
    args = ap.parse_args(argv)
    spec = load_run(None, duration_s=args.duration, **base)
    return run_sweep(spec, points, args.out_dir, args.workers, title=title)
