"""The engine against the plain oracle of ``tests/oracle.py``: the same results, number for number, every
request's token timestamps included, in every regime the engine's rules branch on.

The oracle steps one request at a time, one step at a time, and the controller calls it at every epoch
boundary; the engine takes spans of decode steps in closed form and, where a case lets it (no sink acting
on the rack at given times), runs over quiet epochs in one call — so each case also holds spans and skipped
epochs equal to stepping."""
import dataclasses

import pytest

from rsd_ray.config import load_run
from rsd_ray.rack.controller import Controller
from rsd_ray.rack.epoch import Control, Kind, Needs
from rsd_ray.rack.faults import Fault
from tests.test_faults import quick_heating
from rsd_ray.report.results import build, without_wall_clock
from tests.test_rules import SlowCost
from tests.oracle import install


def run(spec, oracle: bool, kill=None, slow_card=None, silent=None, aborts=None, faults=()):
    controller = Controller(spec)
    if oracle:
        install(controller)
    controller.inject(faults)
    if slow_card is not None:                       # one card of instance 0 on a 3x slower cost model
        card = controller.executor.hosts[0].groups[0].cards[slow_card]
        card.cost = SlowCost(controller.plan.programs[slow_card], spec.device)
    seen = {"tokens": [], "steps": []}

    def collect(out, in_flight):
        seen["tokens"] += out.tokens
        seen["steps"] += out.steps
        if kill and out.t_end >= kill[0] - 1e-9 and not seen.get("killed"):
            seen["killed"] = controller.control(Control(Kind.CARD, kill[1])) or True
        if aborts and out.t_end >= aborts[0] - 1e-9 and not seen.get("aborted"):  # clients that went away
            seen["aborted"] = [controller.control(Control(Kind.ABORT, rid)) for rid in aborts[1]]
        if silent and out.t_end >= silent[0] - 1e-9 and not seen.get("silent"):   # as a dead actor on Ray
            group = controller.executor.hosts[0].groups[0]
            seen["silent"] = group.lost.setdefault(silent[1], group.frames(out.t_end)[silent[1]])
    collect.needs = Needs(tokens=True, steps=True, every_epoch=oracle or bool(kill or aborts or silent))
    calls, core = [], controller.executor.hosts[0].core

    def count(out, in_flight):
        calls.append(out.t_end)
    count.needs = Needs()
    outcome = controller.run([collect, count])
    doc = without_wall_clock(build(outcome))
    return doc | {"records": [dataclasses.asdict(r) for r in outcome.records], "calls": len(calls),
                  "span_steps": getattr(core, "span_steps", 0),
                  "token_events": streamed(seen["tokens"]), "trace": sorted(seen["steps"])}


def streamed(events) -> list:
    """Every request's streamed token times, joined (a call over several epochs streams them together)."""
    times: dict = {}
    for rid, new in events:
        times[rid] = times.get(rid, ()) + tuple(new)
    return sorted(times.items())


def assert_same(spec, spans: bool = True, **kw):
    """Every figure equal; and the engine took spans (unless the case's batches never rest: ``spans``)."""
    oracle, engine = run(spec, True, **kw), run(spec, False, **kw)
    assert oracle["requests"]["completed"] > 0
    for key in set(oracle) - {"calls", "span_steps"}:   # name the part that differs, not just "not equal"
        assert engine[key] == oracle[key], key
    assert (engine["span_steps"] > 0) == spans, engine["span_steps"]
    return oracle | {"skipped": oracle["calls"] - engine["calls"]}


def hot(spec):
    thermal = dataclasses.replace(spec.device.thermal, ambient_c=62.0)
    return dataclasses.replace(spec, device=dataclasses.replace(spec.device, thermal=thermal))


CASES = {
    "default closed loop": dict(rack="atom-server", duration_s=3.0),
    "decode heavy": dict(rack="atom-server", workload="decode-heavy", duration_s=3.0),
    "poisson, lognormal lengths": dict(rack="mini", model="tiny-llama", tp=2, workload="poisson", duration_s=3.0),
    "bursty, power of two": dict(rack="mini", model="tiny-llama", tp=2, workload="bursty", duration_s=3.0,
                                 router={"policy": "power_of_two"}),
    "layer pipelining": dict(rack="atom-server", workload="decode-heavy", duration_s=3.0,
                             compiler={"pipeline_chunks": 2}),
    # long quiet leaps, each ending where the look ahead says a finish may come (not at a finish every epoch)
    "light closed loop": dict(rack="mini", model="llama3-8b", tp=4, duration_s=4.0,
                              workload={"arrival": "closed", "concurrency": 3, "per_server": False,
                                        "input": {"dist": "fixed", "mean": 64},
                                        "output": {"dist": "uniform", "min": 30, "max": 300}}),
}


