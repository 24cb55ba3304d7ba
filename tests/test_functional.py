"""Functional mode: real checkpoints, split by the compiler's plan, agree with an independent single-device
reference (the Ray executor's cards are in test_ray.py, which may use the session's Ray)."""
import json

import numpy as np
import pytest

from rsd_ray.config import ConfigError
from rsd_ray.functional import reference
from rsd_ray.functional.checkpoint import load, make_model
from rsd_ray.functional.kernels import rope_frequencies
from rsd_ray.functional.split import SplitModel, card_shards
from rsd_ray.functional.timing import StepTimer

GIB = 2 ** 30
PROMPTS = [[1, 5, 9, 200, 4], [7, 8], list(range(30, 51))]     # different lengths; 21 tokens cross a KV block


@pytest.fixture(scope="module")
def gqa(tmp_path_factory):
    """8 query heads on 2 KV heads: at TP 4 and 8 each KV head is held by the cards whose queries use it."""
    path = tmp_path_factory.mktemp("gqa")
    make_model(path, layers=2, hidden=64, heads=8, kv_heads=2, intermediate=128, vocab=300, seed=1)
    return path


def reference_logits(ckpt, prompts):
    return np.stack([reference.logits(ckpt.config, ckpt.weights, p)[-1] for p in prompts])


@pytest.mark.parametrize("tp", [1, 2, 4, 8])
def test_split_logits_match_the_reference_for_a_batch_of_prompts(gqa, tp):
    ckpt = load(gqa)
    model = SplitModel(ckpt.config, card_shards(gqa, tp, GIB))
    prefill = model.step([(i, p, 0) for i, p in enumerate(PROMPTS)])
    np.testing.assert_allclose(prefill, reference_logits(ckpt, PROMPTS), rtol=1e-4, atol=1e-5)
    nxt = [int(np.argmax(row)) for row in prefill]                       # one decode step over the paged cache
    decode = model.step([(i, [t], len(p)) for i, (p, t) in enumerate(zip(PROMPTS, nxt))])
    np.testing.assert_allclose(decode, reference_logits(ckpt, [p + [t] for p, t in zip(PROMPTS, nxt)]),
                               rtol=1e-4, atol=1e-5)


def test_each_card_holds_only_its_shards_and_kv_for_its_heads(gqa):
    ckpt = load(gqa)
    cards = card_shards(gqa, 4, GIB)
    total = sum(int(w.nbytes) for w in ckpt.weights.values())
    replicated = sum(int(w.nbytes) for k, w in ckpt.weights.items() if k.endswith("norm.weight"))
    held = [c.ledger.regions["weights"] for c in cards]
    assert len(set(held)) == 1 and held[0] < total / 2                      # a quarter, plus norms and KV copies
    kv_layer = 2 * 64 * 8 * 4                                                # k_proj [2·8, 64] of 2 KV heads, fp32
    assert held[0] == (total - replicated - 2 * 2 * kv_layer) / 4 + replicated + 2 * 2 * kv_layer / 2
    w = cards[3].w["model.layers.0.self_attn.k_proj.weight"]
    np.testing.assert_array_equal(w, ckpt.weights["model.layers.0.self_attn.k_proj.weight"][8:16])   # KV head 1
    assert cards[3].kv_heads == 1 and cards[3].heads == 2


def test_greedy_decoding_of_32_tokens_is_the_same_split_and_unsplit(gqa):
    ckpt = load(gqa)
    want = reference.greedy(ckpt.config, ckpt.weights, PROMPTS[0], 32)
    for tp in (1, 4):
        ids, steps = SplitModel(ckpt.config, card_shards(gqa, tp, GIB)).generate([PROMPTS[0]], 32)
        assert ids[0] == want and len(steps) == 32


def test_seeded_sampling_repeats_itself_and_batches_decode_together(gqa):
    ckpt = load(gqa)
    model = SplitModel(ckpt.config, card_shards(gqa, 2, GIB))
    a, _ = model.generate(PROMPTS, 8, temperature=1.0, seed=3)
    b, _ = model.generate(PROMPTS, 8, temperature=1.0, seed=3)
    c, _ = model.generate(PROMPTS, 8, temperature=1.0, seed=4)
    assert a == b and a != c and all(len(x) == 8 for x in a)
    assert all(blocks == 0 for card in model.cards for blocks in [len(card.kv.tables)])   # released


