import dataclasses

from rsd_ray.config import LengthSpec, load_part
from rsd_ray.rack.controller import Controller
from rsd_ray.rack.epoch import Needs
from rsd_ray.report.results import build
from tests.conftest import make_spec
from tests.one_instance import OneInstance


def traced_run(spec):
    """Run with the step trace on (a public part of every EpochOut); returns (doc, outcome, steps)."""
    controller = Controller(spec)
    steps = []

    def trace(out, _):
        steps.extend(out.steps)
    trace.needs = Needs(steps=True)
    outcome = controller.run([trace])
    return build(outcome), outcome, steps


def test_chunked_prefill_respects_the_token_budget():
    spec = make_spec(workload={"input": LengthSpec(mean=700), "concurrency": 6, "per_server": False},
                     engine={"max_num_batched_tokens": 256, "max_num_seqs": 8})
    doc, _, steps = traced_run(spec)
    assert doc["requests"]["completed"] > 0
    assert max(x[1] for *_, x in steps) == 256                # budgets are filled...
    assert all(x[1] <= 256 for *_, x in steps)                # ...never exceeded
    first_tokens = [x[2] for *_, x in steps if x[1] == 256]
    assert 0 in first_tokens                                  # some steps are pure prefill chunks of a 700-token prompt


def test_preemption_when_kv_blocks_run_short_and_everything_still_finishes():
    spec = make_spec(workload={"concurrency": 16, "per_server": False, "input": LengthSpec(mean=200),
                               "output": LengthSpec(mean=100)}, duration_s=3.0,
                     engine={"max_num_seqs": 16, "num_blocks_override": 40,    # squeeze every KV cache to 40 blocks
                             "max_model_len": 640})                      # ... which hold one 640-token sequence
    outcome = Controller(spec).run()
    doc = build(outcome)
    req = doc["requests"]
    assert req["preemptions"] > 0
    assert req["unfinished"] == 0 and req["completed"] == req["accepted"]
    for r in outcome.records:
        assert r.output_len == r.max_tokens
        assert list(r.token_times) == sorted(r.token_times)


def test_scheduler_never_exceeds_max_num_seqs():
    engine = dataclasses.replace(load_part("engines", "default", "t"), max_num_seqs=3)
    sched = OneInstance(engine, 1000)
    for i in range(10):
        sched.add(i, 20, 5)
    t = 0.0
    finished = 0
    while sched.has_work():
        out = sched.schedule()
        assert len(out.scheduled) <= 3
        t += 0.01
        finished += len(sched.update(out, t))
    assert finished == 10 and sched.free == 1000


def test_a_request_is_in_one_named_state_and_moves_as_vllm_moves_it():
    """Two seats, 9 blocks of 16 tokens. Two 60-token prompts (4 blocks each) run, the third waits for a
    seat. Their 65th tokens (the 5th step after the prefill) each need a 5th block and 1 is free: the first
    takes it, the last running one is preempted (back to waiting, to be recomputed); all finish in the end."""
    engine = dataclasses.replace(load_part("engines", "default", "t"), max_num_seqs=2)
    s = OneInstance(engine, 9)
    for rid in range(3):
        s.add(rid, 60, 8)
    s.update(s.schedule(), 1.0)
    assert [s.state(r) for r in range(3)] == ["RUNNING", "RUNNING", "WAITING"] and s.free == 1
    for t in range(2, 6):
        s.update(s.schedule(), float(t))       # tokens 61..64 fit the 4 blocks
    assert s.free == 1 and s.sched.preemptions[0] == 0
    s.update(s.schedule(), 6.0)
    assert [s.state(r) for r in range(3)] == ["RUNNING", "WAITING", "WAITING"] and s.sched.preemptions[0] == 1
    t = 6.0
    while s.has_work():
        s.update(s.schedule(), t)
        t += 1.0
    assert [s.state(r) for r in range(3)] == ["FINISHED"] * 3 and s.free == 9


def test_the_ledger_balances_only_when_every_request_is_in_one_state():
    from rsd_ray.engine.request import RequestRecord
    from rsd_ray.rack.ledger import balanced
    done = RequestRecord(rid=0, instance=0, arrival=0.0, prompt_len=1, max_tokens=1, token_times=(1.0,),
                         preemptions=0, finish=1.0)
    failed = RequestRecord(rid=1, instance=0, arrival=0.0, prompt_len=1, max_tokens=1, token_times=(),
                           preemptions=0, finish=None, error="no healthy instance can take it")
    assert balanced(3, 1, [done, failed])                 # 3 offered = 2 accepted (completed, errored) + 1 refused
    assert not balanced(3, 0, [done, failed])             # one offered request unaccounted for
    assert not balanced(3, 1, [done, done])               # one request recorded twice


def test_token_times_read_compare_and_add_as_a_tuple_would():
    import pickle

    import numpy as np
    import pytest

    from rsd_ray.engine.request import TokenTimes
    buffer = np.r_[0.5, 1.0, 1.5, np.zeros(10_000)]
    times = TokenTimes(buffer[1:3])                       # a view of the engine's buffer, as records hold them
    assert times == (1.0, 1.5) and (1.0, 1.5) == times and times != (1.0,) and times == TokenTimes([1.0, 1.5])
    assert len(times) == 2 and times[0] == 1.0 and times[-1] == 1.5 and times[1:] == (1.5,)
    assert list(times) == [1.0, 1.5] and times != [1.0, 1.5]               # as (1.0, 1.5) != [1.0, 1.5]
    assert np.array(times, copy=True).flags.writeable and 1.5 in times and times.index(1.5) == 1
    assert times + (2.5,) == (1.0, 1.5, 2.5) and () + times == (1.0, 1.5) and not TokenTimes() and times
    assert hash(times) == hash((1.0, 1.5)) and repr(times) == "(1.0, 1.5)" and type(times[0]) is float
    with pytest.raises(ValueError):
        times.array[0] = 9.0                              # read-only: a record never changes
    packed = pickle.dumps(times)                          # across Ray: its own two times, not the buffer
    assert pickle.loads(packed) == times and len(packed) < 1_000
