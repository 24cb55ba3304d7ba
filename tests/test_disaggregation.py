"""Disaggregated prefill and decode (``rack/handoff.py``, ``interconnect/transfers.py``): a KV cache's move
between two servers and inside one, pinned by hand from the model's shape and the path's links; a degraded
link; layer-by-layer sending; runs whose TTFT parts add up, whose link counters carry the KV bytes, and
whose lost prefill and decode cards lose no request."""
import dataclasses

import numpy as np
import pytest

from rsd_ray.compiler import check_plan, compile_plan
from rsd_ray.config import ConfigError, LengthSpec, load_run
from rsd_ray.engine.request import RequestRecord, Submit
from rsd_ray.interconnect.topology import Topology
from rsd_ray.rack.faults import Fault
from rsd_ray.rack.controller import Controller
from rsd_ray.rack.handoff import Handoffs
from rsd_ray.rack.ledger import balanced
from rsd_ray.report.results import build, without_wall_clock
from rsd_ray.router import Router
from tests.conftest import make_spec, run_doc
from tests.one_instance import OneInstance

# Llama 3 8B's KV cache: K and V × 32 layers × 8 KV heads × 128 dims × 2 bytes (fp16) = 131,072 B a token;
# at TP 4 each card holds 2 of the 8 heads: 32,768 B a token. A 1,024-token prompt moves 1,023 tokens' (the
# decode instance computes the last again): 33,521,664 B a card.
PER_CARD = 2 * 32 * 2 * 128 * 2 * 1023
NIC = 50e9 * 0.80             # rsd-rack's 400 GbE NIC: 50 GB/s × LINK_EFFICIENCY
PCIE = 64e9 * 0.80            # a card's PCIe Gen5 x16 link (and a switch uplink)
# card 0 → card 16: card→sw0.0→host0→nic0 (3 PCIe hops, 1 µs each), nic0→tor→nic1 (2 µs each), nic1→host1→
# sw1.0→card16 (3 hops): 10 µs
BETWEEN_SERVERS_S = 10e-6


def _handoffs(prefill=4, kv_transfer="after_prefill", tp=4, prefill_tp=0):
    spec = load_run(None, rack="rsd-rack", model="llama3-8b", tp=tp, prefill={"tp": prefill_tp},
                    router={"prefill_instances": prefill, "kv_transfer": kv_transfer})
    topology = Topology(spec.rack, spec.device)
    plan = compile_plan(spec, topology)
    return Handoffs(spec, plan, topology), plan


def _prefilled(handoffs, rid=0, instance=0, scheduled=0.9, finish=1.0, prompt=1024):
    sub = dataclasses.replace(_submit(rid, prompt), instance=instance)
    handoffs.for_instance(sub)
    return RequestRecord(rid=rid, instance=instance, arrival=0.5, prompt_len=prompt, max_tokens=1,
                         token_times=(finish,), preemptions=0, finish=finish, scheduled=scheduled)


def _submit(rid, prompt):
    return Submit(rid=rid, arrival=0.5, prompt_len=prompt, max_tokens=100, instance=-1)


def test_a_kv_cache_between_two_servers_takes_the_nic_rank_after_rank():
    """Instance 0 (cards 0-3, server 0) to instance 4 (cards 16-19, server 1): the four ranks' 32 MiB each
    share the NIC and the ToR, so they go one after another at the NIC's 40 GB/s; the last arrives
    4 × 838.04 µs + 10 µs after the prefill."""
    handoffs, plan = _handoffs()
    assert plan.memory.kv_bytes_per_token == 2 * 32 * 2 * 128 * 2
    assert plan.placement.groups[4] == (16, 17, 18, 19)
    decode = handoffs.hand_off(_prefilled(handoffs), 4)
    assert decode.instance == 4 and decode.kv_tokens == 1023 and decode.max_tokens == 100
    assert decode.arrival == pytest.approx(1.0 + 4 * PER_CARD / NIC + BETWEEN_SERVERS_S, rel=1e-12)
    assert 4 * PER_CARD / NIC == pytest.approx(3352.1664e-6)
    handoff = handoffs.handed[0]
    assert (handoff.instance, handoff.prefilled, handoff.ready, handoff.kv_bytes) == (0, 1.0, decode.arrival, 4 * PER_CARD)
    assert handoffs.link_bytes()["nic0->tor"] == 4 * PER_CARD
    assert handoffs.link_bytes()["card0->sw0.0"] == PER_CARD


