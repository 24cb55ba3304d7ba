"""--recover and --chaos: a lost card comes back after a time the link model sets, its instance rejoins and
throughput returns; random faults from a seed are the same faults, the same results, and lose no request."""
import json

import numpy as np
import pytest

from rsd_ray.calibration import CARD_RESTART_S, LINK_EFFICIENCY
from rsd_ray.config import ConfigError, load_run
from rsd_ray.rack.controller import Controller
from rsd_ray.rack.epoch import Needs
from rsd_ray.rack.faults import Fault, chaos, from_args
from rsd_ray.report.results import build, without_wall_clock
from rsd_ray.report.telemetry import attach
from tests.conftest import accounted

STEADY = {"arrival": "closed", "concurrency": 128, "per_server": True,     # capacity-bound, lengths that vary
          "input": {"dist": "lognormal", "mean": 512}, "output": {"dist": "lognormal", "mean": 128}}
FAULT_AT = 20.0


def steady_run(recover: bool, faults=(Fault("card", 5, FAULT_AT),), executor: str = "inline", **kw):
    spec = load_run(None, rack="atom-server", model="llama3-8b", tp=4, duration_s=40.0, workload=STEADY,
                    recover=recover)
    controller = Controller(spec, executor=executor, **kw)
    controller.inject(list(faults))
    return json.loads(json.dumps(build(controller.run())))


def level(doc) -> float:
    """Mean output tokens/s over the last 10 s of the window, 10-20 s after the fault (the closed loop's 1 s
    bins swing by ±15 %, and it is still ramping up over its first 20 s: only a run of the same load
    without the fault says what the level should be)."""
    series = np.array(doc["timeline"]["output_tokens_per_s"])
    assert doc["timeline"]["bin_s"] == 1.0 and len(series) >= 40
    return series[30:40].mean()


def test_after_a_card_fault_recovery_brings_throughput_back_within_5_percent():
    unharmed = level(steady_run(False, faults=()))
    for recover in (False, True):
        doc = steady_run(recover)
        after = level(doc)
        assert accounted(doc) and doc["requests"]["unfinished"] == 0 and doc["requests"]["retried"] > 0
        if recover:
            assert abs(after / unharmed - 1) < 0.05, (unharmed, after)
            (r,) = doc["recoveries"]
            assert r["instance"] == 1 and r["cards"] == [5] and r["t_failed"] == FAULT_AT
            assert doc["faults"]["recoveries"] == 1 and doc["faults"]["mean_recovery_s"] == r["duration_s"]
            assert not any(c["lost"] for c in doc["cards"]) and not any(i["failed"] for i in doc["instances"])
        else:                                       # the control: one instance of four gone for good
            assert after / unharmed < 0.95, (unharmed, after)
            assert doc["recoveries"] == [] and doc["cards"][5]["lost"] and doc["instances"][1]["failed"]


def test_recovery_time_is_the_restart_plus_the_shards_over_the_host_link_at_its_bandwidth_then():
    spec = load_run(None, rack="atom-server", model="llama3-8b", tp=4)
    link = spec.device.link.bandwidth_gbps * 1e9 * LINK_EFFICIENCY                    # 64 GB/s x 0.8
    weights = 8.03e9 * 2 / 4                                                          # Llama 3 8B, fp16, TP 4: ~4 GB
    doc = steady_run(True)
    load = doc["recoveries"][0]["load_s"]
    assert load == pytest.approx(doc["memory_plan"]["weights"] / link, rel=1e-12)
    assert load == pytest.approx(weights / link, rel=0.02)                            # ~78 ms, by hand
    assert doc["recoveries"][0]["duration_s"] == pytest.approx(CARD_RESTART_S + load, rel=1e-12)
    slow = steady_run(True, (Fault("link", 0, 1.0, 25.0, "sw0.0->card5"), Fault("card", 5, FAULT_AT)))
    assert slow["recoveries"][0]["load_s"] == pytest.approx(4 * load, rel=1e-12)      # its path keeps 25 %


def test_a_lost_server_is_not_recovered():
    doc = steady_run(True, (Fault("server", 0, FAULT_AT),))
    assert doc["recoveries"] == [] and all(i["failed"] for i in doc["instances"])
    assert accounted(doc) and doc["requests"]["errored"] > 0 and doc["requests"]["unfinished"] == 0


