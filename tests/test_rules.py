"""Rules pinned to values worked out by hand, not only to another run of the same code.

Each test names the rule it guards; the numbers in it come from the arithmetic in
its comments. Breaking the rule (rounding KV blocks down, waiting for the fastest
card, adding compute and memory time, ...) makes the test fail.
"""
import dataclasses
import math

import numpy as np
import pytest
import yaml

from rsd_ray.calibration import COMMAND_LAUNCH_S, COMPUTE_EFFICIENCY, DRAM_EFFICIENCY, LINK_EFFICIENCY
from rsd_ray.hardware.card import Card
from rsd_ray.interconnect.collectives import collective_cost
from rsd_ray.compiler import compile_program, plan_memory
from rsd_ray.compiler.program import DEVICE_SYNC, EXTERNAL_HDMA, NEURAL_ENGINE, Command, Program
from rsd_ray.config import ConfigError, load_part, load_run
from rsd_ray.config.specs import PriceSpec
from rsd_ray.config.loader import CONFIG_ROOT
from rsd_ray.hardware.costmodel import StepCost
from rsd_ray.report.metrics import summarise
from rsd_ray.rack.epoch import EpochIn
from rsd_ray.engine.request import RequestRecord, Submit
from rsd_ray.engine.pricing import GroupSync, device_time, pipeline
from rsd_ray.interconnect.topology import Topology
from rsd_ray.engine.kv_blocks import blocks_for, blocks_to_add
from tests.conftest import make_spec, run_doc
from tests.one_instance import OneInstance

ATOM = load_part("devices", "atom", "test")          # 32 TFLOPS fp16, 256 GB/s DRAM, 64 GB/s PCIe, 25/130 W


# --- KV cache: blocks for n tokens round up -------------------------------------------------------

def test_kv_blocks_round_up():
    assert blocks_for(16, 16) == 1                   # 16 tokens: exactly one block of 16
    assert blocks_for(17, 16) == 2                   # 17 tokens: 2 blocks, the second holds one token
    assert blocks_to_add(17, 15, 2, 16) == 0         # 32 tokens still fit 2 blocks
    assert blocks_to_add(17, 16, 2, 16) == 1         # the 33rd opens a third
    s = OneInstance(load_part("engines", "default", "t"), 10)
    s.add(0, 17, 4)
    s.schedule()                                     # the prompt's 17 tokens take 2 of 10 blocks
    assert s.row(0).blocks == 2 and s.free == 8


# --- sync: a TP group waits for its slowest card ---------------------------------------------------

class FixedCost:
    """A cost model whose two segments take fixed times, whatever the batch."""

    def __init__(self, seconds):
        self.seconds = np.array([seconds], dtype=float)

    def segments(self, shapes, clock=1.0):
        return np.repeat(self.seconds, len(shapes), axis=0)


def test_a_collective_starts_when_the_slowest_card_arrives():
    from rsd_ray.hardware.card_group import CardGroup
    group = CardGroup(epoch_s=0.05)
    group.costs = [FixedCost([1, 1]), FixedCost([3, 3]), FixedCost([1, 1]), FixedCost([1, 1])]   # card 1: 3x slower
    group._sync = lambda t, starts, shapes, busy: [(1.0, True)] * 4
    seg = group.propose(np.zeros((1, 5)), 0.0)
    # step = max over cards of segment 0 + collective + max of segment 1 = 3 + 0.5 + 3
    assert device_time(seg, np.array([[0.5]]), 1)[0] == pytest.approx(6.5)


