"""Quantised weights and KV caches, pinned by hand: bytes from the model's shape and the format's width,
times from the device sheet (``rsd_ray.compiler.formats``)."""
import dataclasses

import numpy as np
import pytest

from rsd_ray.calibration import COMMAND_LAUNCH_S, COMPUTE_EFFICIENCY, DEQUANT_OPS_PER_WEIGHT, DRAM_EFFICIENCY
from rsd_ray.compiler import compile_program, plan_memory
from rsd_ray.compiler.formats import KV_CACHE_DTYPES, SCHEMES
from rsd_ray.config import ConfigError, EngineSpec, ModelSpec, load_part, load_run, replace
from rsd_ray.config.schema import choices
from rsd_ray.hardware.costmodel import StepCost
from rsd_ray.report.plan import precision

ATOM = load_part("devices", "atom", "test")
H100 = load_part("devices", "h100-sxm", "test")
LLAMA8 = load_part("models", "llama3-8b", "test")
ATOM_BW = 256e9 * DRAM_EFFICIENCY                       # bytes/s the cost model streams at on ATOM


def _quant(model, scheme):
    return dataclasses.replace(model, quantization=scheme)


def _by_name(program, cost, x):
    times = cost.command_times(x)[0]
    work = [c for c in program.commands if c.kind != "device_sync"]
    return {c.name: t for c, t in zip(work, times) if c.layer == 0}, work


def test_every_scheme_and_kv_dtype_the_specs_accept_has_a_format():
    assert set(choices(ModelSpec, "quantization")) == set(SCHEMES)
    assert set(choices(EngineSpec, "kv_cache_dtype")) == set(KV_CACHE_DTYPES)


