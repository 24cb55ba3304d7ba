import numpy as np
import pytest

from rsd_ray.compiler import compile_program, place, plan_memory, shard_plan
from rsd_ray.compiler.program import DEVICE_SYNC, Program
from rsd_ray.config import ConfigError, load_part, load_run
from rsd_ray.interconnect.topology import Topology

LLAMA3_8B_PARAMS = 8_030_261_248   # the parameter count of Meta-Llama-3-8B


def model(name):
    return load_part("models", name, "test")


@pytest.mark.parametrize("tp", [1, 2, 4, 8])
def test_shards_add_up_to_the_model(tp):
    shards = shard_plan(model("llama3-8b"), tp)
    full = sum(s.numel for s in shards)
    assert full == LLAMA3_8B_PARAMS
    for s in shards:
        parts = 1 if s.split == "replicated" else tp
        if s.name.endswith(("k_proj", "v_proj")) and tp > 8:
            continue
        assert s.card_numel * parts == s.numel, s.name


def test_kv_heads_are_replicated_when_tp_exceeds_them():
    tiny = model("tiny-llama")            # 4 KV heads
    k = next(s for s in shard_plan(tiny, 8) if s.name.endswith("k_proj"))
    d = tiny.dims_per_head
    assert k.card_shape == (d, tiny.hidden_size)
    starts = [k.slice(rank, 8)[1] for rank in range(8)]
    # each KV head held by the two cards whose query heads use it: query head j reads KV head j // (H/K)
    # (consecutive query heads share one, as Hugging Face's repeat_kv lays them out)
    assert starts == [0, 0, d, d, 2 * d, 2 * d, 3 * d, 3 * d]


def test_tp1_llama3_8b_is_refused_with_the_numbers():
    with pytest.raises(ConfigError) as err:
        from rsd_ray.rack.controller import Controller
        Controller(load_run(None, tp=1))
    msg = str(err.value)
    assert "14.96 GiB of fp16 weights" in msg and "1.00 GiB of KV for one 8,192-token sequence" in msg
    assert "15.72 GiB" in msg and "use tp ≥ 2" in msg


def test_tp4_llama3_8b_fits_with_room_for_kv():
    spec = load_run(None)
    plan = plan_memory(spec.model, 4, spec.device, spec.engine)
    assert plan.used <= plan.budget
    assert abs(plan.weights / 1024 ** 3 - 3.74) < 0.01
    assert plan.kv_bytes_per_token == 32 * 1024   # 32 layers x K,V x 2 heads x 128 x fp16
    assert plan.num_blocks * 16 > 8192 * 8        # room for many full-length sequences


def test_program_serialises_with_msgpack():
    prog = compile_program(model("llama3-8b"), 4, rank=2, chunks=2)
    assert Program.from_msgpack(prog.to_msgpack()) == prog


def test_program_has_two_all_reduces_per_layer_plus_embedding():
    m = model("llama3-8b")
    syncs = [c for c in compile_program(m, 4, 0).commands if c.kind == DEVICE_SYNC]
    assert len(syncs) == 2 * m.num_layers + 1
    piped = [c for c in compile_program(m, 4, 0, chunks=2).commands if c.kind == DEVICE_SYNC]
    assert len(piped) == 2 * len(syncs)


def test_program_flops_match_the_dense_model():
    """Decode FLOPs over the group ≈ 2 × parameters per token (embedding lookups excluded)."""
    m = model("llama3-8b")
    tokens = 8
    x = np.array([1.0, tokens, tokens, tokens, tokens])   # decode at context 1
    flops = sum(np.dot(c.flops, x) for c in compile_program(m, 4, 0).commands) * 4
    matmul_params = LLAMA3_8B_PARAMS - m.vocab_size * m.hidden_size
    assert flops == pytest.approx(2 * matmul_params * tokens, rel=0.01)


def test_placement_keeps_groups_under_one_switch():
    spec = load_run(None)
    topo = Topology(spec.rack, spec.device)
    p = place(topo, 4)
    assert p.scope == "switch" and len(p.groups) == 4 and not p.idle_cards
    for g in p.groups:
        assert len({topo.switch_of(c) for c in g}) == 1


def test_placement_prefers_more_instances_over_switch_locality():
    spec = load_run(None)
    p = place(Topology(spec.rack, spec.device), 3)
    assert p.scope == "server" and len(p.groups) == 5 and p.idle_cards == (15,)


def test_tp32_spans_whole_servers():
    spec = load_run(None, rack="rsd-rack", model="llama3.1-405b", tp=32)
    p = place(Topology(spec.rack, spec.device), 32)
    assert p.scope == "rack" and len(p.groups) == 7
    assert p.groups[0] == tuple(range(32))