def test_layer_pipelining_overlaps_a_chunks_collective_with_the_next_chunks_compute():
    """Two chunks, four blocks of 1 s compute each with a 2 s all-reduce, a 0.5 s tail. By hand:
    compute c0b0 0–1, its all-reduce 1–3; c1b0 1–2, all-reduce 3–5 (the link is busy); c0b1 waits for
    its chunk's all-reduce: 3–4, all-reduce 5–7; c1b1 5–6, all-reduce 7–9; tail 9–9.5. Unpipelined: 12.5."""
    seg, coll = np.array([[1.0, 1, 1, 1, 0.5]]), np.array([[2.0, 2, 2, 2]])
    at, links = pipeline(seg, coll, 2)
    assert at[0].tolist() == [0, 1, 3, 5, 9] and links[0].tolist() == [1, 3, 5, 7]
    assert device_time(seg, coll, 2)[0] == 9.5 and device_time(seg, coll, 1)[0] == 12.5


class SlowCost(StepCost):
    """A cost model three times slower than its program says."""

    def segments(self, shapes, clock=1.0):
        return super().segments(shapes, clock) * 3


def test_one_slow_card_slows_its_group_and_only_its_group():
    """Exactly one card of a TP-4 group is slowed (its own cost model); the group's step takes
    the slow card's compute time plus the collectives, not the others'."""
    from rsd_ray.hardware.card_group import LocalCardGroup
    spec = load_run(None, rack="atom-server", model="llama3-8b", tp=4)
    plan_mem = plan_memory(spec.model, 4, spec.device, spec.engine)
    programs = tuple(compile_program(spec.model, 4, r) for r in range(4))
    group = LocalCardGroup(range(4), spec.device, spec.epoch_s)
    group.load(programs, plan_mem)
    slow = group.cards[1]
    slow.cost = SlowCost(programs[1], spec.device)
    x = np.array([[1.0, 8, 8, 8 * 1024, 8 * 1024]])            # decode, 8 sequences at context 1 k
    segs = group.propose(x, 0.0)
    base = group.cards[0].cost.segments(x)[0]
    assert np.allclose(segs[0], 3 * base)
    topo = Topology(spec.rack, spec.device)
    sync = GroupSync(programs[0], [0, 1, 2, 3], topo, "auto", {})
    collectives = sync.times(x)[0]
    assert device_time(segs, collectives, 1)[0] == pytest.approx(3 * base.sum() + collectives.sum())


# --- cost model: a command takes the roofline max of compute and memory, plus launch ----------------

def _program(*commands):
    return Program("hand", 1, 0, 1, tuple(commands), ())


def test_a_command_takes_the_roofline_max_plus_launch():
    flops_1ms = 32e12 * COMPUTE_EFFICIENCY * 1e-3             # 1 ms of compute at 70 % of 32 TFLOPS
    bytes_2ms = 256e9 * DRAM_EFFICIENCY * 2e-3                # 2 ms of DRAM at 85 % of 256 GB/s
    link_1ms = 64e9 * LINK_EFFICIENCY * 1e-3                  # 1 ms on PCIe at 80 % of 64 GB/s
    v = lambda x: (x, 0.0, 0.0, 0.0, 0.0)                     # noqa: E731  (the const term only)
    prog = _program(Command(NEURAL_ENGINE, "mm", 0, 0, flops=v(flops_1ms), dram=v(bytes_2ms)),
                    Command(DEVICE_SYNC, "all_reduce", 0, 0, link=v(1.0), collective="all_reduce"),
                    Command(EXTERNAL_HDMA, "out", 0, 0, link=v(link_1ms)))
    cost = StepCost(prog, ATOM)
    one = np.array([[1.0, 0, 0, 0, 0]])
    times = cost.command_times(one)[0]
    assert times[0] == pytest.approx(2e-3 + COMMAND_LAUNCH_S)                 # max(1 ms, 2 ms) + launch
    assert times[1] == pytest.approx(1e-3 + 1e-6 + COMMAND_LAUNCH_S)           # PCIe + 1 µs latency + launch
    assert cost.segments(one)[0] == pytest.approx([2e-3 + COMMAND_LAUNCH_S, 1e-3 + 1e-6 + COMMAND_LAUNCH_S])
    assert cost.command_times(one, clock=0.25)[0][0] == pytest.approx(4e-3 + COMMAND_LAUNCH_S)  # compute-bound now


