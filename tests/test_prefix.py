"""Prefix caching and prefix-affinity routing (issue 14, part 2)."""
import json
import random

import numpy as np
import pytest

from rsd_ray.config import load_run
from rsd_ray.controller import Controller
from rsd_ray.prefix_cache import PrefixCache
from rsd_ray.results import build, without_wall_clock
from rsd_ray.router.prefix_affinity import PrefixAffinity


def shared_prefix_trace(path, requests=300, docs=40, rate=6.0, seed=0, hashes=True):
    """Mooncake-style: each prompt is one of ``docs`` shared 6-block documents plus 2 blocks of its own."""
    rng, rows, t, own = random.Random(seed), [], 0.0, 10_000
    for _ in range(requests):
        t += rng.expovariate(rate)
        ids = [rng.randrange(docs) * 100 + k for k in range(6)] + [own, own + 1]
        own += 2
        row = {"timestamp": int(t * 1000), "input_length": len(ids) * 512 - 100, "output_length": 32}
        rows.append({**row, "hash_ids": ids} if hashes else row)
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def run(path, policy="round_robin", cache=True, stepper="vector", duration=60.0):
    spec = load_run(None, rack="mini", model="llama3-8b", tp=2, duration_s=duration, workload=f"trace:mooncake:{path}",
                    router={"policy": policy}, engine={"enable_prefix_caching": cache})
    return without_wall_clock(build(Controller(spec, stepper=stepper).run()))


def test_the_cache_hits_leading_blocks_evicts_the_least_recent_and_counts_tokens():
    cache = PrefixCache(capacity_blocks=4, block_tokens=512)
    assert cache.admit((1, 2, 3), 1500) == 0                       # cold
    assert cache.admit((1, 2, 9), 1500) == 1024                    # two leading blocks; 9 is new
    assert cache.admit((1, 2, 3), 1000) == 999                     # capped: one token is always computed
    assert cache.admit((5, 6), 1024) == 0                          # 4 blocks max: 9 then... evicted, LRU first
    assert list(cache.blocks) == [2, 3, 5, 6] and cache.admit((1,), 600) == 0      # 1 was least recent
    assert (cache.queries, cache.hits) == (1500 + 1500 + 1000 + 1024 + 600, 1024 + 999)
    assert list(cache.blocks) == [3, 5, 6, 1]                      # adding 1 evicted 2
    assert cache.admit((3, 5), 600) == 599 and cache.admit((2, 3), 600) == 0 and cache.admit((), 50) == 0


def test_prefix_affinity_routes_to_the_owner_unless_loads_are_imbalanced():
    router = PrefixAffinity(3, None)
    eligible = np.ones(3, dtype=bool)
    assert router.choose(np.array([5, 0, 1]), eligible, (1, 2, 3)) == 1          # unknown: least loaded
    assert router.choose(np.array([0, 4, 0]), eligible, (1, 2, 7)) == 1          # owner of the leading run
    assert router.choose(np.array([0, 12, 0]), eligible, (1, 2, 8)) == 0         # imbalanced: least loaded
    assert router.choose(np.array([0, 4, 0]), eligible, (1, 2, 8)) == 0          # 1 and 2 now belong to 0
    assert router.choose(np.array([0, 4, 0]), np.array([False, True, True]), (1, 2)) == 2  # owner not eligible


def test_prefix_affinity_hits_more_and_answers_sooner_than_round_robin(tmp_path):
    path = shared_prefix_trace(tmp_path / "mc.jsonl")
    rr, pa = run(path, "round_robin"), run(path, "prefix_affinity")
    assert rr["requests"]["completed"] == pa["requests"]["completed"] == 300
    assert pa["summary"]["prefix_cache_hit_rate"] > rr["summary"]["prefix_cache_hit_rate"] + 0.1
    assert pa["summary"]["mean_ttft_ms"] < rr["summary"]["mean_ttft_ms"]
    off = run(path, "round_robin", cache=False)
    assert off["summary"]["mean_ttft_ms"] > rr["summary"]["mean_ttft_ms"]          # hits skip prefill work
    assert rr["summary"]["total_input_tokens"] == off["summary"]["total_input_tokens"]


def test_with_caching_off_the_hashes_change_nothing(tmp_path):
    with_ids = run(shared_prefix_trace(tmp_path / "a.jsonl"), cache=False, duration=20.0)
    without = run(shared_prefix_trace(tmp_path / "b.jsonl", hashes=False), cache=False, duration=20.0)
    for key in ("summary", "requests", "instances", "cards", "links"):
        assert with_ids[key] == without[key], key
    assert "prefix_cache_hits" not in with_ids["summary"]
    assert all(i["prefix_cache_queries"] == 0 for i in with_ids["instances"])


@pytest.mark.parametrize("policy", ["round_robin", "prefix_affinity"])
def test_vector_equals_reference_with_prefix_caching(tmp_path, policy):
    path = shared_prefix_trace(tmp_path / "mc.jsonl", requests=120)
    vector, reference = run(path, policy, stepper="vector", duration=20.0), run(path, policy, stepper="reference",
                                                                                  duration=20.0)
    for doc in (vector, reference):
        doc["emulator"].pop("steps_in_spans")
        for inst in doc["instances"]:
            inst.pop("span_steps")
    for key in reference:
        assert vector[key] == reference[key], key
    assert reference["summary"]["prefix_cache_hits"] > 0


def test_session_affinity_keeps_a_session_on_one_instance_and_moves_only_a_lost_ones():
    from rsd_ray.router.session_affinity import SessionAffinity
    router, loads = SessionAffinity(4, None), np.zeros(4, dtype=np.int64)
    every = np.ones(4, dtype=bool)
    home = {f"user{i}": router.choose(loads, every, f"user{i}") for i in range(400)}
    assert all(router.choose(np.array([9, 0, 0, 0]), every, s) == i for s, i in home.items())  # load ignored
    assert all(60 < list(home.values()).count(i) < 140 for i in range(4))                     # spread evenly
    without_2 = np.array([True, True, False, True])
    moved = {s: router.choose(loads, without_2, s) for s in home}
    assert all(moved[s] == i for s, i in home.items() if i != 2) and 2 not in moved.values()
    assert router.choose(np.array([3, 1, 2, 5]), every, "") == 1                              # none: least loaded


def test_a_conversation_stays_on_its_instance_in_a_run(tmp_path):
    turns = [{"id": f"conv{i % 5}", "conversations": [{"from": "human", "value": "q" * (40 + i)},
                                                     {"from": "gpt", "value": "a" * 80}]} for i in range(60)]
    path = tmp_path / "sg.json"
    path.write_text(json.dumps(turns))
    spec = load_run(None, rack="mini", model="tiny-llama", tp=2, duration_s=10.0, router={"policy": "session_affinity"},
                    workload={"arrival": "trace", "trace": {"format": "sharegpt", "path": str(path), "rate": 10.0}})
    outcome = Controller(spec).run()
    by_session = {}
    for r in outcome.records:                      # rid i is the i-th conversation of the file
        by_session.setdefault(f"conv{r.rid % 5}", set()).add(r.instance)
    assert len(outcome.records) == 60 and all(len(v) == 1 for v in by_session.values())
    assert len({i for v in by_session.values() for i in v}) > 1
