"""The reference engine's spans execute k decode steps in one call; results must equal step-by-step execution."""
import dataclasses

import pytest

from rsd_ray.config import load_run
from rsd_ray.controller import Controller
from rsd_ray.results import build, without_wall_clock


def both_ways(spec):
    """Both runs' documents (span counters aside), each with every request's token timestamps."""
    docs = []
    for spans in (False, True):
        outcome = Controller(spec, spans=spans, stepper="reference").run()
        docs.append(build(outcome) | {"token_times": [r.token_times for r in outcome.records]})
    span_steps = sum(i["span_steps"] for i in docs[1]["instances"])
    plain, spanned = (without_wall_clock(d) for d in docs)
    for d in (plain, spanned):
        d["emulator"].pop("steps_in_spans")
        for inst in d["instances"]:
            inst.pop("span_steps")
    return plain, spanned, span_steps


def hot(spec):
    thermal = dataclasses.replace(spec.device.thermal, ambient_c=62.0)
    return dataclasses.replace(spec, device=dataclasses.replace(spec.device, thermal=thermal))


CASES = {
    "default closed loop": dict(rack="atom-server", duration_s=6.0),
    "decode heavy": dict(rack="atom-server", workload="decode-heavy", duration_s=6.0),
    "poisson, lognormal lengths": dict(rack="mini", model="tiny-llama", tp=2, workload="poisson", duration_s=3.0),
    "bursty, power of two": dict(rack="mini", model="tiny-llama", tp=2, workload="bursty", duration_s=3.0,
                                 router={"policy": "power_of_two"}),
    "layer pipelining": dict(rack="atom-server", workload="decode-heavy", duration_s=3.0,
                             compiler={"pipeline_chunks": 2}),
}


@pytest.mark.parametrize("case", CASES)
def test_spans_equal_step_by_step(case):
    plain, spanned, span_steps = both_ways(load_run(None, **CASES[case]))
    assert span_steps > 0
    assert plain == spanned


def test_spans_equal_step_by_step_when_cards_throttle():
    spec = hot(load_run(None, rack="atom-server", workload="decode-heavy", duration_s=20.0))
    plain, spanned, span_steps = both_ways(spec)
    assert {c["p_state"] for c in plain["cards"]} == {"P10"}        # the governor did throttle mid-run
    assert span_steps > 0 and plain == spanned


def test_spans_equal_step_by_step_under_kv_pressure():
    spec = load_run(None, rack="mini", model="tiny-llama", tp=2, duration_s=2.0,
                    engine={"num_blocks_override": 60, "max_model_len": 960},
                    workload={"concurrency": 32, "input": {"mean": 200}, "output": {"mean": 300}})
    plain, spanned, span_steps = both_ways(spec)
    assert plain["requests"]["preemptions"] > 0 and span_steps > 0
    assert plain == spanned
