"""Prefix caching and prefix-affinity routing (issue 14, part 2)."""
import json
import random

import numpy as np
import pytest

from rsd_ray.config import load_run
from rsd_ray.rack.controller import Controller
from rsd_ray.engine.prefix_cache import PrefixCache
from rsd_ray.report.results import build, without_wall_clock
from rsd_ray.router.prefix_affinity import PrefixAffinity
from tests.oracle import install


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


def run(path, policy="round_robin", cache=True, oracle=False, duration=60.0, blocks=0, admission="preempt"):
    spec = load_run(None, rack="mini", model="llama3-8b", tp=2, duration_s=duration, workload=f"trace:mooncake:{path}",
                    router={"policy": policy}, engine={"enable_prefix_caching": cache, "num_blocks_override": blocks,
                                                         "admission": admission})
    controller = Controller(spec)
    if oracle:
        install(controller)
    return without_wall_clock(build(controller.run()))


def test_the_cache_hits_whole_leading_blocks_shares_them_and_evicts_only_free_ones_least_recent_first():
    cache = PrefixCache(block_tokens=512, size=32)                  # 512-token blocks of 32 16-token KV blocks
    assert cache.lookup((1, 2, 3), 1500, 1500, 1000) == ((), 0)     # cold
    assert cache.insert((1, 2, 3), 0, 1500 // 512) == [1, 2]        # full blocks only: 3 is 476 tokens
    assert cache.lookup((1, 2, 9), 1500, 1500, 1000) == ((1, 2), 0)   # held by the first: nothing to reclaim
    cache.pin((1, 2), 1500)
    assert cache.holders == {1: 2, 2: 2} and (cache.queries, cache.hits) == (1500, 1024)
    assert cache.release([1, 2]) == 0                               # still held by the other
    assert cache.release([1, 2]) == 64 and list(cache.free) == [2, 1]   # tail first: the prefix goes last
    assert cache.lookup((1, 2), 1100, 1100, 1000) == ((1, 2), 64)   # pinning free blocks takes them back
    assert cache.lookup((1, 2), 1024, 1024, 1000) == ((1,), 32)     # one token is always computed
    cache.trim(40)                                                  # 64 free cached blocks, 40 free: evict one
    assert cache.holders == {1: 0} and list(cache.free) == [1]
    cache.pin((1,), 600)
    cache.trim(0)                                                   # a held block is never evicted
    assert cache.holders == {1: 1} and not cache.free
    assert cache.insert((1, 5), 0, 2) == [5] and cache.holders == {1: 1, 5: 1}   # 1 was cached: stays own
    cache.clear()
    assert not cache.holders and (cache.queries, cache.hits) == (2100, 1536)


def test_chained_hashes_name_a_block_and_everything_before_it():
    from rsd_ray.engine.prefix_cache import chain_hashes
    a, b = chain_hashes("x y z w".split() * 2, 4), chain_hashes("q y z w x y z w".split(), 4)
    assert len(a) == 2 and a[0] != a[1]                       # the same words, another place: another block
    assert a[0] != b[0] and a[1] != b[1]                       # an equal block after a different one differs
    assert chain_hashes("x y z w x y z w k".split(), 4) == a   # a partial last block is not hashed
    assert chain_hashes([1, 2, 3, 4], 4) == chain_hashes([1, 2, 3, 4], 4) != chain_hashes([1, 2, 3, 5], 4)


def scheduler(num_blocks, cache=True):
    from rsd_ray.config.specs import EngineSpec
    from tests.one_instance import OneInstance
    return OneInstance(EngineSpec(enable_prefix_caching=cache), num_blocks)


def add(s, rid, hashes, prompt=1100, max_tokens=4):
    s.add(rid, prompt, max_tokens, hashes)


def test_a_shared_prefix_is_held_once_in_kv_memory():
    s = scheduler(150)
    add(s, 0, (1, 2, 3))
    s.update(s.schedule(), 1.0)                    # 1100 tokens: 69 blocks, of which 2 × 32 now cached
    a = s.row(0)
    assert (a.blocks, a.shared, a.pinned, s.free) == (5, 64, [1, 2], 81)
    for rid in range(1, 6):
        add(s, rid, (1, 2, 10 + rid))
    out = s.schedule()                             # each joins with 1024 tokens cached: 76 to compute, 5 blocks
    assert [n for _, n in out.scheduled] == [1] + [76] * 5
    assert len(s.running) == 6 and s.free == 81 - 5 * 5
    assert s.cache.holders == {1: 6, 2: 6} and out.shape[3] == 1101 + 5 * (76 * 1024 + 76 * 77 // 2)
    plain = scheduler(150, cache=False)            # without caching the second one fits, the third does not
    for rid in range(6):
        add(plain, rid, (1, 2, 10 + rid))
    plain.schedule()
    assert len(plain.running) == 2 and plain.free == 150 - 2 * 69


def test_finished_requests_leave_their_blocks_cached_until_memory_is_needed():
    s = scheduler(200)
    for rid, hashes in enumerate([(1, 2, 3), (4, 5, 6)]):
        add(s, rid, hashes, max_tokens=1)
        s.update(s.schedule(), 1.0)                # prefilled, one token, finished: all its blocks free
    assert s.free == 200 and list(s.cache.free) == [2, 1, 5, 4]
    add(s, 2, (4, 5, 7), prompt=1100 + 99 * 16, max_tokens=1)   # 1024 cached: 1660 to compute
    out = s.schedule()                             # 104 blocks: 32 left free, room for one free cached block
    assert s.free == 200 - 64 - 104 == 32 and s.cache.holders == {1: 0, 4: 1, 5: 1}  # 2 overwritten
    s.update(out, 2.0)                             # its third block is cached too; all of it is free again
    assert s.free == 200 and list(s.cache.free) == [1, 7, 5, 4]
    add(s, 3, (1, 2, 8), max_tokens=1)
    s.schedule()                                   # 1 is still there, 2 is not: one block's hit
    assert s.row(3).computed == 512 and s.cache.hits == 1024 + 512


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


@pytest.mark.parametrize("policy, blocks, admission", [("round_robin", 0, "preempt"), ("prefix_affinity", 0, "preempt"),
                                                       ("prefix_affinity", 1200, "preempt"),
                                                       ("prefix_affinity", 1200, "reserve")])
def test_engine_equals_oracle_with_prefix_caching(tmp_path, policy, blocks, admission):
    """1200 KV blocks: memory is short, so requests are preempted (or wait, under reserve) and free cached
    blocks are evicted."""
    path = shared_prefix_trace(tmp_path / "mc.jsonl", requests=120)
    engine, oracle = (run(path, policy, oracle=oracle, duration=20.0, blocks=blocks, admission=admission)
                      for oracle in (False, True))
    assert oracle["summary"]["prefix_cache_hits"] > 0
    for key in oracle:
        assert engine[key] == oracle[key], key
    assert (oracle["requests"]["preemptions"] > 0) == (blocks > 0 and admission == "preempt")


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


def conversation_run(tmp_path, faults=(), answer=80):
    """60 ShareGPT conversations of 5 ids; each request's record and the session it belongs to."""
    from rsd_ray.rack.faults import parse
    turns = [{"id": f"conv{i % 5}", "conversations": [{"from": "human", "value": "q" * (40 + i)},
                                                     {"from": "gpt", "value": "a" * answer}]} for i in range(60)]
    path = tmp_path / "sg.json"
    path.write_text(json.dumps(turns))
    spec = load_run(None, rack="mini", model="tiny-llama", tp=2, duration_s=10.0, router={"policy": "session_affinity"},
                    workload={"arrival": "trace", "trace": {"format": "sharegpt", "path": str(path), "rate": 10.0}})
    controller = Controller(spec)
    controller.inject([parse(f, spec) for f in faults])
    outcome = controller.run()
    assert len(outcome.records) == 60
    return [(r, f"conv{r.rid % 5}") for r in outcome.records]    # rid i is the i-th conversation of the file


def test_a_conversation_stays_on_its_instance_in_a_run(tmp_path):
    by_session = {}
    for r, session in conversation_run(tmp_path):
        by_session.setdefault(session, set()).add(r.instance)
    assert all(len(v) == 1 for v in by_session.values())
    assert len({i for v in by_session.values() for i in v}) > 1


def test_a_lost_instances_conversations_move_whole_to_one_new_home(tmp_path):
    records = conversation_run(tmp_path, answer=2000)                     # long answers: in flight at the fault
    home = {session: r.instance for r, session in records}
    lost = home["conv0"]
    after = conversation_run(tmp_path, [f"card:{2 * lost}@1.0s"], answer=2000)           # TP 2: instance i has cards 2i, 2i+1
    moved = {}
    for r, session in after:
        if session in (s for s, i in home.items() if i == lost) and (r.retries or r.arrival > 1.5):
            moved.setdefault(session, set()).add(r.instance)
    assert any(r.retries for r, _ in after) and moved
    assert all(len(v) == 1 and lost not in v for v in moved.values())        # retried ones too: one new home
    assert all(r.instance == home[s] for r, s in after if home[s] != lost)    # the others never moved


def test_a_hash_block_must_be_whole_kv_blocks():
    from rsd_ray.config import ConfigError
    with pytest.raises(ConfigError, match=r"engine.hash_block_tokens = 500 — .*multiple of block_size \(16\)"):
        load_run(None, rack="mini", model="tiny-llama", tp=2, engine={"enable_prefix_caching": True,
                                                                      "hash_block_tokens": 500})
    load_run(None, rack="mini", model="tiny-llama", tp=2, engine={"hash_block_tokens": 500})    # unused: fine


def test_reserve_admission_counts_the_free_cached_blocks_a_request_would_pin():
    """80 blocks; a finished request left 64 free cached. The next one hits them: joining takes 64 back and
    its whole length (1100 + 300 tokens) needs 88 blocks > 80, so reserve refuses it; preempt admits it."""
    from rsd_ray.config.specs import EngineSpec
    from tests.one_instance import OneInstance
    for admission, joins in (("reserve", False), ("preempt", True)):
        s = OneInstance(EngineSpec(enable_prefix_caching=True, admission=admission), 80)
        add(s, 0, (1, 2, 3), max_tokens=1)
        s.update(s.schedule(), 1.0)
        add(s, 1, (1, 2, 9), max_tokens=300)
        assert bool(s.schedule().scheduled) == joins


def test_blocks_evicted_while_a_request_decodes_stay_evicted_when_it_finishes():
    """100 blocks, 64 of them free cached (1, 2). A 480-token request takes 30 and decodes 160 more tokens
    (10 blocks): at 63 free, block 2 is overwritten; its finishing later does not bring 2 back."""
    s = scheduler(100)
    add(s, 0, (1, 2, 3), max_tokens=1)
    s.update(s.schedule(), 1.0)
    add(s, 1, (), prompt=480, max_tokens=161)
    s.update(s.schedule(), 2.0)
    while s.running:
        s.update(s.schedule(), 3.0)
    assert s.free == 100 and list(s.cache.free) == [1]
    add(s, 2, (1, 2, 4), max_tokens=1)
    s.schedule()
    assert s.row(2).computed == 512


@pytest.mark.slow
def test_a_served_rack_hashes_what_clients_send_and_reuses_their_prefixes(tmp_path):
    """One word a token, 16-token hash blocks. A chat of a 100-word system prompt and a 10-word question is
    4 + 100 + 4 + 10 + 4 = 122 tokens: 7 full blocks. Sent again: 7 blocks (112 tokens) hit; its next turn
    (the answer and a new question appended) shares the same first 118 tokens: 112 hit again."""
    import time
    from tests.serve_helpers import LiveServer, openai_client
    config = tmp_path / "run.yaml"
    config.write_text("engine: {hash_block_tokens: 16}\nrouter: {policy: prefix_affinity}\n")
    live = LiveServer(tmp_path, "--config", str(config), "--rack", "mini", "--model", "tiny-llama", "--tp", "4",
                      "--enable-prefix-caching")
    try:
        client = openai_client(live.base)
        first = [{"role": "system", "content": " ".join(f"s{i}" for i in range(100))},
                 {"role": "user", "content": " ".join(f"q{i}" for i in range(10))}]
        turn = first + [{"role": "assistant", "content": " ".join(f"a{i}" for i in range(20))},
                        {"role": "user", "content": "and then what ?"}]
        other = [{"role": "system", "content": " ".join(f"x{i}" for i in range(100))}]
        for messages in (first, first, turn, other):
            r = client.chat.completions.create(model="tiny-llama", messages=messages, max_tokens=2,
                                               extra_body={"ignore_eos": True})
            assert r.usage.completion_tokens == 2
        time.sleep(0.5)
        queries, hits = live.total("vllm:prefix_cache_queries_total"), live.total("vllm:prefix_cache_hits_total")
    finally:
        code, _ = live.stop()
    assert queries == 122 + 122 + (122 - 4 + 4 + 20 + 4 + 4 + 4) + (4 + 100 + 4)
    assert hits == 112 + 112 and code == 143          # stopped by SIGTERM (128 + 15), as every command


def multi_turn_run(tmp_path, conversations, **trace):
    """ShareGPT conversations of three exchanges (100-token questions, 50-token answers), replayed turn by turn."""
    convs = [{"id": f"c{i}", "conversations": [{"from": f, "value": "x" * n} for f, n in
                                               [("human", 400), ("gpt", 200)] * 3]} for i in range(conversations)]
    path = tmp_path / "sg.json"
    path.write_text(json.dumps(convs))
    spec = load_run(None, rack="mini", model="tiny-llama", tp=2, duration_s=20.0, router={"policy": "session_affinity"},
                    engine={"enable_prefix_caching": True, "hash_block_tokens": 16},
                    workload={"arrival": "trace", "trace": {"format": "sharegpt", "path": str(path), "rate": 2.0,
                                                            "multi_turn": True, **trace}})
    return spec, Controller(spec).run()


def test_a_multi_turn_conversation_asks_again_after_each_answer_and_finds_its_history_cached(tmp_path):
    """Turn prompts 100, 100 + 50 + 100 = 250 and 400 tokens; cached before them: 6 blocks of 16 (96 tokens),
    then 15 (240): every question after the first hits its conversation's history."""
    spec, outcome = multi_turn_run(tmp_path, 1, think_s=0.5)
    turns = sorted(outcome.records, key=lambda r: r.arrival)
    assert [(r.prompt_len, r.output_len) for r in turns] == [(100, 50), (250, 50), (400, 50)]
    for before, after in zip(turns, turns[1:]):             # sent think_s after the answer, at an epoch's start
        assert before.finish + 0.5 <= after.arrival < before.finish + 0.5 + spec.epoch_s
    [inst] = {r.instance for r in turns}
    frame = next(f for f in outcome.instances if f.instance == inst)
    assert (frame.prefix_cache_queries, frame.prefix_cache_hits) == (100 + 250 + 400, 96 + 240)


def test_many_conversations_replay_every_turn_and_each_finds_its_history(tmp_path):
    _, outcome = multi_turn_run(tmp_path, 20)
    assert len(outcome.records) == 60 and all(r.finish is not None for r in outcome.records)
    assert sum(f.prefix_cache_hits for f in outcome.instances) == 20 * (96 + 240)   # every later turn: its history


def test_multi_turn_is_for_conversations():
    from rsd_ray.config import ConfigError
    with pytest.raises(ConfigError, match="multi_turn = True — only ShareGPT has conversations"):
        load_run(None, workload={"arrival": "trace", "trace": {"format": "mooncake", "path": __file__,
                                                                "multi_turn": True}})