def test_an_int4_weight_only_decode_step_reads_half_a_byte_a_weight_and_one_fp16_scale_per_128():
    """Llama 3 8B at TP 4 on ATOM, one sequence decoding at context 1,000. Per card and layer:
    qkv [1,024 + 2·256 = 1,536 out, 4,096 in], o [4,096, 1,024], gate_up [2·3,584, 4,096], down [4,096, 3,584];
    each weight 0.5 B plus 2 B per 128 inputs per output row."""
    model = _quant(LLAMA8, "w4a16")
    program = compile_program(model, 4, 0)
    cost = StepCost(program, ATOM)
    x = np.array([[1.0, 1, 1, 1001, 1001]])                  # one token at context 1,000 (1,001 with itself)
    shapes = {"qkv_proj": (1536, 4096), "o_proj": (4096, 1024), "gate_up_proj": (7168, 4096),
              "down_proj": (4096, 3584)}
    weights = {n: o * i * 0.5 + o * (i // 128) * 2 for n, (o, i) in shapes.items()}
    assert weights["qkv_proj"] == 3_145_728 + 98_304
    times, work = _by_name(program, cost, x)
    per_command = {c.name: c.flops for c in work if c.layer == 0}
    for name, (o, i) in shapes.items():
        assert per_command[name][:2] == (DEQUANT_OPS_PER_WEIGHT * i * o, 2.0 * i * o)   # per pass, per token
        streamed = weights[name] + (i + o) * 2                  # + the token's activations in and out (fp16)
        assert times[name] == pytest.approx(streamed / ATOM_BW + COMMAND_LAUNCH_S, rel=1e-12)   # memory-bound
        flops = 2 * i * o + DEQUANT_OPS_PER_WEIGHT * i * o      # the product, and dequantising every weight
        assert flops / (32e12 * COMPUTE_EFFICIENCY) < weights[name] / ATOM_BW
    linear = 32 * sum(weights.values())
    embed_norms = 32 * 2 * 4096 * 2 + 4096 * 2 + 4096 * 128256 // 4 * 2     # norms, final norm, lm_head (fp16)
    step_weights = sum(c.dram[0] for c in work)
    assert step_weights == pytest.approx(linear + embed_norms, rel=1e-12)
    # 32 · (27,262,976 B of int4 + 851,968 B of scales) + 532,480 B of norms + 262,668,288 B of lm_head
    assert step_weights == 1_162_878_976
    fp16 = sum(c.dram[0] for c in compile_program(LLAMA8, 4, 0).commands)
    assert fp16 == 32 * 109_051_904 + 532_480 + 262_668_288           # 31 % of the fp16 step's weight reads


def test_w8a8_computes_at_the_int8_peak_and_fp8_falls_back_to_fp16_without_fp8_units():
    """A 4,096-token prefill chunk's qkv_proj is compute-bound: 2 · 4,096 · 1,536 · 4,096 FLOPs."""
    x = np.array([[1.0, 4096, 1, 4096 * 4097 / 2, 4096]])
    flops = 2 * 4096 * 1536 * 4096
    expect = {("w8a8", "atom"): 128e12, ("fp8", "atom"): 32e12, ("none", "atom"): 32e12,
              ("fp8", "h100-sxm"): 1978.9e12, ("w8a8", "h100-sxm"): 1978.9e12, ("none", "h100-sxm"): 989.4e12}
    for (scheme, device), peak in expect.items():
        program = compile_program(_quant(LLAMA8, scheme), 4, 0)
        dev = ATOM if device == "atom" else H100
        times, _ = _by_name(program, StepCost(program, dev), x)
        assert times["qkv_proj"] == pytest.approx(flops / (peak * COMPUTE_EFFICIENCY) + COMMAND_LAUNCH_S, rel=1e-12)
        assert times["attention"] > 0 and times["rope"] > 0   # the rest computes in fp16 either way


def test_an_fp8_kv_cache_holds_twice_the_blocks_in_the_same_bytes():
    """Llama 3 8B TP 4: a token's K and V on one card are 2 · 32 layers · 2 KV heads · 128 dims, 2 B each in
    fp16 (32 KiB), 1 B in fp8 (16 KiB); a block is 16 tokens. The weights do not change, so the KV region is
    the same bytes and the blocks are its floor division."""
    engine = load_part("engines", "default", "test")
    fp16 = plan_memory(LLAMA8, 4, ATOM, engine)
    fp8 = plan_memory(LLAMA8, 4, ATOM, dataclasses.replace(engine, kv_cache_dtype="fp8"))
    assert fp16.kv_cache == fp8.kv_cache
    assert (fp16.kv_bytes_per_token, fp8.kv_bytes_per_token) == (32_768, 16_384)
    assert fp8.num_blocks == fp8.kv_cache // (16 * 16_384) and fp16.num_blocks == fp16.kv_cache // (16 * 32_768)
    assert fp8.num_blocks == 2 * fp16.num_blocks or fp8.num_blocks == 2 * fp16.num_blocks + 1
    attention = [c for c in compile_program(LLAMA8, 4, 0, kv_cache_dtype="fp8").commands if c.name == "attention"]
    plain = [c for c in compile_program(LLAMA8, 4, 0).commands if c.name == "attention"]
    assert attention[0].dram[4] == plain[0].dram[4] / 2     # half the bytes read per cached token


def test_quantised_weights_leave_room_for_70b_on_fewer_cards():
    """Llama 3 70B in fp16 needs TP 16 on ATOM; in int4 (≈ 35 GB of weights) TP 4 fits."""
    spec = load_run(None, rack="atom-server", model="llama3-70b", tp=16, duration_s=1.0)
    with pytest.raises(ConfigError, match="use tp ≥ 16"):
        plan_memory(spec.model, 4, ATOM, spec.engine)
    plan = plan_memory(_quant(spec.model, "w4a16"), 4, ATOM, spec.engine)
    assert plan.num_blocks > 0 and plan.weights < ATOM.usable_bytes


def test_the_compile_report_shows_what_the_formats_changed():
    spec = load_run(None, rack="atom-server", model="llama3-8b", tp=4, duration_s=1.0)
    spec = dataclasses.replace(spec, model=_quant(spec.model, "fp8"),
                               engine=dataclasses.replace(spec.engine, kv_cache_dtype="fp8"))
    q = precision(spec, plan_memory(spec.model, 4, ATOM, spec.engine))
    assert (q["weights"], q["matmul_compute"], q["matmul_runs_in"], q["kv_cache"]) == ("fp8", "fp8", "fp16", "fp8")
    assert q["quantised"]["weights"] < 0.6 * q["unquantised"]["weights"]
    assert q["quantised"]["num_blocks"] > 2 * q["unquantised"]["num_blocks"]


def test_a_checkpoint_keeps_its_own_format_in_functional_mode(tmp_path):
    """Functional mode multiplies in fp32 what a card holds: weight-only schemes come from the checkpoint
    (make-model --quantize); W8A8, FP8, an 8-bit KV cache and --quantization over a checkpoint are refused."""
    import subprocess
    import sys
    from rsd_ray.functional.checkpoint import make_model
    make_model(tmp_path / "m")
    spec = load_run(None, rack="mini", model=str(tmp_path / "m"), tp=2, duration_s=1.0)
    with pytest.raises(ConfigError, match="quantization = 'w8a8' — functional mode multiplies"):
        replace(spec.model, "--quantization", quantization="w8a8")
    with pytest.raises(ConfigError, match="kv_cache_dtype = 'fp8' — functional mode keeps"):
        replace(spec, "command line", engine=replace(spec.engine, "--kv-cache-dtype", kv_cache_dtype="fp8"))
    res = subprocess.run([sys.executable, "-m", "rsd_ray.cli", "compile", "--rack", "mini", "--tp", "2", "--model",
                          str(tmp_path / "m"), "-q", "w4a16"], capture_output=True, text=True)
    assert res.returncode == 2 and "--quantization = 'w4a16' — a checkpoint's weights are in its own" in res.stderr


def test_a_config_json_alone_describes_experts_and_quantisation_and_is_priced(tmp_path):
    """``--model PATH/config.json``: the architecture without weights (performance mode) — Mixtral's expert
    fields, and an AWQ checkpoint's quantization_config (4 bits, group 128 → w4a16). Llama 3 70B in fp16
    needs TP 16 on ATOM; its AWQ checkpoint fits at TP 4, and compile says the fp16 plan would not."""
    import json
    (tmp_path / "mixtral").mkdir()
    (tmp_path / "mixtral" / "config.json").write_text(json.dumps({
        "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
        "num_key_value_heads": 8, "vocab_size": 32000, "max_position_embeddings": 32768, "num_local_experts": 8,
        "num_experts_per_tok": 2, "torch_dtype": "bfloat16"}))
    spec = load_run(None, rack="atom-server", model=str(tmp_path / "mixtral" / "config.json"), tp=8)
    preset = load_part("models", "mixtral-8x7b", "test")
    fields = ("num_experts", "experts_per_token", "hidden_size", "intermediate_size", "num_layers", "dtype")
    assert [getattr(spec.model, f) for f in fields] == [getattr(preset, f) for f in fields]
    assert spec.model.checkpoint == "" and spec.model.name == "mixtral"
    awq = {"hidden_size": 8192, "intermediate_size": 28672, "num_hidden_layers": 80, "num_attention_heads": 64,
           "num_key_value_heads": 8, "vocab_size": 128256, "max_position_embeddings": 8192, "torch_dtype": "float16",
           "quantization_config": {"quant_method": "awq", "bits": 4, "group_size": 128}}
    (tmp_path / "awq.json").write_text(json.dumps(awq))
    spec = load_run(None, rack="atom-server", model=str(tmp_path / "awq.json"), tp=4)
    assert (spec.model.quantization, spec.model.quant_group_size) == ("w4a16", 128)
    q = precision(spec, plan_memory(spec.model, 4, ATOM, spec.engine))
    assert q["unquantised"]["num_blocks"] is None and q["quantised"]["num_blocks"] > 0
    awq["quantization_config"] = {"quant_method": "squeezellm", "bits": 4}
    (tmp_path / "other.json").write_text(json.dumps(awq))
    with pytest.raises(ConfigError, match="quant_method = 'squeezellm 4' — read here: awq 4-bit"):
        load_run(None, model=str(tmp_path / "other.json"))
