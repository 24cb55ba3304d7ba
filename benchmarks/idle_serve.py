"""CPU of an idle `rsd-ray serve` on Ray: every process it started, while no client sends anything.

    python benchmarks/idle_serve.py [--rack atom-server] [--settle 10] [--seconds 20] [--fast | --no-fast]

Starts `rsd-ray serve --executor ray` on a private local Ray (every process carries a mark in its
environment, so Ray's GCS, raylet, agents, the serving actor, the host and every card actor are
counted, and nothing else), waits until it answers, lets start-up settle, then sums utime + stime
from /proc over ``--seconds``. Prints the total as % of one core and the share of each kind of
process; then stops the server with SIGTERM.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.processes import marked  # noqa: E402
from tests.serve_helpers import free_port  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def ticks(pids) -> dict[int, tuple[str, int]]:
    """pid → (kind of process, utime + stime in ticks)."""
    out = {}
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        name = stat.split("(", 1)[1].rsplit(")", 1)[0]
        kind = ("card actor" if "CardActor" in name else "host actor" if "HostActor" in name
                else "serving actor" if "ServeActor" in name else "rsd-ray serve" if "rsd_ray.cli" in cmd
                else "Ray: " + (name.removeprefix("ray::") if name.startswith("ray::") else name))
        out[pid] = (kind, int(fields[11]) + int(fields[12]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rack", default="atom-server")
    ap.add_argument("--settle", type=float, default=10.0, help="seconds after the server answers")
    ap.add_argument("--seconds", type=float, default=20.0, help="seconds measured")
    args = ap.parse_args()
    mark = f"RSD_RAY_IDLE_BENCH={uuid.uuid4().hex}"
    env = {**os.environ, mark.split("=")[0]: mark.split("=")[1]}
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        log = open(Path(tmp) / "serve.log", "w+")
        proc = subprocess.Popen([sys.executable, "-m", "rsd_ray.cli", "serve", "--executor", "ray", "--rack", args.rack,
                                 "--port", str(port), "--grpc-port", "0", "--no-progress"], env=env, stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 300
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise SystemExit(f"rsd-ray serve did not start:\n{log.read()[-2000:]}")
                time.sleep(0.5)
            time.sleep(args.settle)
            before = ticks(marked(mark.split("=")[1]))
            time.sleep(args.seconds)
            after = ticks(marked(mark.split("=")[1]))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)
    by_kind: dict[str, list[float]] = defaultdict(list)
    for pid, (kind, t) in after.items():
        if pid in before:
            by_kind[kind].append((t - before[pid][1]) / TICK / args.seconds * 100)
    total = sum(sum(v) for v in by_kind.values())
    table = Table(title=f"idle `rsd-ray serve --executor ray --rack {args.rack}`: % of one core over "
                        f"{args.seconds:g} s")
    table.add_column("processes")
    table.add_column("count", justify="right")
    table.add_column("% of a core, all", justify="right")
    table.add_column("each", justify="right")
    for kind, values in sorted(by_kind.items(), key=lambda kv: -sum(kv[1])):
        table.add_row(kind, str(len(values)), f"{sum(values):.1f}", f"{sum(values) / len(values):.2f}")
    table.add_row("total", str(sum(len(v) for v in by_kind.values())), f"{total:.1f}", "")
    Console().print(table)


if __name__ == "__main__":
    main()
