"""What the epoch length changes, and what it must not.

It may change only: how stale the router's telemetry is, when closed-loop clients learn of a completion
(so when they send again), and where the governor samples. With one instance, an open loop and cards
that never throttle, none of those matters: every token must come out at the same time.
"""
import dataclasses

import pytest

from rsd_ray.config import load_run
from rsd_ray.rack.controller import Controller
from rsd_ray.report.results import build


def one_instance_open_loop(epoch_s):
    spec = load_run(None, rack="mini", model="tiny-llama", tp=4, duration_s=3.0, epoch_s=epoch_s,
                    workload={"arrival": "poisson", "rate": 30, "per_server": False})
    return dataclasses.replace(spec, rack=dataclasses.replace(spec.rack, servers=1))


def test_epoch_length_changes_nothing_for_one_instance_on_an_open_loop():
    runs = {e: Controller(one_instance_open_loop(e)).run() for e in (0.05, 0.25, 1.0)}
    docs = {e: build(o) for e, o in runs.items()}
    base = runs[0.05]
    assert docs[0.05]["emulator"]["instances"] == 1 and docs[0.05]["requests"]["completed"] > 50
    assert {c["p_state"] for c in docs[0.05]["cards"]} != {"P10"}
    for e in (0.25, 1.0):
        assert [r.token_times for r in runs[e].records] == [r.token_times for r in base.records]
        summary, ref = docs[e]["summary"], docs[0.05]["summary"]
        energy = {k for k in ref if any(w in k for w in ("power", "energy", "watt", "joule"))}
        assert {k: v for k, v in summary.items() if k not in energy} == {k: v for k, v in ref.items() if k not in energy}
        assert [summary[k] for k in sorted(energy)] == pytest.approx([ref[k] for k in sorted(energy)], rel=1e-9)
        for card, ref in zip(docs[e]["cards"], docs[0.05]["cards"]):     # idle time is split at other points
            assert card["energy_j"] == pytest.approx(ref["energy_j"], rel=1e-9)
            assert card["temperature_c"] == pytest.approx(ref["temperature_c"], rel=1e-9)


@pytest.mark.parametrize("epoch_s", [0.05, 0.25])
def test_closed_loop_clients_send_again_at_an_epoch_boundary(epoch_s):
    spec = load_run(None, rack="mini", model="tiny-llama", tp=2, duration_s=2.0, epoch_s=epoch_s,
                    workload={"concurrency": 8})
    outcome = Controller(spec).run()
    later = [r.arrival for r in outcome.records if r.arrival > 0]
    assert later, "no client sent a second request"
    assert all(abs(a / epoch_s - round(a / epoch_s)) < 1e-9 for a in later)
