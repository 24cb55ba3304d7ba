"""Mixture-of-experts models, pinned by hand: the all-to-all's bytes on each link for a given routing, the
expert weights a step reads, and a step that waits for its busiest card (``rsd_ray.compiler.experts``)."""
import dataclasses

import numpy as np
import pytest

from rsd_ray.calibration import COMMAND_LAUNCH_S, COMPUTE_EFFICIENCY, DRAM_EFFICIENCY
from rsd_ray.compiler import MemoryPlan, compile_program
from rsd_ray.compiler.experts import expert_shares
from rsd_ray.compiler.shard import weight_bytes_per_card
from rsd_ray.config import ConfigError, load_part, load_run, replace
from rsd_ray.engine.pricing import GroupSync
from rsd_ray.hardware.card_group import LocalCardGroup
from rsd_ray.hardware.costmodel import StepCost
from rsd_ray.interconnect.collectives import collective_cost
from rsd_ray.interconnect.topology import Topology
from rsd_ray.report.plan import experts as experts_of
from tests.conftest import make_spec

ATOM = load_part("devices", "atom", "test")
MIXTRAL = load_part("models", "mixtral-8x7b", "test")
QWEN3 = load_part("models", "qwen3-30b-a3b", "test")
H, IE = 4096, 14336                                       # Mixtral's hidden size and each expert's width


def _times(program, x):
    """Seconds of each of layer 0's commands on ATOM for one batch shape."""
    work = [c for c in program.commands if c.kind != "device_sync"]
    return {c.name: t for c, t in zip(work, StepCost(program, ATOM).command_times(x)[0]) if c.layer == 0}


def test_the_all_to_all_sends_each_card_the_tokens_of_its_experts_and_the_combine_brings_them_back():
    """Four cards under one switch, 1/4 of the tokens on each; card b's experts take Q_b token-expert
    pairs per token: routing (1.0, 0.5, 0.3, 0.2), two experts a token. Card a sends card b M/4 · Q_b:
    out of card 0, (0.5 + 0.3 + 0.2)/4 = 0.25 M; out of card 1, (1.0 + 0.3 + 0.2)/4 = 0.375 M; into card 0
    from the three others 3 · 1.0/4 = 0.75 M, into card 3 3 · 0.2/4 = 0.15 M."""
    spec = load_run(None, rack="atom-server")
    topo = Topology(spec.rack, spec.device)
    routing = (1.0, 0.5, 0.3, 0.2)
    dispatch = dict(collective_cost(topo, "dispatch", "ring", [0, 1, 2, 3], routing=routing).link_factors)
    assert dispatch["card0->sw0.0"] == pytest.approx(0.25) and dispatch["card1->sw0.0"] == pytest.approx(0.375)
    assert dispatch["sw0.0->card0"] == pytest.approx(0.75) and dispatch["sw0.0->card3"] == pytest.approx(0.15)
    combine = dict(collective_cost(topo, "combine", "one_shot", [0, 1, 2, 3], routing=routing).link_factors)
    assert combine["card0->sw0.0"] == pytest.approx(0.75) and combine["sw0.0->card1"] == pytest.approx(0.375)
    # In a compiled Mixtral step (experts alike: Q = 2 · 2/8 = 0.5 a card), 64 decode tokens: M = 64 · 4,096 · 2 B;
    # every card link carries, each way, per layer: dispatch 3 · 0.5/4 M + combine the same (0.75 M), and the
    # reduce-scatter and the all-gather (ring: 3/4 M each) — 2.25 M, 32 layers, + the embedding's all-reduce 1.5 M
    model = MIXTRAL
    program = compile_program(model, 4, 0)
    assert program.routing == (0.5, 0.5, 0.5, 0.5)
    sync = GroupSync(program, [0, 1, 2, 3], topo, "ring", {})
    x = np.array([[1.0, 64, 64, 64 * 1025, 64 * 1025]])
    sync.run_steps(x, StepCost(program, ATOM).segments(x), _host(spec))
    m = 64 * H * 2
    assert sync.link_bytes()["card2->sw0.0"] == pytest.approx(m * (32 * 2.25 + 1.5))


