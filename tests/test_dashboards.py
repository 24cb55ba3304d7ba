"""The dashboards as a person reads them: `rsd-ray top` from a recorded telemetry stream, rbln-smi's tables,
the run report and its SVG snapshot, and `rsd-ray top` live in tmux against a serving rack."""
from __future__ import annotations

import io
import json
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections import deque

import pytest
from rich.console import Console

from rsd_ray.config import load_run
from rsd_ray.rack.controller import Controller
from rsd_ray.dashboards.snapshot import KILLED_CARD as KILLED, record
from rsd_ray.dashboards.top import render
from tests.serve_helpers import LiveServer


@pytest.fixture(scope="module")
def stream():
    """Frames of a hot rsd-rack (its cards throttle) that lost card 37 at 2 s: the README's snapshot's stream."""
    return record()


def screen(frame, history, width, height, metric="util") -> list[str]:
    console = Console(file=io.StringIO(), record=True, width=width, height=height, force_terminal=True)
    console.print(render(frame, history, width, height, metric))
    return console.export_text().rstrip("\n").split("\n")


@pytest.mark.parametrize("size", [(80, 24), (200, 60)])
def test_the_dashboard_shows_every_server_the_lost_card_and_the_header(stream, size):
    width, height = size
    frame = stream[-1]
    lines = screen(frame, deque(stream), width, height)
    assert len(lines) <= height and max(len(line) for line in lines) <= width
    text = "\n".join(lines)
    rows = {line.split("s", 1)[1][:2]: line for line in lines if line.lstrip("│ ").startswith("s")
            and line.lstrip("│ ")[1:3].isdigit()}
    assert sorted(rows) == [f"{s:02d}" for s in range(14)]                 # each server's row
    cells = lambda s: rows[f"{s:02d}"].lstrip("│ ")[4:].split()[:16]        # noqa: E731
    assert cells(2)[5] == "✗" and all(c != "✗" for s in range(14) for k, c in enumerate(cells(s)) if (s, k) != (2, 5))
    assert "rsd-rack" in text and "llama3-8b TP 4" in text and "56 instances" in text
    assert f"t {frame['t']:.1f} s" in text and f"{frame['throughput']:,.0f} tok/s" in text
    assert "pace 1 · lag 0.02 s" in text
    assert f"lost card {KILLED}" in text and "failed instance 9" in text


def test_throttled_cards_are_marked_and_alerted(stream):
    frame = stream[-1]
    hot_cards = [c["card"] for c in frame["cards"] if c["throttled"]]
    assert hot_cards                                                         # the hot rack throttles
    text = "\n".join(screen(frame, deque(stream), 200, 60))
    assert "▲" in text and f"thermal throttling on {len(hot_cards)} cards" in text


def test_the_large_dashboard_has_instances_links_and_history(stream):
    frame = stream[-1]
    text = "\n".join(screen(frame, deque(stream), 200, 60))
    busiest = max(frame["instances"], key=lambda i: i["tokens_per_s"])
    assert f"{busiest['tokens_per_s']:,.0f}" in text
    assert frame["links"] and frame["links"][0]["link"] in text
    for label in ("tok/s", "TTFT p50", "TTFT p99", "TPOT p50", "TPOT p99"):
        assert label in text
    assert sum(i["routed"] for i in frame["instances"]) > 0


def test_the_metric_key_recolours_the_rack(stream):
    frame = stream[-1]
    for metric, label in (("power", "power:"), ("temp", "temperature:"), ("memory", "memory:")):
        assert label in "\n".join(screen(frame, deque(stream), 80, 24, metric))


def test_telemetry_rates_are_what_happened_in_the_last_second(stream):
    a, b = stream[-2], stream[-1]
    span = b["t"] - a["t"]
    assert span >= 1.0 - 1e-9
    for card_a, card_b in zip(a["cards"], b["cards"]):
        assert 0.0 <= card_b["util"] <= 1.0


