"""`rsd-ray top` and `rsd-ray smi`: watch a serving rack through its gRPC API (no Ray in this process)."""
from __future__ import annotations

import argparse
import json
import sys

import grpc

from rsd_ray import __version__
from rsd_ray.config import ConfigError
from rsd_ray.plugins import renderer

SMI_WIDTH = 100            # rbln-smi's tables are 99 columns: narrower, they would wrap
GT_PER_S = {3: "8.0 GT/s", 4: "16.0 GT/s", 5: "32.0 GT/s", 6: "64.0 GT/s", 7: "128.0 GT/s"}


def add_connect(p: argparse.ArgumentParser) -> None:
    p.add_argument("--connect", default="127.0.0.1:50051", help="the serving rack's gRPC address (HOST:PORT)")


def _client(args):
    from rsd_ray.serve.client import RackClient
    return RackClient(args.connect, timeout_s=10.0)


def _unreachable(args, err: grpc.RpcError) -> ConfigError:
    return ConfigError("command line", "--connect", args.connect,
                       f"no rack answers there ({err.code().name}); start one with `rsd-ray serve`")


def smi_json(snapshot: dict) -> dict:
    """rbln-smi's JSON from the rack's ``Smi`` answer: devices (temperature °C, card_power W, memory in bytes,
    util %) and contexts."""
    per = snapshot["cards_per_server"]
    devices = [{"npu": c["card"], "name": snapshot["device"], "device": f"rbln{c['card']}",
                "pci": {"bus_id": f"{c['card'] // per:04x}:{0x11 + c['card'] % per:02x}:00.0",
                        "link_speed": GT_PER_S.get(snapshot["pcie_gen"], "?"), "link_width": "x16"},
                "temperature": c["temperature_c"], "card_power": c["power_w"], "pstate": c["p_state"],
                "memory": {"used": c["memory_used"], "total": c["memory_total"]},
                "util": 100.0 * c["utilisation"], "lost": c["lost"]} for c in snapshot["cards"]]
    return {"KMD_version": f"rsd-ray {__version__}", "devices": devices, "contexts": snapshot["contexts"]}


def smi(args) -> int:
    from rich.console import Console
    try:
        with _client(args) as rack:
            doc = smi_json(rack.smi())
    except grpc.RpcError as err:
        raise _unreachable(args, err) from None
    if args.json:
        json.dump(doc, sys.stdout, indent=1)
        print()
    else:
        renderer("render_smi")(doc, Console(width=max(SMI_WIDTH, Console().width)))
    return 0


def top(args) -> int:
    from rich.console import Console
    if args.refresh <= 0:
        raise ConfigError("command line", "--refresh", args.refresh, "seconds between frames must be > 0")
    console = Console()
    try:
        with _client(args) as rack:
            frames = rack.telemetry(args.refresh)
            if args.snapshot:
                return _snapshot(frames, args)
            renderer("run_top")(frames, console, args.metric)
            frames.cancel()
    except grpc.RpcError as err:
        if err.code() == grpc.StatusCode.CANCELLED:
            return 0
        raise _unreachable(args, err) from None
    return 0


def _snapshot(frames, args) -> int:
    """Render the dashboard after ``--frames`` frames into an SVG (``--width`` × ``--height``), then stop."""
    import io
    from collections import deque

    from rich.console import Console
    history = deque(maxlen=120)
    for frame in frames:
        history.append(frame)
        if len(history) >= args.frames:
            break
    frames.cancel()
    console = Console(file=io.StringIO(), record=True, width=args.width, height=args.height, force_terminal=True)
    console.print(renderer("render_top")(history[-1], history, args.width, args.height, args.metric))
    console.save_svg(args.snapshot, title="rsd-ray top")
    print(f"wrote {args.snapshot}", file=sys.stderr)
    return 0


def add_smi_arguments(p: argparse.ArgumentParser) -> None:
    add_connect(p)
    p.add_argument("--json", action="store_true", help="rbln-smi's JSON field names")


def add_top_arguments(p: argparse.ArgumentParser) -> None:
    from rsd_ray.config.arguments import finite
    add_connect(p)
    p.add_argument("--refresh", type=finite(float), default=1.0, help="seconds between frames (default 1)")
    p.add_argument("--metric", default="util", choices=("util", "power", "temp", "memory"),
                   help="what colours the rack's cells (keys u p t m switch it live)")
    p.add_argument("--snapshot", help="save one frame as SVG (after --frames frames) instead of watching")
    p.add_argument("--frames", type=finite(int, 1), default=3, help="with --snapshot: frames to collect first")
    p.add_argument("--width", type=finite(int, 40), default=160, help="with --snapshot: columns")
    p.add_argument("--height", type=finite(int, 12), default=48, help="with --snapshot: rows")