def test_memory_traffic_is_charged_at_the_devices_own_dram_efficiency(tmp_path):
    """ATOM gives none (the calibration default, 85 %); the HBM GPUs give gpt-fast's measured 68.5 %."""
    h100 = load_part("devices", "h100-sxm", "test")
    assert (ATOM.dram_efficiency, h100.dram_efficiency) == (DRAM_EFFICIENCY, 0.685)
    prog = _program(Command(NEURAL_ENGINE, "gemv", 0, 0, dram=(3350e9 * 1e-3, 0.0, 0.0, 0.0, 0.0)))
    t = StepCost(prog, h100).command_times(np.array([[1.0, 0, 0, 0, 0]]))[0][0]
    assert t == pytest.approx(1e-3 / 0.685 + COMMAND_LAUNCH_S)               # 3.35 GB at 68.5 % of 3.35 TB/s
    text = (CONFIG_ROOT / "devices" / "h100-sxm.yaml").read_text()
    for bad in ("0", "1.5", ".nan"):
        path = tmp_path / "gpu.yaml"
        path.write_text(text.replace("dram_efficiency: 0.685", f"dram_efficiency: {bad}"))
        with pytest.raises(ConfigError, match=f"dram_efficiency = "):
            load_part("devices", str(path), "test")


# --- metrics: TTFT, TPOT, ITL, E2E, percentiles, throughput windows ---------------------------------

def record(rid, arrival, times, finished=True, prompt=10):
    return RequestRecord(rid, 0, arrival, prompt, len(times), tuple(times), 0, times[-1] if finished else None)


def test_ttft_tpot_itl_e2el_from_one_request():
    s = summarise([record(0, 1.0, [1.1, 1.2, 1.3])], window=2.0)
    assert s["mean_ttft_ms"] == pytest.approx(100.0)       # first token − arrival
    assert s["mean_tpot_ms"] == pytest.approx(100.0)       # (last − first) / (3 − 1)
    assert s["mean_itl_ms"] == pytest.approx(100.0)
    assert s["mean_e2el_ms"] == pytest.approx(300.0)       # last token − arrival


def test_itl_counts_gaps_inside_each_request_only():
    """Gaps 100 and 200 ms in the first request, 500 ms in the third; none between requests (1.3 s → 5.0 s
    would be 3,700 ms), none in the unfinished second (its 1,000 ms gap), none in a one-token request."""
    recs = [record(0, 1.0, [1.1, 1.2, 1.4]), record(1, 1.0, [2.0, 3.0], finished=False),
            record(2, 4.0, [5.0, 5.5]), record(3, 4.0, [6.0])]
    s = summarise(recs, window=10.0)
    assert s["mean_itl_ms"] == pytest.approx((100 + 200 + 500) / 3)
    assert s["p99_itl_ms"] < 500.0 + 1e-9


def test_percentiles_interpolate_linearly_like_vllm_bench():
    recs = [record(i, 0.0, [(i + 1) * 1e-3, 1.0]) for i in range(100)]     # TTFT 1, 2, ..., 100 ms
    s = summarise(recs, window=2.0)
    assert s["median_ttft_ms"] == pytest.approx(50.5)
    assert s["p90_ttft_ms"] == pytest.approx(90.1)
    assert s["p99_ttft_ms"] == pytest.approx(99.01)
    assert s["std_ttft_ms"] == pytest.approx(math.sqrt((100 ** 2 - 1) / 12))   # population std of 1..100


def test_throughputs_count_only_the_window():
    recs = [record(0, 0.0, [0.5, 1.0, 1.5]),            # 3 tokens inside [0, 2], finished inside
            record(1, 1.0, [1.9, 2.5, 3.0]),            # 1 token inside, finished after
            record(2, 2.5, [2.8], finished=False, prompt=99)]   # all outside, never finished
    s = summarise(recs, window=2.0)
    assert s["window_output_throughput"] == pytest.approx(4 / 2.0)
    assert s["window_request_throughput"] == pytest.approx(1 / 2.0)
    assert s["window_total_token_throughput"] == pytest.approx((4 + 10 + 10) / 2.0)   # prompts of those started inside
    assert s["completed"] == 2 and s["total_output_tokens"] == 6