@pytest.mark.parametrize("dtype,rtol", [("float16", 1e-3), ("bfloat16", 8e-3)])
def test_half_precision_and_sharded_checkpoints_load_as_written(tmp_path, gqa, dtype, rtol):
    make_model(tmp_path, layers=2, hidden=64, heads=8, kv_heads=2, intermediate=128, vocab=300, seed=1, dtype=dtype,
               shards=3)
    assert json.loads((tmp_path / "model.safetensors.index.json").read_text())["weight_map"]
    half, full = load(tmp_path).weights, load(gqa).weights
    assert half.keys() == full.keys()
    for name, w in full.items():
        np.testing.assert_allclose(half[name], w, rtol=rtol, atol=1e-6)


def test_tied_embeddings_and_the_tokenizer_round_trip(tmp_path):
    make_model(tmp_path, tie=True, vocab=300)
    ckpt = load(tmp_path)
    assert ckpt.weights["lm_head.weight"] is ckpt.weights["model.embed_tokens.weight"]
    text = "Hello, rack — ünïcode ✓"
    assert ckpt.tokenizer.decode(ckpt.tokenizer.encode(text).ids) == text
    model = SplitModel(ckpt.config, card_shards(tmp_path, 2, GIB))
    np.testing.assert_allclose(model.step([(0, PROMPTS[0], 0)]), reference_logits(ckpt, PROMPTS[:1]), rtol=1e-4,
                               atol=1e-5)


def test_llama3_rope_scaling_by_hand():
    """Wavelengths above 8192/1 are slowed 8x, below 8192/4 kept, between blended (Llama 3's rule)."""
    scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8192}
    inv = rope_frequencies(128, 500000.0, None)
    scaled = rope_frequencies(128, 500000.0, scaling)
    wavelen = 2 * np.pi / inv
    assert np.all(scaled[wavelen < 2048] == inv[wavelen < 2048])
    np.testing.assert_allclose(scaled[wavelen > 8192], inv[wavelen > 8192] / 8)
    mid = (wavelen >= 2048) & (wavelen <= 8192)
    smooth = (8192 / wavelen[mid] - 1) / 3
    np.testing.assert_allclose(scaled[mid], (1 - smooth) * inv[mid] / 8 + smooth * inv[mid])
    assert mid.any() and (wavelen > 8192).any()


def test_a_checkpoint_too_big_for_a_card_is_refused_with_the_numbers(gqa):
    with pytest.raises(ConfigError) as err:
        card_shards(gqa, 2, 2 ** 17)                                      # a 128 KiB card
    msg = str(err.value)
    assert "0.12 MiB budget" in msg and "weights" in msg and "raise --tp" in msg
    card_shards(gqa, 8, 2 ** 17)                                          # split eight ways it fits
    with pytest.raises(ConfigError, match="--tp"):
        card_shards(gqa, 3, GIB)


@pytest.mark.parametrize("tp", [2, 4, 8])
def test_the_bytes_moved_per_link_are_the_bytes_the_link_model_charges(gqa, tp):
    """Per step (a prefill of three prompts, then a decode step), the partial sums the cards exchanged,
    put on the links of their paths, equal what the compiled program's collectives charge each link
    (one-shot all-reduces: every card's partial to every other card); the token ids in and logits out of
    each card equal its External HDMA bytes."""
    ckpt = load(gqa)
    timer = StepTimer(ckpt.config, "gqa", tp)
    model = SplitModel(ckpt.config, card_shards(gqa, tp, GIB), timer=timer)
    for batch in ([(i, p, 0) for i, p in enumerate(PROMPTS)], [(i, [3], len(p)) for i, p in enumerate(PROMPTS)]):
        model.step(batch)
        assert timer.received_bytes([c.received for c in model.cards]) == timer.card_to_card_bytes()
        assert model.host_bytes == [timer.host_bytes()[c] for c in timer.cards]
    sends = 2 * (1 + 2 * 2) * (tp - 1)                   # 2 steps x (embedding + 2 per layer) x peers
    assert sum(model.cards[0].received.values()) == sends / 2 * 64 * 4 * (28 + 3)    # h fp32 x tokens
    assert model.durations[0] > model.durations[1] > 0   # a prefill of 28 tokens costs more than 3 decodes