@pytest.mark.parametrize("case", CASES)
def test_engine_equals_oracle(case):
    doc = assert_same(load_run(None, **CASES[case]))
    assert doc["skipped"] > 0                         # the engine's controller ran over quiet epochs


def test_engine_equals_oracle_when_cards_throttle():
    spec = hot(load_run(None, rack="atom-server", workload="decode-heavy", duration_s=10.0))
    faster = dataclasses.replace(spec.device.thermal, tau_s=15.0)    # the preset's 30 s, as in 20 s of a run
    doc = assert_same(dataclasses.replace(spec, device=dataclasses.replace(spec.device, thermal=faster)))
    assert {c["p_state"] for c in doc["cards"]} == {"P10"}


def test_engine_equals_oracle_under_kv_pressure():
    spec = load_run(None, rack="mini", model="tiny-llama", tp=2, duration_s=2.0,
                    engine={"num_blocks_override": 60, "max_model_len": 960},
                    workload={"concurrency": 32, "input": {"mean": 200}, "output": {"mean": 300}})
    doc = assert_same(spec)
    assert doc["requests"]["preemptions"] > 0


def test_engine_equals_oracle_when_clients_abort_running_and_waiting_requests():
    spec = load_run(None, rack="mini", model="tiny-llama", tp=2, duration_s=2.0,
                    engine={"num_blocks_override": 60, "max_model_len": 960, "max_num_seqs": 4},
                    workload={"concurrency": 32, "input": {"mean": 200}, "output": {"mean": 300}})
    doc = assert_same(spec, aborts=(0.3, list(range(0, 40, 3))))
    aborted = [r for r in doc["records"] if r["error"] and r["error"].startswith("aborted")]
    assert len(aborted) >= 8                          # running and waiting ones, each ended once
    assert doc["requests"]["errored"] == len(aborted)


def test_engine_equals_oracle_when_cards_overheat_a_link_degrades_and_a_server_is_lost():
    spec = quick_heating(load_run(None, rack="mini", model="tiny-llama", tp=2, duration_s=3.0, workload="poisson"))
    doc = assert_same(spec, faults=[Fault("ambient", 0, 0.2, 60.0), Fault("link", 0, 0.5, 10.0, "card6->sw1.1"),
                                    Fault("server", 1, 1.5)])
    assert {c["p_state"] for c in doc["cards"][:4]} == {"P12"} and len(doc["failures"]) == 4


def test_engine_equals_oracle_when_lost_cards_recover_and_overheated_ones_abort_again():
    """--recover: instances rejoin empty (fresh KV blocks, an empty running matrix) and fill up again; in
    60 °C air the restarted cards abort again."""
    spec = quick_heating(load_run(None, rack="mini", model="tiny-llama", tp=2, duration_s=16.0, workload="poisson",
                                  recover=True))
    doc = assert_same(spec, faults=[Fault("card", 1, 0.5), Fault("card", 1, 7.0), Fault("ambient", 1, 2.0, 60.0)])
    assert len(doc["recoveries"]) >= 3 and doc["instances"][0]["failed"] is False
    assert {tuple(r["cards"]) for r in doc["recoveries"]} == {(1,), (4, 5), (6, 7)}    # both of a group abort


def test_engine_equals_oracle_when_prompts_outrun_the_token_budget():
    """Prompts longer than the budget are prefilled in chunks over several steps, so running requests
    share out the budget and the last of them get less than they lack, or nothing."""
    spec = load_run(None, rack="mini", model="tiny-llama", tp=2, duration_s=2.0, engine={"max_num_batched_tokens": 256},
                    workload={"arrival": "poisson", "rate": 10,
                              "input": {"dist": "uniform", "mean": 600, "min": 100, "max": 1100}})
    assert_same(spec)