def test_throughputs_as_vllm_bench_serve_counts_them():
    """Completed requests' tokens over the benchmark's duration: first request sent to last completion."""
    recs = [record(0, 0.5, [0.9, 1.0, 1.5]),            # first send at 0.5
            record(1, 1.0, [1.9, 2.5, 4.5]),            # last completion at 4.5, after the window
            record(2, 2.5, [2.8], finished=False, prompt=99)]   # never finished: not counted
    s = summarise(recs, window=2.0)
    assert s["duration"] == pytest.approx(4.0)
    assert s["output_throughput"] == pytest.approx(6 / 4.0)
    assert s["request_throughput"] == pytest.approx(2 / 4.0)
    assert s["total_token_throughput"] == pytest.approx((6 + 10 + 10) / 4.0)


# --- config: link latency and other physical numbers ------------------------------------------------

def _rack_with(tmp_path, **changes):
    data = yaml.safe_load(open(CONFIG_ROOT / "racks" / "mini.yaml"))
    for key, value in changes.items():
        data[key] = value
    path = tmp_path / "rack.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_negative_link_latency_is_refused(tmp_path):
    rack = _rack_with(tmp_path, switch_uplink={"name": "x", "bandwidth_gbps": 64, "latency_us": -1.0})
    with pytest.raises(ConfigError, match=r"switch_uplink.latency_us = -1.0 — must be ≥ 0"):
        load_part("racks", rack, "test")
    zero = _rack_with(tmp_path, switch_uplink={"name": "x", "bandwidth_gbps": 64, "latency_us": 0.0})
    assert load_part("racks", zero, "test").switch_uplink.latency_us == 0.0


# --- memory plan: KV must hold one full-length sequence ---------------------------------------------

