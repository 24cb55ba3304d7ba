"""Service classes: the priority policy's queue and preemption (vLLM's ``--scheduling-policy priority``),
pinned by hand on one instance, and classes drawn from the workload and measured apart."""
import dataclasses

import pytest

from rsd_ray.config import ConfigError, load_part, load_run, replace
from rsd_ray.config.specs import ServiceClassSpec
from rsd_ray.engine.table import State
from tests.conftest import run_doc
from tests.one_instance import OneInstance


def _engine(policy, **changes):
    return dataclasses.replace(load_part("engines", "default", "t"), scheduling_policy=policy, **changes)


@pytest.mark.parametrize("policy,order", [("fcfs", [0, 1, 2]), ("priority", [1, 2, 0])])
def test_the_waiting_queue_is_served_by_priority_then_arrival(policy, order):
    """One seat: requests 0 (priority 1, t = 0), 1 and 2 (priority 0, t = 0.1 and 0.2) wait; first come first
    served takes 0, 1, 2; the priority policy 1, 2, then 0."""
    s = OneInstance(_engine(policy, max_num_seqs=1), 100)
    for rid, (priority, t) in enumerate([(1, 0.0), (0, 0.1), (0, 0.2)]):
        s.add(rid, 16, 1, priority=priority, arrival=t)
    served = []
    for t in range(3):
        step = s.schedule()
        served += [rid for rid, _ in step.scheduled]
        s.update(step, float(t + 1))
    assert served == order


@pytest.mark.parametrize("policy", ["fcfs", "priority"])
def test_blocks_run_short_the_lowest_priority_request_is_preempted_even_when_scheduled_first(policy):
    """5 blocks of 16 tokens, 32 tokens a step. Request 0 (priority 1, 60-token prompt) prefills 32 tokens
    (2 blocks), then 28 (2 more); request 1 (priority 0, 64 tokens) joins that step with the 4 tokens left
    (1 block): none free, running order [0, 1]. Next step request 0 decodes in its 4th block; request 1's
    next 31 tokens need 2 more blocks. First come first served preempts the last running — request 1 itself —
    and request 0 decodes. The priority policy preempts request 0 — already scheduled this step, so it is
    taken out again — and request 1 prefills its 31 tokens in the blocks request 0 freed."""
    s = OneInstance(_engine(policy, max_num_batched_tokens=32, max_num_seqs=32), 5)
    s.add(0, 60, 50, priority=1)
    s.update(s.schedule(), 1.0)
    s.add(1, 64, 50, priority=0, arrival=0.5)
    second = s.schedule()
    assert second.scheduled == [(0, 28), (1, 4)] and s.free == 0
    s.update(second, 2.0)
    third = s.schedule()
    victim, runs, n = (1, 0, 1) if policy == "fcfs" else (0, 1, 31)
    assert third.preempted == 1 and third.scheduled == [(runs, n)]
    row = s.row(victim)
    assert s.table.state[s.rows[victim]] == State.WAITING and row.computed == 0 and row.blocks == 0
    assert s.row(runs).blocks == (4 if policy == "fcfs" else 3) and s.free == 5 - s.row(runs).blocks


def test_classes_are_drawn_by_share_and_measured_apart(tmp_path):
    """A closed loop of 128 clients on 4 instances, a fifth interactive (priority 0): drawn from their own seed,
    so arrivals and lengths are the classless run's; under the priority policy with 4 seats an instance the
    interactive class waits a fraction of the batch class's time, and the per-class figures add up."""
    classes = [ServiceClassSpec(name="interactive", share=0.2, priority=0),
               ServiceClassSpec(name="batch", share=0.8, priority=1)]
    base = load_run(None, rack="mini", model="tiny-llama", tp=2, duration_s=6.0)
    workload = dataclasses.replace(base.workload, concurrency=128, per_server=False)
    plain = dataclasses.replace(base, workload=workload)
    classed = dataclasses.replace(plain, workload=dataclasses.replace(workload, classes=classes))
    a, _ = run_doc(plain)
    b, _ = run_doc(classed)
    assert "by_class" not in a and a["summary"] == b["summary"]          # fcfs: the classes change nothing
    shares = {k: v["requests"] for k, v in b["by_class"].items()}
    assert sum(shares.values()) == b["requests"]["accepted"]
    assert 0.1 < shares["interactive"] / sum(shares.values()) < 0.3
    short = dataclasses.replace(classed, engine=dataclasses.replace(classed.engine, scheduling_policy="priority",
                                                                     max_num_seqs=4))
    c, _ = run_doc(short)
    inter, batch = c["by_class"]["interactive"], c["by_class"]["batch"]
    assert inter["median_ttft_ms"] < 0.2 * batch["median_ttft_ms"]                      # 71 ms against 813
    fcfs, _ = run_doc(dataclasses.replace(short, engine=dataclasses.replace(short.engine, scheduling_policy="fcfs")))
    alike = fcfs["by_class"]
    assert 0.7 < alike["interactive"]["median_ttft_ms"] / alike["batch"]["median_ttft_ms"] < 1.4
    assert inter["completed"] + batch["completed"] == c["summary"]["completed"]


def test_classes_must_have_their_own_names_and_shares_that_add_up():
    w = load_part("workloads", "default", "t")
    with pytest.raises(ConfigError, match="add up to 1"):
        replace(w, "test", classes=[ServiceClassSpec(name="a", share=0.5)])
    with pytest.raises(ConfigError, match="its own name"):
        replace(w, "test", classes=[ServiceClassSpec(name="a", share=0.5), ServiceClassSpec(name="a", share=0.5)])


def test_a_traces_priority_column_orders_the_queue_and_names_the_class(tmp_path):
    """A Mooncake trace whose rows say their priority (every fifth 0, the rest 1): the requests carry it into
    the scheduler and the results' classes (``priority 0``, ``priority 1``, as served requests' are); under
    the priority policy (4 seats an instance, a request a millisecond) the first class's median TTFT is
    340 ms against 2,540 (fcfs: 2,070 both). A priority that is not a whole number is refused with its line."""
    import json
    rows = [{"timestamp": k, "input_length": 400, "output_length": 256, "priority": 0 if k % 5 == 0 else 1}
            for k in range(400)]
    path = tmp_path / "mc.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    spec = load_run(None, rack="mini", model="tiny-llama", tp=2, duration_s=4.0, workload=f"trace:mooncake:{path}",
                    engine={"scheduling_policy": "priority", "max_num_seqs": 4})
    doc, outcome = run_doc(spec)
    assert {r.priority for r in outcome.records} == {0, 1}
    assert all(r.service_class == f"priority {r.priority}" for r in outcome.records)
    first, second = doc["by_class"]["priority 0"], doc["by_class"]["priority 1"]
    assert first["requests"] * 4 == pytest.approx(second["requests"], rel=0.05)
    assert first["median_ttft_ms"] < 0.5 * second["median_ttft_ms"]
    path.write_text(json.dumps({**rows[0], "priority": "high"}) + "\n")
    from rsd_ray.workload.trace_readers import check
    with pytest.raises(ConfigError, match="line 1.*priority must be a whole number"):
        check("mooncake", path)