def test_run_report_and_its_svg_snapshot(tmp_path):
    out = tmp_path / "report.svg"
    res = subprocess.run([sys.executable, "-m", "rsd_ray.cli", "run", "--executor", "inline", "--rack", "mini",
                          "--model", "tiny-llama", "--tp", "2", "--duration", "1", "--no-progress", "--snapshot",
                          str(out)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    for title in ("servers (window averages)", "instances", "the rack over the window"):
        assert title in res.stdout
    svg = ET.parse(out).getroot()
    assert svg.tag.endswith("svg")
    assert "Successful requests" in out.read_text().replace("&#160;", " ")


@pytest.fixture(scope="module")
def serving(tmp_path_factory):
    live = LiveServer(tmp_path_factory.mktemp("dash"), "--rack", "mini", "--model", "tiny-llama", "--tp", "2")
    yield live
    live.stop()


@pytest.mark.slow
def test_smi_json_matches_the_cards_ledgers(serving):
    res = subprocess.run([sys.executable, "-m", "rsd_ray.cli", "smi", "--json", "--connect",
                          f"127.0.0.1:{serving.grpc_port}"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    spec = load_run(None, rack="mini", model="tiny-llama", tp=2)
    controller = Controller(spec)
    ledgers = {card.card_id: card.ledger for group in controller.executor.hosts[0].groups.values()
               for card in group.cards}
    assert [d["npu"] for d in doc["devices"]] == list(range(8))
    for d in doc["devices"]:
        assert d["memory"] == {"used": ledgers[d["npu"]].used, "total": ledgers[d["npu"]].budget}
        assert d["device"] == f"rbln{d['npu']}" and d["pci"]["link_speed"] == "32.0 GT/s" and d["pstate"]
    assert sorted(c["npu"] for c in doc["contexts"]) == list(range(8))
    assert {c["ctx"] for c in doc["contexts"]} == {0, 1, 2, 3}
    text = subprocess.run([sys.executable, "-m", "rsd_ray.cli", "smi", "--connect", f"127.0.0.1:{serving.grpc_port}"],
                          capture_output=True, text=True, timeout=60).stdout
    assert "Device Information" in text and "Context Information" in text and "rbln7" in text


def test_smi_without_a_rack_says_so():
    res = subprocess.run([sys.executable, "-m", "rsd_ray.cli", "smi", "--connect", "127.0.0.1:9"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "--connect" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.slow
def test_top_in_tmux_against_a_serving_rack_under_load(serving, tmp_path):
    load = subprocess.Popen([sys.executable, "-m", "rsd_ray.cli", "bench", "--base-url", serving.base,
                             "--num-prompts", "400", "--random-input-len", "64", "--random-output-len", "64",
                             "--max-concurrency", "32"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    session = f"rsd-top-{serving.port}"
    cmd = f"{sys.executable} -m rsd_ray.cli top --connect 127.0.0.1:{serving.grpc_port} --refresh 0.3"
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "100", "-y", "30", cmd], check=True)
    try:
        deadline, screen_text = time.monotonic() + 30, ""
        while time.monotonic() < deadline:
            time.sleep(0.5)
            screen_text = subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True,
                                         text=True).stdout
            if "s01" in screen_text and " tok/s" in screen_text and "mini" in screen_text:
                break
        assert "mini" in screen_text and "tiny-llama TP 2" in screen_text, screen_text
        assert "s00" in screen_text and "s01" in screen_text and "tok/s" in screen_text, screen_text
        subprocess.run(["tmux", "send-keys", "-t", session, "t"], check=True)      # colour by temperature
        time.sleep(1.0)
        assert "temperature:" in subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True,
                                                text=True).stdout
        subprocess.run(["tmux", "send-keys", "-t", session, "q"], check=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and subprocess.run(["tmux", "has-session", "-t", session],
                                                             capture_output=True).returncode == 0:
            time.sleep(0.2)
        assert subprocess.run(["tmux", "has-session", "-t", session], capture_output=True).returncode != 0
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
        load.kill()
        load.wait()


@pytest.mark.parametrize("chunks", ["1", "2"])
def test_the_trace_is_chrome_trace_format_and_its_busy_time_per_card_is_the_results(tmp_path, chunks):
    trace, out = tmp_path / "trace.json", tmp_path / "run.json"
    res = subprocess.run([sys.executable, "-m", "rsd_ray.cli", "run", "--executor", "inline", "--duration", "2",
                          "--pipeline-chunks", chunks, "--no-progress", "--trace", str(trace), "--trace-window", "0:2",
                          "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    events = json.loads(trace.read_text())["traceEvents"]
    for e in events:
        assert {"ph", "ts", "pid", "tid"} <= set(e) or e["ph"] == "M"
        assert e["ph"] != "X" or ("dur" in e and e["dur"] >= 0)
    kinds = {e["cat"] for e in events if e["ph"] == "X"}
    assert {"neural_engine", "device_sync", "host"} <= kinds
    doc = json.loads(out.read_text())
    on_card = [e for e in events if e["ph"] == "X" and e["tid"] < 100000]
    for card in doc["cards"]:
        mine = sorted((e for e in on_card if e["tid"] == card["card"] and e["cat"] != "device_sync"),
                      key=lambda e: e["ts"])
        busy = sum(e["dur"] for e in mine) / 1e6
        assert busy == pytest.approx(card["utilisation"] * card["clock_s"], rel=1e-9)
        assert all(b["ts"] >= a["ts"] + a["dur"] - 1e-3 for a, b in zip(mine, mine[1:]))   # one engine: no overlap
    names = {e["args"]["name"] for e in events if e["ph"] == "M"}
    assert "card 0" in names and "instance 0 host" in names and "server 0" in names
    requests = [e for e in events if e.get("cat") == "request"]
    assert {e["ph"] for e in requests} == {"b", "n", "e"}


def test_a_bad_trace_window_is_refused():
    res = subprocess.run([sys.executable, "-m", "rsd_ray.cli", "run", "--executor", "inline", "--trace", "x.json",
                          "--trace-window", "3:1"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "--trace-window" in res.stderr and "Traceback" not in res.stderr
