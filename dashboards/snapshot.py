"""The README's picture of `rsd-ray top`: `python -m rsd_ray.dashboards.snapshot [FILE.svg]`.

It records a telemetry stream from an inline run of the 224-card rack in hot air
(66 °C inlet: the cards throttle, under the 85 °C abort) that loses card 37 at 2 s, and renders its last
frame at 160×48 through rich's SVG export. Tests render the same stream.
"""
from __future__ import annotations

import dataclasses
import io
import json
import sys
from collections import deque

from rich.console import Console

from rsd_ray.config import load_run
from rsd_ray.rack.controller import Controller
from rsd_ray.dashboards.top import render
from rsd_ray.rack.epoch import Control, Kind
from rsd_ray.report.telemetry import attach, controller_frame

KILLED_CARD, KILLED_AT_S, HOT_AIR_C = 37, 2.0, 66.0   # 66 °C air: every card throttles, none reaches abort


def record(duration_s: float = 4.0) -> list[dict]:
    """One frame per card telemetry (every virtual second), as `rsd-ray top` receives them."""
    spec = load_run(None, rack="rsd-rack", duration_s=duration_s)
    thermal = dataclasses.replace(spec.device.thermal, ambient_c=HOT_AIR_C)
    spec = dataclasses.replace(spec, device=dataclasses.replace(spec.device, thermal=thermal))
    controller = Controller(spec)
    telemetry, frames, killed = attach(controller), [], []

    def sink(out, in_flight):
        telemetry(out, in_flight)
        if out.cards:
            frames.append(json.loads(json.dumps(controller_frame(controller, telemetry, pace=1.0, lag_s=0.02))))
        if out.t_end >= KILLED_AT_S and not killed:
            killed.append(controller.control(Control(Kind.CARD, KILLED_CARD)))
    sink.needs = telemetry.needs
    controller.run([sink])
    return frames


def main(path: str = "dashboards/top.svg", width: int = 160, height: int = 48) -> None:
    frames = record()
    console = Console(file=io.StringIO(), record=True, width=width, height=height, force_terminal=True)
    console.print(render(frames[-1], deque(frames), width, height, "util"))
    console.save_svg(path, title="rsd-ray top")
    print(f"wrote {path}")


if __name__ == "__main__":
    main(*sys.argv[1:2])