def test_engine_equals_oracle_without_chunked_prefill():
    spec = load_run(None, rack="mini", model="tiny-llama", tp=1, duration_s=2.0, workload="poisson",
                    engine={"enable_chunked_prefill": False, "max_num_batched_tokens": 4096})
    assert_same(spec)


def test_engine_equals_oracle_offline_when_faults_fall_between_arrivals():
    """Offline, nothing arrives after t = 0, so the engine's controller runs the rack over long stretches
    of epochs: each fault must still land in the epoch that holds its time (the oracle runs every epoch)."""
    spec = load_run(None, rack="mini", model="tiny-llama", tp=2,
                    workload={"arrival": "offline", "num_prompts": 600, "input": {"mean": 200}, "output": {"mean": 1500}})
    doc = assert_same(spec, faults=[Fault("link", 0, 1.02, 10.0, "card1->sw0.0"), Fault("card", 5, 3.33)])
    assert doc["skipped"] > 0 and len(doc["failures"]) == 1 and doc["requests"]["retried"] > 0


def test_engine_equals_oracle_when_a_card_dies_mid_run():
    spec = load_run(None, rack="atom-server", duration_s=4.0)
    doc = assert_same(spec, kill=(1.0, 5))
    assert doc["requests"]["retried"] > 0 and len(doc["failures"]) == 1


def test_engine_equals_oracle_when_a_card_stops_answering_mid_epoch():
    """The card is found lost at its group's next step (as a Ray card actor that died): that instance
    stops there, the others run on, and its requests are retried elsewhere."""
    doc = assert_same(load_run(None, rack="atom-server", duration_s=4.0), silent=(1.0, 1))
    assert doc["requests"]["retried"] > 0 and [f["instances"] for f in doc["failures"]] == [[0]]
    assert doc["status"] == "completed"


def test_engine_equals_oracle_across_servers():
    """TP groups that span servers (8 cards over two 4-card servers), the rack stepped as one host inline."""
    spec = load_run(None, rack="mini", model="tiny-llama", tp=8, duration_s=2.0, workload="poisson")
    spec = dataclasses.replace(spec, rack=dataclasses.replace(spec.rack, servers=4))
    doc = assert_same(spec)
    assert doc["emulator"]["instances"] == 2


def test_engine_equals_oracle_when_layer_pipelining_waits_for_the_link():
    """Collectives as slow as a chunk's compute (a 2 GB/s card link): the pipeline's link stage binds."""
    spec = load_run(None, rack="atom-server", workload="decode-heavy", duration_s=2.0,
                    compiler={"pipeline_chunks": 4})
    slow = dataclasses.replace(spec.device.link, bandwidth_gbps=2.0)
    doc = assert_same(dataclasses.replace(spec, device=dataclasses.replace(spec.device, link=slow)))
    assert max(link["utilisation"] for link in doc["links"]) > 0.4          # the links are busy


def test_engine_equals_oracle_with_one_slow_card():
    """A group waits for its slowest card in both; the other instances do not."""
    spec = load_run(None, rack="atom-server", duration_s=3.0)
    doc = assert_same(spec, slow_card=1)
    busy = [i["busy_s"] / i["steps"] for i in doc["instances"]]
    assert busy[0] > 1.5 * max(busy[1:])


@pytest.mark.parametrize("engine", [{"admission": "reserve"}, {"async_scheduling": True}])
def test_engine_equals_oracle_with_the_engine_options(engine):
    spec = load_run(None, rack="mini", model="tiny-llama", tp=2, duration_s=2.0,
                    engine={"num_blocks_override": 60, "max_model_len": 960, **engine},
                    workload={"concurrency": 32, "input": {"mean": 200}, "output": {"mean": 300}})
    doc = assert_same(spec)
    assert (doc["requests"]["preemptions"] == 0) == (engine.get("admission") == "reserve")


def test_engine_equals_oracle_behind_a_saturated_gateway():
    spec = load_run(None, rack="mini", model="tiny-llama", tp=2, duration_s=2.0,
                    router={"policy": "least_loaded", "gateway_cores": 1},
                    workload={"concurrency": 64, "input": {"mean": 64}, "output": {"mean": 32}})
    doc = assert_same(spec)
    assert doc["frontend"]["max_wait_ms"] > 0