def test_a_card_that_aborted_hot_comes_back_out_of_p12():
    """Restarted, the card's governor starts again at full clock: in the epoch its instance rejoins (before
    any step), its frame is not P12 and not lost; in that hot air it aborts again later."""
    from tests.test_faults import MINI, quick_heating
    spec = quick_heating(load_run(None, **{**MINI, "duration_s": 8.0}, recover=True))
    controller = Controller(spec)
    controller.inject([Fault("ambient", 0, 0.2, 60.0)])
    seen = []

    def watch(out, n):
        seen.extend((r, {f.card: f for f in out.cards}) for r in out.recoveries)
    watch.needs = Needs(telemetry_every_s=spec.epoch_s / 2)      # card frames every epoch
    controller.run([watch])
    assert len(seen) >= 2 and all(cards for _, cards in seen)
    for recovery, cards in seen:
        for c in recovery.cards:
            assert not cards[c].lost and cards[c].p_state != "P12", (recovery, cards[c])


def test_recovery_is_shown_in_the_run_report(tmp_path, capsys):
    from rsd_ray.cli import main
    out = tmp_path / "r.json"
    assert main(["run", "--executor", "inline", "--duration", "30", "--fault", "card:5@10s", "--recover",
                 "--no-progress", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "recovered at 15.078 virtual s: instance 1 (cards [5])" in text
    assert "events" in text and "✗" in text and "↑" in text
    assert json.loads(out.read_text())["config"]["recover"] is True


def test_the_throughput_series_counts_each_token_in_its_own_second():
    from rsd_ray.report.metrics import throughput_series
    from rsd_ray.engine.request import RequestRecord
    records = [RequestRecord(0, 0, 0.0, 8, 4, (0.2, 0.9, 1.0, 2.5), 0, 2.5),
               RequestRecord(1, 0, 0.0, 8, 3, (1.5, 1.99, 3.99), 0, 3.99)]
    assert throughput_series(records, 4.0) == {"bin_s": 1.0, "output_tokens_per_s": [2.0, 3.0, 1.0, 1.0]}
    long = throughput_series(records, 1200.0)                     # at most 600 bins: 2 s each
    assert long["bin_s"] == 2.0 and long["output_tokens_per_s"][:2] == [2.5, 1.0] and len(long["output_tokens_per_s"]) == 600


class Args:
    def __init__(self, chaos=None, fault=()):
        self.chaos, self.fault = chaos, list(fault)


def test_chaos_draws_every_kind_from_the_seed_alone_within_the_window():
    spec = load_run(None, rack="rsd-rack", duration_s=600.0)
    faults = chaos(3, spec)
    assert faults == chaos(3, spec) and faults != chaos(4, spec)
    assert {f.kind for f in faults} == {"card", "server", "ambient", "link"}
    assert all(0 <= f.at_s < 600 for f in faults) and 15 <= len(faults) <= 50     # one every ~20 s
    assert [f.at_s for f in from_args(Args(3, ["card:1@5s"]), spec)] == sorted([5.0] + [f.at_s for f in faults])
    with pytest.raises(ConfigError, match="--chaos"):
        from_args(Args(-1), spec)


@pytest.mark.slow
def test_a_chaos_run_of_the_rack_loses_no_request_shows_its_failures_and_repeats_itself():
    spec = load_run(None, rack="rsd-rack", duration_s=40.0, recover=True)
    docs, frames = [], []
    for _ in range(2):
        controller = Controller(spec)
        controller.inject(chaos(7, spec))         # card, ambient, server, link, link
        telemetry = attach(controller)
        seen = []
        doc = build(controller.run([telemetry, lambda out, n: seen.append(telemetry.frame())]))
        docs.append(json.loads(json.dumps(without_wall_clock(doc))))
        frames.append(seen)
    doc = docs[0]
    assert docs[0] == docs[1]                                                # same seed, same outcome
    assert doc["status"] == "completed" and accounted(doc) and doc["requests"]["unfinished"] == 0
    assert doc["faults"]["injected"] and doc["faults"]["failures"] > 0 and doc["faults"]["recoveries"] > 0
    assert any(a.startswith("lost card") for f in frames[0] for a in f["alerts"])    # telemetry shows them