def test_memory_plan_needs_room_for_one_full_sequence():
    spec = load_run(None, rack="atom-server", model="llama3-8b", tp=2)
    ok = plan_memory(spec.model, 2, spec.device, spec.engine)
    one_seq = 32 * 2 * 4 * 128 * 2 * 8192       # layers × K,V × 4 KV heads per card × 128 × fp16 × 8,192 tokens
    assert ok.kv_bytes_per_token * 8192 == one_seq == 512 * 1024 ** 2
    fixed = ok.weights + ok.workspace + ok.comm_buffers

    def engine_with_room(kv_bytes):
        return dataclasses.replace(spec.engine, kv_cache_fraction=(fixed + kv_bytes) / ok.budget)

    with pytest.raises(ConfigError, match="one 8,192-token sequence"):
        plan_memory(spec.model, 2, spec.device, engine_with_room(one_seq // 2))     # room > 0, < one sequence
    fits = plan_memory(spec.model, 2, spec.device, engine_with_room(one_seq + 2 ** 19))
    assert fits.num_blocks == 512        # a block is 16 × 64 KiB = 1 MiB; 512.5 MiB holds 512 whole ones


# --- collectives: bytes each link carries -----------------------------------------------------------

def test_collective_bytes_per_link_under_one_switch():
    spec = load_run(None)
    topo = Topology(spec.rack, spec.device)
    ring = dict(collective_cost(topo, "all_reduce", "ring", [0, 1, 2, 3]).link_factors)
    # ring all-reduce: 2(n−1) phases of M/n each way on every card link → 6/4 = 1.5 M
    assert ring["card0->sw0.0"] == pytest.approx(1.5) and ring["sw0.0->card3"] == pytest.approx(1.5)
    one = dict(collective_cost(topo, "all_reduce", "one_shot", [0, 1, 2, 3]).link_factors)
    assert one["card0->sw0.0"] == pytest.approx(3.0)         # M to each of 3 peers
    gather = dict(collective_cost(topo, "all_gather", "ring", [0, 1, 2, 3]).link_factors)
    assert gather["card2->sw0.0"] == pytest.approx(0.75)     # (n−1) phases of M/n


# --- card power, energy and heat ---------------------------------------------------------------------

def test_card_energy_is_max_power_while_busy_and_idle_power_otherwise():
    spec = load_run(None)
    card = Card(0, spec.device)
    card.load(compile_program(spec.model, 4, 0), plan_memory(spec.model, 4, spec.device, spec.engine))
    busy = float(card.execute(np.array([1.0, 64, 64, 64 * 1024, 64 * 1024]), 0.0).sum())
    card.advance_to(10.0)
    frame = card.frame()
    assert frame.energy_j == pytest.approx(130 * busy + 25 * (10.0 - busy))
    assert frame.power_w == pytest.approx(frame.energy_j / 10.0)
    assert frame.utilisation == pytest.approx(busy / 10.0)


def test_temperature_relaxes_to_ambient_plus_r_times_power():
    from rsd_ray.hardware.power import ThermalState
    th = ThermalState(ATOM)
    th.run(30.0, active=True)                   # one time constant at 130 W from 35 °C
    steady = 35 + 0.25 * 130                    # 67.5 °C
    assert th.temp_c == pytest.approx(steady - 32.5 * math.exp(-1))
    th.run(3000.0, active=True)
    assert th.temp_c == pytest.approx(steady) and not th.throttled    # 67.5 < 75: no throttle


def test_a_steady_cards_steps_as_arrays_heat_it_as_one_by_one():
    """``run_steps`` (k idle-then-busy pairs at once) is ``run`` interval after interval, to the last bit; a
    zero-length interval changes nothing. By hand: 10 s idle at 25 W, then 20 s busy at 130 W from 35 °C:
    energy 250 + 2600 J; temperature 41.25 + (35 − 41.25)·e^(−1/3), then 67.5 + (T − 67.5)·e^(−2/3)."""
    from rsd_ray.hardware.power import ThermalState
    rng = np.random.default_rng(0)
    idle, busy = rng.exponential(0.01, 500) * (rng.random(500) > 0.3), rng.exponential(0.02, 500)
    arrays, one_by_one = ThermalState(ATOM), ThermalState(ATOM)
    arrays.run_steps(idle, busy)
    for i, b in zip(idle.tolist(), busy.tolist()):
        one_by_one.run(i, active=False)
        one_by_one.run(b, active=True)
    assert (arrays.temp_c, arrays.energy_j, arrays.throttled_s) == (one_by_one.temp_c, one_by_one.energy_j, 0.0)
    hand = ThermalState(ATOM)
    hand.run_steps(np.array([10.0]), np.array([20.0]))
    after_idle = 41.25 + (35 - 41.25) * math.exp(-10 / 30)
    assert hand.energy_j == pytest.approx(250 + 2600)
    assert hand.temp_c == pytest.approx(67.5 + (after_idle - 67.5) * math.exp(-20 / 30))


# --- host step time and the results' power and price ------------------------------------------------

def test_results_power_and_price_follow_their_formulas():
    spec = make_spec(duration_s=1.0)
    rack = dataclasses.replace(spec.rack, price=PriceSpec(card_usd_per_hour=1.0, server_usd_per_hour=2.0,
                                                          usd_per_kwh=0.5))
    doc, _ = run_doc(dataclasses.replace(spec, rack=rack))
    s, window = doc["summary"], 1.0
    card_j = sum(c["energy_j"] for c in doc["cards"])
    assert len(doc["cards"]) == 8 and doc["emulator"]["cards"] == 8      # mini: 2 servers × 4 cards
    rack_w = card_j / window + 2 * 400 + 400                             # cards + 2 hosts + ToR
    assert s["rack_power_w"] == pytest.approx(rack_w)
    assert s["energy_j"] == pytest.approx(rack_w * window)
    assert s["output_tokens_per_s_per_watt"] == pytest.approx(s["window_output_throughput"] / rack_w)
    usd_h = 8 * 1.0 + 2 * 2.0 + rack_w / 1000 * 0.5
    assert s["usd_per_hour"] == pytest.approx(usd_h)
    assert s["output_tokens_per_usd"] == pytest.approx(s["window_output_throughput"] * 3600 / usd_h)
    assert doc["requests"]["accepted"] == doc["requests"]["completed"] + doc["requests"]["unfinished"]


@pytest.mark.parametrize("overlap,generation", [(False, "v1"), (True, "v1"), (False, "v0")])
def test_host_time_per_step_is_base_plus_per_sampled_sequence(overlap, generation):
    """A step is its host time then its device time; with async scheduling the longer of the two. vLLM's
    V0 engine adds its per-sequence work and, driving a TP group (2 cards here), its broadcast."""
    from rsd_ray.calibration import (HOST_STEP_BASE_S, HOST_STEP_PER_SEQ_S, V0_HOST_PER_SEQ_S, V0_TP_PER_SEQ_S,
                                     V0_TP_STEP_S)
    from rsd_ray.compiler import compile_plan
    from rsd_ray.rack.controller import host_setups
    from rsd_ray.rack.host import Host
    spec = make_spec(engine={"async_scheduling": overlap, "vllm_engine": generation})
    topo = Topology(spec.rack, spec.device)
    plan = compile_plan(spec, topo)
    host = Host.local(spec, plan, host_setups(spec, topo, plan)[:1])
    reqs = tuple(Submit(i, 0.0, 10, 1, instance=0) for i in range(3))
    done = host.run_epoch(EpochIn(1.0, {0: reqs})).finished[0]
    # one step: 3 prompts of 10 tokens, 3 sampled tokens; 3 × (10·11/2) query-key pairs
    x = np.array([[1.0, 30, 3, 165, 30]])
    sync = GroupSync(plan.programs[0], list(plan.placement.groups[0]), topo, "auto",
                     dict(host_setups(spec, topo, plan)[0].shared_links))
    seg = StepCost(plan.programs[0], spec.device).segments(x)     # both ranks cost the same
    device = device_time(seg, sync.times(x)[0], 1)[0]
    assert len(plan.placement.groups[0]) == 2
    host_s = HOST_STEP_BASE_S + 3 * HOST_STEP_PER_SEQ_S
    if generation == "v0":                                  # 1.3 ms + 3 × (35 + 25) µs more
        host_s += V0_TP_STEP_S + 3 * (V0_HOST_PER_SEQ_S + V0_TP_PER_SEQ_S)
    assert done.token_times[0] == pytest.approx(max(host_s, device) if overlap else host_s + device)
    assert min(device, host_s) > 0                           # so the two rules differ here


def test_attention_is_charged_for_at_least_the_heads_floor_per_card():
    """Decode attention stops shrinking with TP below ``ATTENTION_HEADS_FLOOR`` query heads a card: Llama 3 8B
    (32 heads) reads its KV at 1x on one card, at 16 heads a card 20/16 = 1.25x, at 8 heads 20/8 = 2.5x the
    bytes its KV heads hold; the weights and every other term are untouched."""
    from rsd_ray.calibration import ATTENTION_HEADS_FLOOR
    from rsd_ray.compiler.program import TERMS, compile_program
    assert ATTENTION_HEADS_FLOOR == 20
    model = load_run(None, model="llama3-8b").model
    kv = TERMS.index("kv_tokens")
    for tp, factor in ((1, 1.0), (2, 1.25), (4, 2.5)):
        attn = next(c for c in compile_program(model, tp, 0).commands if c.name == "attention")
        kv_heads = 8 // tp
        assert attn.dram[kv] == pytest.approx(2 * kv_heads * 128 * 2 * factor), tp    # K and V, fp16
        assert attn.flops[TERMS.index("attn_pairs")] == pytest.approx(4 * (32 // tp) * 128)