def test_generate_prints_the_ids_the_reference_decodes(gqa, capsys):
    from rsd_ray.cli import main
    ckpt = load(gqa)
    assert main(["generate", "--model", str(gqa), "--tp", "4", "--prompt-ids", "1,5,9,200,4", "--max-tokens", "12",
                 "--executor", "inline", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ids"] == reference.greedy(ckpt.config, ckpt.weights, PROMPTS[0], 12)
    assert doc["text"] == ckpt.tokenizer.decode(doc["ids"]) and len(doc["cards"]) == 4
    assert 0 < doc["virtual"]["tpot_s"] < doc["virtual"]["ttft_s"]
    assert main(["generate", "--model", str(gqa), "--prompt-ids", "1,999", "--executor", "inline"]) == 2
    assert "0..299" in capsys.readouterr().err
    assert main(["generate", "--model", str(gqa.parent), "--prompt", "hi", "--executor", "inline"]) == 2
    assert "config.json" in capsys.readouterr().err


SMALL = "arrival: closed\nconcurrency: 4\nper_server: false\ninput: {dist: fixed, mean: 16}\noutput: {dist: fixed, mean: 8}\n"


def test_run_with_a_checkpoint_writes_real_tokens_on_performance_modes_timing(gqa, tmp_path, capsys):
    """`run --model DIR` is functional: each request's continuation comes from the split weights, and
    every figure of the results equals a performance run of the same architecture (same shapes, same
    timing); the results keep a few requests' ids and text."""
    import dataclasses

    from rsd_ray.cli import main
    from rsd_ray.config import load_run
    from rsd_ray.rack.controller import Controller
    from rsd_ray.report.results import build, without_wall_clock
    (tmp_path / "small.yaml").write_text(SMALL)
    out = tmp_path / "r.json"
    assert main(["run", "--executor", "inline", "--model", str(gqa), "--tp", "4", "--duration", "2",
                 "--workload", str(tmp_path / "small.yaml"), "--no-progress", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    model = doc["config"]["model"]
    assert (model["num_heads"], model["num_kv_heads"], model["dtype"], model["checkpoint"]) == (8, 2, "fp32",
                                                                                               str(gqa.resolve()))
    functional = doc.pop("functional")
    ckpt = load(gqa)
    first = functional["samples"][0]
    assert len(first["prompt_ids"]) == 16 and first["ids"] == reference.greedy(ckpt.config, ckpt.weights,
                                                                               first["prompt_ids"], 8)
    assert first["text"] == ckpt.tokenizer.decode(first["ids"])
    assert functional["tokens_computed"] == 24 * doc["requests"]["offered"]
    spec = load_run(None, model=str(gqa), tp=4, duration_s=2.0, workload=str(tmp_path / "small.yaml"))
    performance = build(Controller(dataclasses.replace(spec, model=dataclasses.replace(spec.model, checkpoint=""))).run())
    mine, theirs = without_wall_clock(doc), without_wall_clock(json.loads(json.dumps(performance)))
    mine["config"]["model"]["checkpoint"] = ""
    assert mine == theirs
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    assert main(["run", "--executor", "inline", "--model", str(broken), "--no-progress"]) == 2
    assert "not a Llama config.json" in capsys.readouterr().err


def served_answer(ckpt, prompt: str, max_tokens: int) -> tuple[list[int], list[int]]:
    """A text prompt's ids and the reference's greedy answer as a server sends it (up to its EOS, kept)."""
    ids = ckpt.tokenizer.encode(prompt).ids
    want = reference.greedy(ckpt.config, ckpt.weights, ids, max_tokens)
    if ckpt.config.eos_token_id in want:
        want = want[:want.index(ckpt.config.eos_token_id) + 1]
    return ids, want


@pytest.mark.slow
def test_serve_with_a_checkpoint_answers_with_the_models_own_text(gqa, tmp_path):
    """The OpenAI SDK against `rsd-ray serve --model DIR`: the text is the split model's greedy continuation
    (ending at its EOS or max_tokens), streamed token by token at the rack's paced times."""
    from tests.serve_helpers import LiveServer, openai_client
    ckpt, prompt = load(gqa), "Hello, rack"
    ids, want = served_answer(ckpt, prompt, 12)
    live = LiveServer(tmp_path, "--model", str(gqa), "--tp", "4", "--served-model-name", "tiny")
    try:
        client = openai_client(live.base)
        whole = client.completions.create(model="tiny", prompt=prompt, max_tokens=12)
        assert whole.choices[0].text == ckpt.tokenizer.decode(want)
        assert (whole.usage.prompt_tokens, whole.usage.completion_tokens) == (len(ids), len(want))
        assert whole.system_fingerprint == f"rsd-ray-functional-mode:{gqa.name}:tp4"
        stream = client.completions.create(model="tiny", prompt=ids, max_tokens=12, stream=True)
        assert "".join(c.choices[0].text for c in stream if c.choices) == ckpt.tokenizer.decode(want)
        chat = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}],
                                              max_tokens=5, extra_body={"ignore_eos": True})
        assert chat.usage.completion_tokens == 5 and chat.choices[0].message.content
    finally:
        live.stop()


@pytest.mark.slow
@pytest.mark.parametrize("pools", [(), ("--prefill-instances", "1"), ("--prefill-instances", "2", "--prefill-tp", "2")])
def test_a_functional_serve_on_ray_writes_on_card_actors_that_receive_what_the_link_model_charges(gqa, tmp_path,
                                                                                                  pools):
    """`rsd-ray serve --model DIR` on Ray: the text is written by four card actors (beside the rack's card
    actors) that hand each other their partial sums as Ray objects — disaggregated, the prompt on server 0's
    instance and the decode on server 1's, each decode card fetching its KV cache from its prefill card's
    object store (with two TP 2 prefill instances, the heads it holds from the prefill card that does); the
    answer is the reference's greedy text, and the results hold, link by link, the bytes
    the cards received equal to the bytes the link model charged for the same steps (the NIC's: the KV)."""
    from tests.serve_helpers import LiveServer, openai_client
    ckpt, prompt = load(gqa), "Hello, rack"
    _, want = served_answer(ckpt, prompt, 10)
    live = LiveServer(tmp_path, "--model", str(gqa), "--tp", "4", "--rack", "mini", "--served-model-name", "tiny",
                      *pools, executor="ray")
    try:
        client = openai_client(live.base)
        whole = client.completions.create(model="tiny", prompt=prompt, max_tokens=10)
        assert whole.choices[0].text == ckpt.tokenizer.decode(want)
    finally:
        code, doc = live.stop()
    assert code == 143 and doc["emulator"]["executor"] == "ray"       # SIGTERM: 128 + 15, results saved
    moved = doc["functional"]["link_bytes"]
    assert moved["received"] == moved["link_model"]
    assert sum(moved["received"].values()) > 0 and set(moved["received"]) >= {"card1->sw0.0", "sw0.0->card0"}
    assert ("nic0->tor" in moved["received"]) == bool(pools)


def test_the_timer_and_the_split_check_tp_against_the_checkpoint_not_a_preset(tmp_path):
    """TP 3 suits a model of 6 heads and 3 KV heads (not the default preset's 32 heads): both accept it, and
    both refuse TP 4 with the compiler's own rule and the degrees that would do."""
    make_model(tmp_path, hidden=48, heads=6, kv_heads=3, intermediate=96)
    ckpt = load(tmp_path)
    assert StepTimer(ckpt.config, "six", 3).cards == [0, 1, 2]
    assert len(card_shards(tmp_path, 3, GIB)) == 3
    with pytest.raises(ConfigError, match=r"--tp = 4 .*tp must divide both: \[1, 2, 3, 6\]"):
        card_shards(tmp_path, 4, GIB)
    with pytest.raises(ConfigError, match=r"tp = 4 .*tp must divide both: \[1, 2, 3, 6\]"):
        StepTimer(ckpt.config, "six", 4)


def test_generation_halted_by_a_stop_signal_ends_after_the_current_token(gqa):
    """``rsd-ray generate`` passes ``halt`` = "a stop signal came": the text so far is kept, the cards freed."""
    ckpt = load(gqa)
    model = SplitModel(ckpt.config, card_shards(gqa, 2, GIB))
    steps = []
    ids, _ = model.generate([PROMPTS[0]], 32, halt=lambda: steps.append(1) or len(steps) >= 3)
    assert len(ids[0]) == 3                                   # the prefill's token and two decode steps
    again, _ = model.generate([PROMPTS[0]], 5)                # its KV was released: the cards serve again
    assert again[0][:3] == ids[0]


@pytest.fixture(scope="module")
def twins(tmp_path_factory):
    """One seed's weights written three ways: fp32, and projections as INT8 and INT4 (groups of 32)."""
    root = tmp_path_factory.mktemp("twins")
    for scheme in ("none", "w8a16", "w4a16"):
        make_model(root / scheme, layers=2, hidden=64, heads=8, kv_heads=2, intermediate=128, vocab=300, seed=5,
                   quantize=scheme)
    return root


@pytest.mark.parametrize("scheme,bits,worst", [("w8a16", 8, 0.02), ("w4a16", 4, 0.25)])
def test_a_quantised_checkpoint_split_over_cards_is_its_format_away_from_its_fp32_twin(twins, scheme, bits, worst):
    """Each weight is its fp32 twin rounded to the nearest step of its group's fp16 scale (max |w| / 127, or
    / 7), so within half a step; the split model on 1, 2 and 4 cards equals the reference on those weights,
    and its logits are within the format's error of the fp32 twin's (INT8 under 2 %, INT4 under 25 % in L2
    on this tiny random model; INT8 decodes the same 16 tokens). A card's memory holds the format's bytes."""
    from rsd_ray.compiler.shard import weight_bytes_per_card
    from rsd_ray.functional.checkpoint import quantised
    fp32, quant = load(twins / "none"), load(twins / scheme)
    name = "model.layers.1.mlp.down_proj.weight"
    _, scale = quantised(fp32.weights[name], bits, 32)
    step = np.repeat(scale.astype(np.float32), 32, axis=1)
    assert (np.abs(quant.weights[name] - fp32.weights[name]) <= 0.51 * step).all()
    assert not np.array_equal(quant.weights[name], fp32.weights[name])
    for tp in (1, 2, 4):
        cards = card_shards(twins / scheme, tp, GIB)
        got = SplitModel(quant.config, cards).step([(i, p, 0) for i, p in enumerate(PROMPTS)])
        np.testing.assert_allclose(got, reference_logits(quant, PROMPTS), rtol=1e-4, atol=1e-5)
        model = quant.config.model_spec("q", "fp32")
        assert model.quantization == scheme and cards[0].ledger.regions["weights"] == weight_bytes_per_card(model, tp)
    twin = reference_logits(fp32, PROMPTS)
    assert np.linalg.norm(got - twin) / np.linalg.norm(twin) < worst
    if bits == 8:
        ids, _ = SplitModel(quant.config, card_shards(twins / scheme, 2, GIB)).generate([PROMPTS[0]], 16)
        assert ids[0] == reference.greedy(fp32.config, fp32.weights, PROMPTS[0], 16)


@pytest.mark.parametrize("quantize", ["none", "w4a16"])
def test_a_tiny_mixture_of_experts_split_over_cards_equals_the_reference(tmp_path, quantize):
    """A Mixtral of 4 experts (2 a token): each of tp cards holds 4/tp whole experts and runs them on the
    tokens that picked them; the sum over cards equals the reference, which routes token by token."""
    make_model(tmp_path / "moe", layers=2, hidden=64, heads=8, kv_heads=2, intermediate=96, vocab=300, seed=2,
               experts=4, experts_per_token=2, quantize=quantize)
    ckpt = load(tmp_path / "moe")
    want = reference_logits(ckpt, PROMPTS)
    for tp in (1, 2, 4):
        cards = card_shards(tmp_path / "moe", tp, GIB)
        assert cards[0].w["model.layers.0.mlp.experts.gate_up_proj.weight"].shape == (4 // tp * 2 * 96, 64)
        got = SplitModel(ckpt.config, cards).step([(i, p, 0) for i, p in enumerate(PROMPTS)])
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    ids, _ = SplitModel(ckpt.config, card_shards(tmp_path / "moe", 2, GIB)).generate([PROMPTS[1]], 8)
    assert ids[0] == reference.greedy(ckpt.config, ckpt.weights, PROMPTS[1], 8)
