"""Faults injected at a virtual time (`--fault`): parsed or refused clearly; each kind fails what it should and
every accepted request still ends completed or with an explicit error, inline and on Ray."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from rsd_ray.config import ConfigError, load_run
from rsd_ray.rack.controller import Controller
from rsd_ray.rack.faults import Fault, parse
from rsd_ray.report.results import build
from tests.conftest import accounted

MINI = dict(rack="mini", model="tiny-llama", tp=2, workload="poisson", duration_s=2.0)


def test_fault_specs_parse():
    spec = load_run(None, **MINI)
    assert parse("card:3@1.5s", spec) == Fault("card", 3, 1.5)
    assert parse("server:1@1.9", spec) == Fault("server", 1, 1.9)
    assert parse("ambient:server0=+15C@0.5s", spec) == Fault("ambient", 0, 0.5, 15.0)
    assert parse("ambient:server1=-5C@1s", spec).value == -5.0
    assert parse("link:card0->sw0.0=25%@1s", spec) == Fault("link", 0, 1.0, 25.0, "card0->sw0.0")


@pytest.mark.parametrize("spec", ["card:x@1", "card:3", "card:8@1s", "server:2@1", "ambient:server0=15@1",
                                  "card:1@-1s", "card:1@nans", "disk:1@1", "ambient:server0=infC@1",
                                  "link:card9->sw0.0=25%@1s", "link:card0->sw0.0=0%@1s", "link:card0->sw0.0=150%@1s",
                                  "link:card0->sw0.0=25@1s", "card:1@2s"])      # the run's arrivals end at 2 s
def test_bad_fault_specs_are_refused_with_the_syntax(spec):
    with pytest.raises(ConfigError) as err:
        parse(spec, load_run(None, **MINI))
    assert "--fault" in str(err.value) and spec in str(err.value)


def run(faults, **overrides):
    spec = load_run(None, **{**MINI, **overrides})
    controller = Controller(spec)
    controller.inject([parse(f, spec) for f in faults])
    outcome = controller.run()
    return json.loads(json.dumps(build(outcome)))      # as the results file has it


def test_a_card_fault_fails_its_instance_at_its_time_and_loses_no_request():
    doc = run(["card:3@0.5s"])
    assert accounted(doc) and doc["requests"]["unfinished"] == 0 and doc["requests"]["completed"] > 0
    (failure,) = doc["failures"]
    assert failure["kind"] == "card" and failure["cards"] == [3] and failure["instances"] == [1]
    assert 0.5 <= failure["t"] < 0.5 + doc["config"]["epoch_s"] + 1e-9
    assert doc["requests"]["retried"] > 0 and doc["instances"][1]["failed"]


def test_a_server_fault_loses_every_card_of_that_server():
    doc = run(["server:1@0.5s"])
    assert accounted(doc) and doc["requests"]["unfinished"] == 0
    assert {f["kind"] for f in doc["failures"]} == {"server"}
    assert sorted(i for f in doc["failures"] for i in f["instances"]) == [2, 3]
    assert [c["card"] for c in doc["cards"] if c["lost"]] == [4, 5, 6, 7]
    assert [i["failed"] for i in doc["instances"]] == [False, False, True, True]


def test_warmer_air_throttles_that_server_only():
    spec = quick_heating(load_run(None, **{**MINI, "duration_s": 4.0}))
    docs = []
    for faults in ([], [Fault("ambient", 0, 0.5, 33.0)]):           # 68 °C air: throttles, stays under abort
        controller = Controller(spec)
        controller.inject(faults)
        docs.append(json.loads(json.dumps(build(controller.run()))))
    base, warm = docs
    assert all(c["throttled_s"] == 0 for c in base["cards"])
    assert [c["throttled_s"] > 0 for c in warm["cards"]] == [True] * 4 + [False] * 4
    assert [c["temperature_c"] > 75 for c in warm["cards"]] == [True] * 4 + [False] * 4
    assert warm["cards"][4:] == base["cards"][4:]                      # the other server is untouched
    assert accounted(warm) and not warm["failures"]


def test_a_degraded_link_slows_exactly_the_group_whose_traffic_crosses_it():
    """Round robin over Poisson arrivals: every instance gets the same requests either way."""
    spec = load_run(None, **{**MINI, "router": {"policy": "round_robin"}})
    docs = []
    for faults in ([], [Fault("link", 0, 0.0, 5.0, "card0->sw0.0")]):
        controller = Controller(spec)
        controller.inject(faults)
        docs.append(json.loads(json.dumps(build(controller.run()))))
    base, slow = docs
    assert slow["instances"][1:] == base["instances"][1:]               # groups 1-3 never cross card0->sw0.0
    assert slow["instances"][0]["busy_s"] > base["instances"][0]["busy_s"]
    link = {l["link"]: l for l in slow["links"]}["card0->sw0.0"]
    assert link["bytes"] == {l["link"]: l for l in base["links"]}["card0->sw0.0"]["bytes"] > 0


def test_faults_on_the_command_line(tmp_path):
    out = tmp_path / "run.json"
    res = subprocess.run([sys.executable, "-m", "rsd_ray.cli", "run", "--executor", "inline", "--rack", "mini",
                          "--model", "tiny-llama", "--tp", "2", "--duration", "1", "--no-progress", "--fault",
                          "card:0@0.2s", "--fault", "ambient:server1=+10C@0.1s", "--out", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert [f["cards"] for f in json.loads(out.read_text())["failures"]] == [[0]]
    bad = subprocess.run([sys.executable, "-m", "rsd_ray.cli", "run", "--executor", "inline", "--fault", "card:1"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--fault" in bad.stderr and "Traceback" not in bad.stderr


def quick_heating(spec):
    """Cards with a 1 s thermal time constant (the preset's is 30 s), so heat shows within a short run."""
    quick = dataclasses.replace(spec.device.thermal, tau_s=1.0)
    return dataclasses.replace(spec, device=dataclasses.replace(spec.device, thermal=quick))


def test_thermal_runaway_throttles_then_aborts_the_cards_and_loses_no_request():
    spec = quick_heating(load_run(None, **MINI))
    controller = Controller(spec)
    controller.inject([Fault("ambient", 0, 0.2, 60.0)])             # 95 °C air: past the 85 °C abort
    doc = json.loads(json.dumps(build(controller.run())))
    assert accounted(doc) and doc["requests"]["unfinished"] == 0 and doc["requests"]["completed"] > 0
    assert all("abort temperature" in f["reason"] for f in doc["failures"])
    assert sorted(i for f in doc["failures"] for i in f["instances"]) == [0, 1]
    cards = doc["cards"]
    assert [c["lost"] for c in cards] == [True] * 4 + [False] * 4
    assert all(c["p_state"] == "P12" and c["temperature_c"] >= 85.0 and c["throttled_s"] > 0 for c in cards[:4])