def _host(spec):
    from rsd_ray.calibration import HostCost
    return HostCost.of(spec.engine, 4)


def test_a_one_token_step_reads_only_the_experts_it_picked():
    """Mixtral at TP 4: two experts a card, each picked by a quarter of the tokens. One token reads a card's
    expert with chance 1/4: on average a quarter of its expert weights (2 · 3 · 4,096 · 14,336 · 2 B);
    64 tokens read 1 − (3/4)^64 of them — all but 1e-8."""
    program = compile_program(MIXTRAL, 4, 0)
    gate_up = 2 * H * 2 * IE * 2                          # two experts' gate and up projections, bf16
    one = _times(program, np.array([[1.0, 1, 1, 1001, 1001]]))
    bandwidth = 256e9 * DRAM_EFFICIENCY
    read = 0.25 * gate_up + (H + 2 * IE) * 2 * 0.5       # + the token-expert pairs' activations (Q = 0.5)
    assert one["experts_gate_up"] == pytest.approx(read / bandwidth + COMMAND_LAUNCH_S, rel=1e-9)
    many = _times(program, np.array([[1.0, 64, 64, 64 * 1001, 64 * 1001]]))
    read = (1 - 0.75 ** 64) * gate_up + (H + 2 * IE) * 2 * 0.5 * 64
    assert many["experts_gate_up"] == pytest.approx(read / bandwidth + COMMAND_LAUNCH_S, rel=1e-9)


def test_a_skewed_step_waits_for_its_busiest_card():
    """Expert skew 2 (Zipf) from seed 0: the popular experts sit on some cards; a 2,048-token prefill step's
    experts are compute-bound, each card's time its share of the token-expert pairs; the group's segment
    is the busiest card's, 2 · 4,096 · 2 · 14,336 FLOPs a pair at 70 % of 32 TFLOPS."""
    model = dataclasses.replace(MIXTRAL, expert_skew=2.0)
    q = expert_shares(8, 2, 2.0, seed=0)
    assert q.sum() == pytest.approx(2.0) and q.max() <= 1.0
    programs = tuple(compile_program(model, 4, r) for r in range(4))
    routing = programs[0].routing
    assert routing == pytest.approx(tuple(q[2 * r] + q[2 * r + 1] for r in range(4)))
    busiest = int(np.argmax(routing))
    assert max(routing) > 2 * min(routing)
    x = np.array([[1.0, 2048, 1, 2048 * 2049 / 2, 2048]])
    pairs = 2048 * routing[busiest]
    expect = 2 * H * 2 * IE * pairs / (32e12 * COMPUTE_EFFICIENCY) + COMMAND_LAUNCH_S
    assert _times(programs[busiest], x)["experts_gate_up"] == pytest.approx(expect, rel=1e-9)
    group = LocalCardGroup(range(4), ATOM, 0.05)
    group.load(programs, MemoryPlan(0, 0, 0, 0, ATOM.usable_bytes, 0.0, 16, 0))     # timing only: nothing held
    every = [StepCost(p, ATOM).segments(x)[0] for p in programs]
    segments = group.propose(x, 0.0)[0]
    experts = [i for i, c in enumerate(c for c in programs[0].commands if c.kind == "device_sync")
               if c.name == "combine"][0]                 # the segment before layer 0's combine: its experts
    assert segments[experts] == max(s[experts] for s in every) == every[busiest][experts]
    assert min(s[experts] for s in every) < 0.6 * segments[experts]
    spec = dataclasses.replace(load_run(None, rack="atom-server", model="mixtral-8x7b", tp=4), model=model)
    shown = experts_of(spec, programs[0])                  # what `rsd-ray compile` prints
    assert shown["busiest_over_mean"] == pytest.approx(max(routing) / 0.5) and shown["per_card"] == 2


