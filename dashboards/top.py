"""`rsd-ray top`: the rack on one screen, from telemetry frames (``rsd_ray.report.telemetry``).

``render(frame, history, width, height, metric)`` is a pure function of frames, so
tests render recorded streams into a recording console; ``run_top`` drives it live
(``q`` quits; ``u`` ``p`` ``t`` ``m`` colour the rack by utilisation, power,
temperature or memory). Below 120×40 the panels fold into one column.
"""
from __future__ import annotations

import select
import sys
import threading
from collections import deque
from contextlib import contextmanager

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

METRICS = {  # key: (label, value in [0, 1], as printed)
    "util": ("utilisation", lambda c: c["util"], lambda c: f"{100 * c['util']:.0f}%"),
    "power": ("power", lambda c: c["power_w"] / POWER_SCALE_W, lambda c: f"{c['power_w']:.0f} W"),
    "temp": ("temperature", lambda c: (c["temperature_c"] - 25.0) / 70.0, lambda c: f"{c['temperature_c']:.0f} °C"),
    "memory": ("memory", lambda c: c["memory_used"] / c["memory_total"] if c["memory_total"] else 0.0,
               lambda c: f"{c['memory_used'] / 2 ** 30:.1f} GiB"),
}
KEYS = {"u": "util", "p": "power", "t": "temp", "m": "memory"}
POWER_SCALE_W = 120.0     # the colour scale's top for card power (an ATOM card peaks near 90 W here)
SPARK = "▁▂▃▄▅▆▇█"
LARGE = (120, 40)
KEY_POLL_S = 0.1


def _colour(x: float) -> str:
    """Grey (idle) → green → yellow → red."""
    x = min(1.0, max(0.0, x))
    if x < 0.02:
        return "grey35"
    r, g = (int(510 * x), 200) if x < 0.5 else (255, int(200 * (2 - 2 * x)))
    return f"rgb({min(r, 255)},{g},60)"


def rack_grid(frame: dict, metric: str, keys: bool = True) -> Text:
    """One row per server, one cell per card; ✗ a lost card, ▲ a throttled one."""
    head, cards = frame["header"], {c["card"]: c for c in frame["cards"]}
    per = head["cards_per_server"]
    value = METRICS[metric][1]
    out = Text()
    for s in range(head["servers"]):
        out.append(f"s{s:02d} ", style="bold")
        for k in range(per):
            c = cards.get(s * per + k)
            if c is None:
                out.append("· ", style="grey35")
            elif c["lost"]:
                out.append("✗ ", style="bold red")
            else:
                out.append("▲ " if c["throttled"] else "■ ", style=_colour(value(c)))
        out.append("\n")
    out.append(f"{METRICS[metric][0]}: ", style="dim")
    for x in (0.0, 0.25, 0.5, 0.75, 1.0):
        out.append("■", style=_colour(x))
    out.append("  ✗ lost  ▲ throttled" + ("  [u]til [p]ower [t]emp [m]em [q]uit" if keys else ""), style="dim")
    return out


def header_line(frame: dict) -> Text:
    h = frame["header"]
    pace = frame.get("pace")
    text = Text()
    text.append(f"{h['rack']}", style="bold cyan")
    text.append(f" · {h['model']} TP {h['tp']} · {h['instances']} instances · router {h['router']}\n")
    text.append(f"t {frame['t']:.1f} s", style="bold")
    if pace is not None:
        text.append(f" · pace {pace:g} · lag {frame['lag_s']:.2f} s", style="red" if frame["lag_s"] > 1 else "")
    text.append(f" · {frame['throughput']:,.0f} tok/s", style="bold green")
    return text


def spark(values: list, width: int) -> str:
    vals = [v for v in values if v is not None][-width:]
    if not vals:
        return ""
    top = max(vals) or 1.0
    return "".join(SPARK[min(len(SPARK) - 1, int(v / top * (len(SPARK) - 1)))] for v in vals)


def _ms(x) -> str:
    return "-" if x is None else f"{1000 * x:.0f}"


SERIES = {"throughput": "tok/s", "ttft_p50": "TTFT p50", "ttft_p99": "TTFT p99", "tpot_p50": "TPOT p50",
          "tpot_p99": "TPOT p99"}


def sparklines(history, width: int, keys=tuple(SERIES)) -> Text:
    frames = list(history)
    last = frames[-1]
    rows = [(SERIES[k], k, f"{last[k]:,.0f}" if k == "throughput" else _ms(last[k]) + " ms") for k in keys]
    text = Text()
    for n, (label, key, now) in enumerate(rows):
        text.append(f"{label:<9}", style="bold")
        text.append(spark([f[key] for f in frames], max(8, width - 24)), style="green" if key == "throughput" else "cyan")
        text.append(f" {now}" + ("\n" if n < len(rows) - 1 else ""))
    return text