@pytest.mark.parametrize("tp,prefill_tp,pulls", [
    (4, 2, {(0, 16): 1, (0, 17): 1, (1, 18): 1, (1, 19): 1}),      # a decode card reads half a prefill card's
    (2, 4, {(0, 16): 1, (1, 16): 1, (2, 17): 1, (3, 17): 1})])     # a decode card reads two prefill cards
def test_pools_of_unequal_tp_move_each_kv_head_to_the_card_that_holds_it(tp, prefill_tp, pulls):
    """Llama 3 8B's 8 KV heads: at TP 2 a card holds 4 (rank r: heads 4r..4r+3), at TP 4 two. Prefill
    instance 0 on server 0 to the first decode instance, on server 1 (cards 16-): each flow is two heads'
    KV of 1,023 tokens (PER_CARD), the four flows share the NIC, so the move takes as long as between
    TP 4 pools — the same bytes leave the server."""
    handoffs, plan = _handoffs(prefill=16 // prefill_tp, tp=tp, prefill_tp=prefill_tp)
    assert plan.placement.groups[0] == tuple(range(prefill_tp)) and len(plan.placement.groups[0]) == prefill_tp
    decode = 16 // prefill_tp
    assert plan.placement.groups[decode] == tuple(range(16, 16 + tp))
    flows = handoffs.flows(plan.placement.groups[0], plan.placement.groups[decode], 1023)
    assert {(a, c): nbytes / PER_CARD for a, c, nbytes in flows} == pulls
    sub = handoffs.hand_off(_prefilled(handoffs), decode)
    assert sub.arrival == pytest.approx(1.0 + 4 * PER_CARD / NIC + BETWEEN_SERVERS_S, rel=1e-12)
    assert handoffs.handed[0].kv_bytes == 4 * PER_CARD == handoffs.link_bytes()["nic0->tor"]


@pytest.mark.parametrize("prefill_tp,source", [(8, lambda j: j // 2), (16, lambda j: j)])
def test_replicated_kv_heads_are_read_once_per_decode_card(prefill_tp, source):
    """TP 16 (two cards per KV head of 8) decoding: decode card j needs head j // 2, one head's KV, twice
    the model's KV in all (as the cards hold it). Prefilled at TP 8, prefill rank j // 2 holds it; at TP 16
    ranks j - j % 2 and j - j % 2 + 1 both do, and each card reads its own rank's (vLLM pairs equal ranks)."""
    handoffs, plan = _handoffs(prefill=1, tp=16, prefill_tp=prefill_tp)
    prefill, decode = plan.placement.groups[0], plan.placement.groups[1]
    flows = handoffs.flows(prefill, decode, 1023)
    assert [(a, c) for a, c, _ in flows] == [(prefill[source(j)], decode[j]) for j in range(16)]
    assert {nbytes for _, _, nbytes in flows} == {PER_CARD / 2}


def test_inside_a_server_the_ranks_move_side_by_side_over_pcie():
    """Instance 0 (cards 0-3) to instance 1 (cards 4-7), all under switch sw0.0: card k → sw0.0 → card k+4,
    no link shared, 2 hops of 1 µs: 33,521,664 B / 51.2 GB/s + 2 µs = 656.72 µs for every rank."""
    handoffs, _ = _handoffs(prefill=1)
    decode = handoffs.hand_off(_prefilled(handoffs), 1)
    assert decode.arrival == pytest.approx(1.0 + PER_CARD / PCIE + 2e-6, rel=1e-12)
    assert "nic0->tor" not in handoffs.link_bytes()


def test_a_degraded_nic_slows_the_move_by_its_share():
    """The NIC at 25 % of its bandwidth: 10 GB/s, four times the time on the wire; the hops' latency stays."""
    handoffs, _ = _handoffs()
    handoffs.transfers.topology.degrade("nic0->tor", 25)
    decode = handoffs.hand_off(_prefilled(handoffs), 4)
    assert decode.arrival == pytest.approx(1.0 + 4 * PER_CARD / (NIC / 4) + BETWEEN_SERVERS_S, rel=1e-12)


def test_moves_queue_behind_each_other_on_a_shared_link():
    """A second request prefilled at the same time on instance 1 (cards 4-7) for instance 5: its ranks wait
    for the first request's on the NIC, first come first served."""
    handoffs, _ = _handoffs()
    first = handoffs.hand_off(_prefilled(handoffs, rid=0, instance=0), 4)
    second = handoffs.hand_off(_prefilled(handoffs, rid=1, instance=1), 5)
    assert second.arrival == pytest.approx(first.arrival + 4 * PER_CARD / NIC, rel=1e-12)


def test_layerwise_sending_hides_the_move_behind_the_prefill():
    """``kv_transfer: layerwise``: 32 layers computed evenly over the prefill's 100 ms, each rank's layer
    (a 32nd of 32 MiB, 26.2 µs on the NIC) sent as it is done. The last layer's four ranks leave at the
    prefill's end: 4 × 26.2 µs + 10 µs after it, instead of 4 × 838.0 µs + 10 µs."""
    handoffs, _ = _handoffs(kv_transfer="layerwise")
    decode = handoffs.hand_off(_prefilled(handoffs, scheduled=0.9, finish=1.0), 4)
    assert decode.arrival == pytest.approx(1.0 + 4 * PER_CARD / 32 / NIC + BETWEEN_SERVERS_S, rel=1e-9)
    assert handoffs.link_bytes()["nic0->tor"] == pytest.approx(4 * PER_CARD)


def test_a_request_whose_kv_came_with_it_computes_one_token_and_holds_its_whole_prompt():
    """A decode instance (block size 16, 64 blocks) takes a 100-token prompt with 99 tokens' KV arrived:
    its first step computes the last prompt token and samples; it holds ⌈100 / 16⌉ = 7 blocks of its own
    (no prefix cache: nothing is shared), leaving 57. Preempted, it computes all 100 again (its KV is gone)."""
    engine = load_run(None, engine={"block_size": 16, "max_num_seqs": 4, "max_num_batched_tokens": 256}).engine
    one = OneInstance(engine, 64)
    one.add(1, prompt=100, max_tokens=10, kv_tokens=99)
    step = one.schedule()
    assert step.scheduled == [(1, 1)]
    row = one.rows[1]
    assert (int(one.table.blocks[row]), int(one.sched.free[0]), int(one.table.computed[row])) == (7, 57, 99)
    one.update(step, 0.01)
    assert (int(one.table.computed[row]), int(one.table.output[row])) == (100, 1)
    one.sched._preempt(0)
    assert one.schedule().scheduled == [(1, 101)]          # the prompt and the token it has, recomputed


def test_each_pool_is_routed_by_a_policy_of_its_own():
    """Round robin over a rack of 2 prefill and 2 decode instances, the pools asked in turn: each pool keeps
    its own turn (one turn for both would send every prefill to 0 and every decode to 2)."""
    spec = load_run(None, rack="mini", model="tiny-llama", tp=2, router={"policy": "round_robin",
                                                                        "prefill_instances": 2})
    router = Router(spec.router, 4, 0, pools=2)
    assert [router.route(pool=k % 2) for k in range(6)] == [0, 2, 1, 3, 0, 2]


def test_a_prefill_pool_of_its_own_is_placed_first_and_stepped_by_its_own_engine():
    """Mini rack (2 servers × 4 cards, 2 cards a switch), decode TP 2, 2 prefill instances of TP 1: cards 0
    and 1 prefill, then TP 2 groups on the cards left, switch by switch. One 200-token prompt: a prefill
    engine of 64 tokens a step takes ⌈200 / 64⌉ = 4 steps, one of 2,048 tokens 1; the decode pool, whose
    engine is the run's, decodes its 4 tokens in 4 steps either way; a TP 1 card holds twice the weights
    of a TP 2 card, so fewer KV blocks."""
    def run(budget):
        spec = make_spec(duration_s=1.0, router={"prefill_instances": 2, "policy": "round_robin"},
                         prefill={"tp": 1, "engine": {"max_num_batched_tokens": budget, "max_num_seqs": 64}},
                         workload={"arrival": "offline", "num_prompts": 1, "per_server": False,
                                   "input": LengthSpec(dist="fixed", mean=200), "output": LengthSpec(dist="fixed",
                                                                                                   mean=4)})
        return run_doc(spec)
    doc, outcome = run(64)
    assert outcome.plan.placement.groups == ((0,), (1,), (2, 3), (4, 5), (6, 7))
    assert doc["placement"]["prefill_tp"] == 1 and doc["placement"]["tp"] == 2
    assert doc["prefill_memory_plan"]["weights"] > doc["memory_plan"]["weights"]
    assert doc["prefill_memory_plan"]["num_blocks"] < doc["memory_plan"]["num_blocks"]
    pools = doc["disaggregation"]["pools"]
    assert [(pool["tp"], pool["cards"]) for pool in (pools["prefill"], pools["decode"])] == [(1, 2), (2, 6)]
    assert (pools["prefill"]["steps"], pools["decode"]["steps"]) == (4, 4)
    assert run(2048)[0]["disaggregation"]["pools"]["prefill"]["steps"] == 1
    (record,) = outcome.records
    assert record.handoff.instance == 0 and record.instance == 2 and record.output_len == 4
    assert record.handoff.kv_bytes == 199 * 2 * 4 * 4 * 32 * 2       # K, V × 4 layers × 4 heads × 32 dims × fp16


def _one_prompt(**overrides):
    return make_spec(duration_s=1.0, workload={"arrival": "offline", "num_prompts": 1, "per_server": False,
                                               "input": LengthSpec(dist="fixed", mean=200),
                                               "output": LengthSpec(dist="fixed", mean=1)}, **overrides)


def test_a_prefill_pool_of_tp_4_prefills_as_an_aggregated_rack_of_tp_4_does():
    """Mini rack: one TP 4 prefill instance (server 0: two switches, its collectives cross the uplinks)
    beside TP 2 decode instances. Its prefill of one 200-token prompt takes the time the same prompt's
    only step takes on an aggregated TP 4 rack (its group, program and collectives are that rack's), not
    what it takes at TP 2 (the tiny model's collectives outweigh its compute: TP 4 is slower)."""
    (disaggregated,) = run_doc(_one_prompt(router={"prefill_instances": 1}, prefill={"tp": 4}))[1].records
    (aggregated,) = run_doc(_one_prompt(tp=4))[1].records
    h = disaggregated.handoff
    assert (h.instance, disaggregated.instance, aggregated.instance) == (0, 1, 0)
    assert h.prefilled - h.scheduled == pytest.approx(aggregated.finish - aggregated.scheduled, rel=1e-12)
    (tp2,) = run_doc(_one_prompt(tp=2))[1].records
    assert abs(h.prefilled - h.scheduled - tp2.finish) > 0.05 * tp2.finish        # TP 2's differs (tiny: slower)


@pytest.mark.parametrize("workload", [{}, {"arrival": "closed", "concurrency": 2}])   # busy; quiet epochs
def test_a_prefill_engine_that_changes_nothing_steps_as_the_one_engine_does(workload):
    """A prefill pool whose engine differs only in naming the KV blocks its plan gives: its instances run
    on an engine of their own beside the decode pool's (two engines a host, leaping together over quiet
    epochs as one engine does), and every figure and token time equals the one engine's."""
    from tests.conftest import with_token_times
    blocks = check_plan(_disaggregated()).memory.num_blocks
    docs = []
    for prefill in ({}, {"engine": {"num_blocks_override": blocks}}):
        spec = _disaggregated(prefill=prefill)
        spec = dataclasses.replace(spec, workload=dataclasses.replace(spec.workload, **workload))
        docs.append(with_token_times(*run_doc(spec)))
    for doc in docs:
        doc.pop("config"), doc.pop("prefill_memory_plan", None), doc["placement"].pop("prefill_tp", None)
    assert docs[0]["disaggregation"]["handed_off"] > 10
    assert without_wall_clock(docs[0]) == without_wall_clock(docs[1])


def test_the_compile_report_prices_the_decode_pool_and_names_the_prefill_pool():
    """`rsd-ray compile` of a rack whose prefill pool is TP 1: its steps are the TP 2 decode pool's (priced on
    a decode group, cards 2 and 3), and the prefill pool is named with its own memory plan."""
    from rsd_ray.report.plan import describe
    doc = describe(make_spec(router={"prefill_instances": 2}, prefill={"tp": 1}))
    pool = doc["prefill_pool"]
    assert (doc["tp"], pool["tp"], pool["instances"]) == (2, 1, 2)
    assert pool["memory"]["weights"] > doc["memory"]["weights"]
    aggregated = describe(make_spec())["steps"]                   # the decode pool's steps, as the rack's own
    assert [s["step_s"] for s in doc["steps"]] == [s["step_s"] for s in aggregated]
    assert set(doc["steps"][0]["link_bytes"]) == {"card2->sw0.1", "card3->sw0.1", "sw0.1->card2", "sw0.1->card3"}


def test_a_run_files_prefill_pool_and_the_command_lines_prefill_instances_are_checked_together(tmp_path):
    """A run file with a prefill pool and no prefill instances, and `--prefill-instances 2` on the command
    line: one run (the file's pool, the line's instances), not a refusal of the file alone; the line's
    `--prefill-tp` wins over the file's, and a bad one is blamed on both."""
    from rsd_ray.cli import _spec, parser
    run = tmp_path / "run.yaml"
    run.write_text("rack: mini\nmodel: tiny-llama\ntp: 2\nprefill: {tp: 1, engine: {max_num_batched_tokens: 512}}\n")

    def spec(*flags):
        return _spec(parser("run").parse_args(["run", "--config", str(run), *flags]))
    both = spec("--prefill-instances", "2")
    assert (both.router.prefill_instances, both.prefill_tp, both.prefill_engine.max_num_batched_tokens) == (2, 1, 512)
    assert spec("--prefill-instances", "2", "--prefill-tp", "2").prefill_tp == 2
    with pytest.raises(ConfigError, match=r"run\.yaml and the command line: prefill\.tp = 3"):
        spec("--prefill-instances", "2", "--prefill-tp", "3")
    with pytest.raises(ConfigError, match=r"run\.yaml: prefill\.tp = 1 — .*--prefill-instances"):
        spec()


def test_the_command_lines_engine_options_reach_a_prefill_engine_that_starts_from_the_runs(tmp_path):
    """A run file's prefill engine lists the fields in which it differs from the run's engine, so
    `--max-num-seqs 64` and `--block-size 32` change both pools (the prefill pool had kept the file's 256
    and 16, and a block size the pools must share was refused); an option's error names its flag."""
    from rsd_ray.cli import _spec, parser
    run = tmp_path / "run.yaml"
    run.write_text("rack: mini\nmodel: tiny-llama\ntp: 2\nrouter: {prefill_instances: 2}\n"
                   "prefill: {tp: 1, engine: {max_num_batched_tokens: 512}}\n")

    def spec(*flags):
        return _spec(parser("run").parse_args(["run", "--config", str(run), *flags]))
    s = spec("--max-num-seqs", "64", "--block-size", "32")
    assert [(e.max_num_seqs, e.block_size, e.max_num_batched_tokens) for e in s.engines] == [(64, 32, 512),
                                                                                           (64, 32, 2048)]
    with pytest.raises(ConfigError, match=r"--max-num-seqs: max_num_seqs = 0"):
        spec("--max-num-seqs", "0")


def test_a_sweep_point_changes_the_prefill_pool_field_by_field():
    """``prefill.engine.FIELD`` in a sweep point starts the prefill engine from the run's (its preset's
    2,048-token budget and its other fields), not from an engine's defaults; ``prefill.tp`` alone."""
    from rsd_ray.sweep.points import apply
    spec = make_spec(engine={"max_num_seqs": 32})
    changed = apply(spec, {"router.prefill_instances": 2, "prefill.tp": 1, "prefill.engine.max_num_batched_tokens": 64})
    assert (changed.prefill_tp, changed.tp) == (1, 2)
    assert changed.prefill_engine == dataclasses.replace(spec.engine, max_num_batched_tokens=64)
    assert changed.engine == spec.engine and spec.engine.max_num_batched_tokens == 2048


def test_a_prefill_pool_of_its_own_is_refused_where_it_cannot_work():
    """Only on a disaggregated rack; the KV cache moves as it is (one block size); a TP that fits."""
    with pytest.raises(ConfigError, match=r"prefill\.tp = 1 — .*router.prefill_instances"):
        make_spec(prefill={"tp": 1})
    with pytest.raises(ConfigError, match=r"prefill\.engine\.block_size = 32 — .*engine.block_size \(16\)"):
        make_spec(router={"prefill_instances": 2}, prefill={"engine": {"block_size": 32}})
    with pytest.raises(ConfigError, match=r"prefill\.tp = 3"):
        make_spec(router={"prefill_instances": 2}, prefill={"tp": 3})
    with pytest.raises(ConfigError, match=r"router\.prefill_instances = 8 — they leave no 2 cards together for a"):
        check_plan(make_spec(router={"prefill_instances": 8}, prefill={"tp": 1}))
    with pytest.raises(ConfigError, match=r"router\.prefill_instances = 2 — the rack holds 1 instances of TP 8: use"):
        check_plan(make_spec(router={"prefill_instances": 2}, prefill={"tp": 8}))


def test_a_rack_needs_an_instance_to_decode():
    with pytest.raises(ConfigError, match="router.prefill_instances.*at least one"):
        compile_plan(load_run(None, rack="mini", model="tiny-llama", tp=2, router={"prefill_instances": 4}),
                     Topology(load_run(None, rack="mini").rack, load_run(None, rack="mini").device))


def _disaggregated(prefill=None, **router):
    return make_spec(duration_s=1.0, router={"prefill_instances": 2, **router}, prefill=prefill or {},
                     workload={"arrival": "poisson", "rate": 200.0, "per_server": False})


def _parts(outcome):
    done = [r for r in outcome.records if r.finish is not None]
    return done, np.array([(r.arrival, r.handoff.scheduled, r.handoff.prefilled, r.handoff.ready, r.scheduled,
                            r.token_times[0]) for r in done])


def test_a_disaggregated_run_prefills_in_one_pool_and_decodes_in_the_other():
    """Mini rack, TP 2: instances 0-1 (server 0) prefill, 2-3 (server 1) decode. Every request completes
    with its whole answer from a decode instance; the prefill pool samples one token a request (thrown
    away) and the decode pool computes one prompt token a request (the last) besides its answers; TTFT's
    five parts add up to it; the NIC carries exactly the KV bytes moved."""
    doc, outcome = run_doc(_disaggregated())
    done, t = _parts(outcome)
    assert doc["requests"]["completed"] == doc["requests"]["accepted"] > 50
    assert all(r.instance in (2, 3) and r.handoff.instance in (0, 1) and r.output_len == r.max_tokens for r in done)
    assert (np.diff(t, axis=1) >= 0).all()
    assert np.allclose(t[:, -1] - t[:, 0], [r.token_times[0] - r.arrival for r in done])
    split = doc["disaggregation"]
    pools = split["pools"]
    assert pools["prefill"]["output_tokens"] == len(done) == split["handed_off"]
    assert pools["decode"]["computed_tokens"] == sum(r.output_len for r in done)     # the last prompt token, and
    assert pools["decode"]["output_tokens"] == sum(r.output_len for r in done)       # every answer token but its last
    assert pools["prefill"]["computed_tokens"] == sum(r.prompt_len for r in done)
    nic = {link["link"]: link["bytes"] for link in doc["links"]}["nic0->tor"]
    assert nic == split["kv_bytes"] == sum(r.handoff.kv_bytes for r in done) > 0
    means = [split["ttft_parts"][f"mean_ttft_{p}_ms"] for p in ("queue", "prefill", "transfer", "wait", "step")]
    assert sum(means) == pytest.approx(doc["summary"]["mean_ttft_ms"])


def test_the_timeline_draws_each_kv_move_on_its_decode_instance():
    """A Perfetto trace of a disaggregated run: one ``kv_transfer`` slice per request on its decode
    instance's "KV in" track, from the prefill's end to the KV's arrival, with its bytes."""
    from rsd_ray.report.timeline import KV_TID, TraceSink
    controller = Controller(_disaggregated())
    sink = TraceSink(controller, 0.0, 1.0)
    outcome = controller.run([sink])
    moves = [e for e in sink.timeline() if e["cat"] == "kv_transfer"]
    done = {r.rid: r for r in outcome.records if r.finish is not None and r.arrival < 1.0}
    assert len(moves) == len(done) > 50
    for e in moves:
        r = done[int(e["name"].split()[-1])]
        assert e["tid"] == KV_TID + r.instance and e["args"]["bytes"] == r.handoff.kv_bytes
        assert e["ts"] == pytest.approx(r.handoff.prefilled * 1e6)
        assert e["dur"] == pytest.approx((r.handoff.ready - r.handoff.prefilled) * 1e6)


def test_a_degraded_nic_shows_in_the_transfer_part_of_ttft():
    base, _ = run_doc(_disaggregated())
    controller = Controller(_disaggregated())
    controller.inject([Fault("link", 0, 0.0, value=10.0, link="nic0->tor")])
    slow = build(controller.run())
    before = base["disaggregation"]["ttft_parts"]["mean_ttft_transfer_ms"]
    after = slow["disaggregation"]["ttft_parts"]["mean_ttft_transfer_ms"]
    assert after > 5 * before


@pytest.mark.parametrize("card", [0, 5])          # a prefill card (instance 0), a decode card (instance 2)
def test_a_lost_card_in_either_pool_loses_no_request(card):
    controller = Controller(_disaggregated())
    controller.inject([Fault("card", card, 0.3)])
    outcome = controller.run()
    doc = build(outcome)
    assert balanced(outcome.offered, outcome.refused, outcome.records)
    assert doc["requests"]["retried"] > 0 and doc["requests"]["errored"] == 0
    assert doc["requests"]["completed"] == doc["requests"]["accepted"]
    lost, done = card // 2, [r for r in outcome.records if r.finish is not None]
    assert all(r.handoff.instance != lost for r in done if r.handoff.scheduled > 0.35)
    assert all(r.instance != lost for r in done if r.token_times[0] > 0.35)


@pytest.mark.parametrize("prefill_instances,prefill", [(2, {}), (1, {"tp": 4})])
def test_a_functional_disaggregated_run_writes_the_reference_text_and_moves_the_kv_card_to_card(
        tmp_path, prefill_instances, prefill):
    """`run --model DIR` on a disaggregated mini rack (TP 2: instances 0-1 prefill on server 0, 2-3 decode
    on server 1; or one TP 4 prefill instance, cards 0-3): prompts are computed on instance 0's card
    shards, their KV cache but the last token moved to the first decode instance's cards, which decode —
    rank by rank, or at TP 4 (two KV heads, each on two cards) decode rank j reading head j from prefill
    rank 2j. The text is the reference's greedy continuation, and the bytes the cards received (partial
    sums and KV) equal the link model's, link by link, the NIC carrying the KV: 2 layers × K and V × 1 KV
    head a card × 8 dims × 4 bytes (fp32) = 128 B a token a decode card."""
    from rsd_ray.functional import reference
    from rsd_ray.functional.checkpoint import load, make_model
    make_model(tmp_path / "m", layers=2, hidden=64, heads=8, kv_heads=2, intermediate=128, vocab=300, seed=1)
    ckpt = load(tmp_path / "m")
    spec = make_spec(model=str(tmp_path / "m"), duration_s=0.5, router={"prefill_instances": prefill_instances},
                     prefill=prefill, workload={"arrival": "closed", "concurrency": 4, "per_server": False,
                               "input": dataclasses.replace(make_spec().workload.input, dist="fixed", mean=16),
                               "output": dataclasses.replace(make_spec().workload.output, dist="fixed", mean=8)})
    doc, outcome = run_doc(spec)
    functional = doc["functional"]
    first = functional["samples"][0]
    assert first["ids"] == reference.greedy(ckpt.config, ckpt.weights, first["prompt_ids"], 8)
    moved = functional["link_bytes"]
    assert moved["received"] == moved["link_model"]
    requests = doc["requests"]["offered"]
    assert moved["received"]["nic0->tor"] == requests * 2 * 15 * 128      # 2 cards, 15 tokens each


@pytest.mark.slow
@pytest.mark.parametrize("prefill", [{}, {"tp": 1, "engine": {"max_num_batched_tokens": 4096}}])
def test_a_disaggregated_run_on_ray_equals_inline(ray_session, prefill):
    """Host actors per server, card actors, the KV moves priced by the controller: every figure and every
    token time equal inline's, a lost decode card and a degraded NIC included (the controller degrades its
    own view of the link: on Ray the hosts' links are not its). With a prefill pool of TP 1 and its own
    engine, server 0's host drives two engines (its prefill cards 0-1 and decode cards 2-3)."""
    from tests.test_ray import comparable
    from tests.conftest import with_token_times
    docs = []
    for executor in ("ray", "inline"):
        controller = Controller(_disaggregated(kv_transfer="layerwise", prefill=prefill), executor=executor)
        controller.inject([Fault("card", 5, 0.3), Fault("link", 0, 0.2, value=20.0, link="nic0->tor")])
        outcome = controller.run()
        docs.append(with_token_times(build(outcome), outcome))
    assert docs[0]["emulator"]["executor"] == "ray"
    assert docs[0]["disaggregation"]["handed_off"] > 50
    assert comparable(docs[0]) == comparable(docs[1])


@pytest.mark.slow
def test_a_served_disaggregated_rack_streams_the_decode_pools_tokens_and_meters_each_move(tmp_path):
    """`rsd-ray serve --prefill-instances 2` on the mini rack: a streamed answer has exactly its max_tokens
    (the prefill's own token is dropped, as vLLM's proxy drops it), its request is metered on its decode
    instance, and /metrics counts each KV move and its bytes — the results' total, request by request."""
    from tests.serve_helpers import LiveServer, openai_client
    live = LiveServer(tmp_path, "--rack", "mini", "--model", "tiny-llama", "--tp", "2", "--prefill-instances", "2")
    try:
        client = openai_client(live.base)
        for _ in range(3):
            stream = client.completions.create(model="tiny-llama", prompt="one two three four", max_tokens=5,
                                               stream=True, extra_body={"ignore_eos": True})
            assert sum(1 for c in stream if c.choices and c.choices[0].text) == 5
        moves = live.total("rsd_ray_kv_transfer_seconds_count")
        moved = live.total("rsd_ray_kv_transfer_bytes_total")
        assert moves == 3 and live.total("rsd_ray_kv_transfer_seconds_count", engine="0") == 0
        assert live.total("vllm:request_success_total", engine="0") == 0                  # a prefill instance
    finally:
        code, doc = live.stop()
    assert code == 143 and doc["disaggregation"]["handed_off"] == 3 and doc["disaggregation"]["kv_bytes"] == moved