def test_moe_weights_are_attention_split_and_whole_experts_per_card():
    """Mixtral at TP 8 (one expert a card): per layer a card holds 1/8 of attention (q 4,096 × 4,096, k and v
    1,024 × 4,096, o 4,096 × 4,096), the router (8 × 4,096) and one expert (3 · 4,096 · 14,336); plus
    two norms a layer, the final norm and 1/8 of the embedding and the LM head, all bf16."""
    attention = (4096 * 4096 * 2 + 2 * 1024 * 4096) // 8
    layer = attention + 8 * 4096 + 3 * 4096 * 14336 + 2 * 4096
    expect = 2 * (32 * layer + 4096 + 2 * 32000 * 4096 // 8)
    assert weight_bytes_per_card(MIXTRAL, 8) == expect                      # 10.88 GiB
    quantised = dataclasses.replace(MIXTRAL, quantization="w4a16")
    assert weight_bytes_per_card(quantised, 8) < 0.3 * expect               # the experts are most of it


def test_an_moe_model_that_does_not_split_is_refused_with_its_fix():
    with pytest.raises(ConfigError, match="8 experts, held whole by the cards of an instance; tp must divide"):
        load_run(None, rack="atom-server", model="mixtral-8x7b", tp=16)
    with pytest.raises(ConfigError, match="experts_per_token"):
        replace(MIXTRAL, "test", experts_per_token=9)
    with pytest.raises(ConfigError, match="first_dense_layers"):
        replace(MIXTRAL, "test", first_dense_layers=32)


def test_moe_decode_never_beats_dram_bandwidth_or_peak_flops():
    """Qwen3-30B-A3B at TP 8 on an ATOM server: a card reads at least its attention, router, norms and LM
    head slice every step, and no token costs fewer than 2 FLOPs per active parameter (attention 48 ·
    18.9 M, 8 experts of 3 · 2,048 · 768 a layer, the LM head), spread over the 8 cards at their fastest."""
    spec = make_spec(rack="atom-server", model="qwen3-30b-a3b", tp=8, duration_s=4.0,
                     workload={"concurrency": 128, "per_server": False, "output": _length(300),
                               "input": _length(32)})
    h, q, kv, L = 2048, 32 * 128, 4 * 128, 48
    attention = h * (q + 2 * kv) + q * h
    always = 2 * (L * attention / 8 + L * 128 * h + 151936 * h / 8)
    active = L * (attention + 8 * 3 * h * 768 + 128 * h) + 151936 * h
    peak = max(ATOM.peak_tflops.values()) * 1e12
    from tests.test_engine import traced_run
    doc, _, steps = traced_run(spec)
    decode = [(t1 - t0, x) for _, t0, t1, x in steps if x[1] == x[2]]
    assert len(decode) > 50
    for dt, x in decode:
        assert x[2] / dt <= 256e9 / always * x[2]
        assert x[2] / dt <= peak * 8 / (2 * active)
    assert doc["requests"]["completed"] > 0


def _length(n):
    from rsd_ray.config import LengthSpec
    return LengthSpec(mean=n)


def test_the_compile_report_prices_a_skewed_step_at_its_busiest_card():
    """`rsd-ray compile` on a skewed Mixtral (INT4 weights, so TP 4 fits): each segment is the slowest rank's."""
    from rsd_ray.report.plan import describe, example_shapes
    spec = load_run(None, rack="atom-server", model="mixtral-8x7b", tp=4)
    spec = dataclasses.replace(spec, model=dataclasses.replace(spec.model, quantization="w4a16", expert_skew=2.0))
    d = describe(spec)
    programs = [compile_program(spec.model, 4, r) for r in range(4)]
    x = list(example_shapes(spec).values())[0]
    every = np.array([StepCost(p, ATOM).segments(x)[0] for p in programs])
    assert d["steps"][0]["compute_s"] == pytest.approx(every.max(axis=0).sum(), rel=1e-12)
    assert d["steps"][0]["compute_s"] > every[0].sum() or int(np.argmax(programs[0].routing)) == 0