def instances_table(frame: dict, rows: int) -> Table:
    t = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    for name in ("inst", "run", "wait", "KV", "tok/s", "routed"):
        t.add_column(name, justify="right")
    insts = sorted(frame["instances"], key=lambda i: -i["tokens_per_s"])
    for i in insts[:rows]:
        style = "bold red" if i["failed"] else ""
        t.add_row(f"{i['instance']}{' ✗' if i['failed'] else ''}", str(i["running"]), str(i["waiting"]),
                  f"{100 * i['kv_usage']:.0f}%", f"{i['tokens_per_s']:,.0f}",
                  "-" if i.get("routed") is None else str(i["routed"]), style=style)
    if len(insts) > rows:
        t.caption = f"{len(insts) - rows} more"
    return t


def instances_line(frame: dict) -> Text:
    insts = frame["instances"]
    kv = sum(i["kv_usage"] for i in insts) / len(insts) if insts else 0.0
    return Text(f"running {sum(i['running'] for i in insts)} · waiting {sum(i['waiting'] for i in insts)}"
                f" · KV {100 * kv:.0f}% · failed {sum(i['failed'] for i in insts)} · done {frame['completed']}"
                f" · refused {frame.get('refused', 0)}")


def links_table(frame: dict, rows: int) -> Table:
    t = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    t.add_column("link")
    t.add_column("use", justify="right")
    for link in frame["links"][:rows]:
        t.add_row(link["link"], f"{100 * link['util']:.1f}%")
    return t


def alerts_text(frame: dict) -> Text:
    if not frame["alerts"]:
        return Text("no alerts", style="dim green")
    return Text("  ".join(f"⚠ {a}" for a in frame["alerts"]), style="bold yellow")


def render(frame: dict, history, width: int, height: int, metric: str = "util"):
    """The whole screen for one frame (``history``: recent frames, the last being ``frame``)."""
    grid = rack_grid(frame, metric)
    if width < LARGE[0] or height < LARGE[1]:
        return Group(header_line(frame), grid, instances_line(frame),
                     sparklines(history, width, ("throughput", "ttft_p99", "tpot_p99")), alerts_text(frame))
    spare = max(4, height - frame["header"]["servers"] - 16)
    right = Group(Panel(instances_table(frame, spare), title=f"instances · router {frame['header']['router']}"),
                  Panel(links_table(frame, 6), title="busiest links"))
    body = Table.grid(expand=True)
    body.add_column(ratio=1)
    body.add_column(ratio=1)
    body.add_row(Panel(grid, title="rack"), right)
    return Group(header_line(frame), body, instances_line(frame), Panel(sparklines(history, width - 6),
                                                                        title="over time"), alerts_text(frame))


def _keys(state: dict) -> None:
    """Read single keys from a terminal (no Enter); q quits, u/p/t/m switch the colouring."""
    import termios
    import tty
    fd = sys.stdin.fileno()
    old = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        while not state["quit"]:
            if not select.select([sys.stdin], [], [], KEY_POLL_S)[0]:
                continue                           # look at state again: the terminal is restored on quit
            key = sys.stdin.read(1)
            if key in ("q", "Q", ""):
                state["quit"] = True
            elif key in KEYS:
                state["metric"] = KEYS[key]
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, old)


@contextmanager
def live_dashboard(console, metric: str = "util", history_len: int = 120):
    """Full-screen dashboard; yields ``show(frame) -> bool`` (False once the user pressed ``q``)."""
    from rich.live import Live
    state = {"metric": metric, "quit": False}
    keys = threading.Thread(target=_keys, args=(state,), daemon=True) if sys.stdin.isatty() else None
    if keys:
        keys.start()
    history: deque = deque(maxlen=history_len)
    with Live(console=console, screen=True, auto_refresh=False, transient=True) as live:
        def show(frame: dict) -> bool:
            if not state["quit"]:
                history.append(frame)
                live.update(render(frame, history, console.width, console.height, state["metric"]), refresh=True)
            return not state["quit"]
        try:
            yield show
        finally:
            state["quit"] = True
            if keys:
                keys.join(2 * KEY_POLL_S)


def run_top(frames, console, metric: str = "util") -> None:
    """Show each frame as it comes until ``q`` (or the stream ends)."""
    with live_dashboard(console, metric) as show:
        for frame in frames:
            if not show(frame):
                break
