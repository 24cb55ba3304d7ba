"""Llama checkpoints in the Hugging Face layout: read them, and write small random ones.

A directory holds ``config.json`` (LlamaConfig's keys), ``model.safetensors`` or shards
``model-0000i-of-0000n.safetensors`` with ``model.safetensors.index.json``, and optionally
``tokenizer.json``. Tensors are fp32, fp16 or bf16; they are computed in fp32. numpy has no bf16,
so bf16 tensors are read from the file's own table (the safetensors layout) and widened.

Two more kinds, both written by ``make_model``:

- **Quantised weights** (``quantization_config: {quant_method: rsd-ray, bits: 8 | 4, group_size: g}``):
  each projection ``X.weight`` is stored as integers with ``X.weight_scale`` (fp16, [out, in/g]):
  symmetric, w = q · scale, q in −127…127 (int8, I8) or −8…7 (two a byte, low nibble first, stored
  as q + 8, U8). Read back as the fp32 weights they stand for: a card multiplies in fp32 what it holds
  in the format (weight-only, as w8a16/w4a16 do), and its memory is charged in the format.
- **A mixture of experts** in Mixtral's layout (``num_local_experts``, ``num_experts_per_tok``;
  ``block_sparse_moe.gate`` and ``block_sparse_moe.experts.E.w1/w3/w2``, gate/up/down). Read back
  stacked as the compiler's shard plan cuts them: ``mlp.gate`` and ``mlp.experts.gate_up_proj``
  ([E·2I, h]: each expert's gate rows then its up rows) and ``mlp.experts.down_proj`` ([E·h, I]).
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rsd_ray.config import ConfigError
from rsd_ray.config.checkpoint import LlamaConfig, read_config

LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8192}
DTYPES = {"float32": np.float32, "float16": np.float16, "bfloat16": None}
SAFETENSORS_DTYPE = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}
SPECIALS = ("<|begin_of_text|>", "<|end_of_text|>")


@dataclass
class Checkpoint:
    path: Path
    config: LlamaConfig
    weights: dict[str, np.ndarray]       # Hugging Face names, fp32
    tokenizer: object | None = None      # a tokenizers.Tokenizer when tokenizer.json is there


def load(path) -> Checkpoint:
    """Read a checkpoint directory; a missing or unreadable part is a ConfigError naming it."""
    root = Path(path)
    config = read_config(root)
    index = root / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() else \
        ["model.safetensors"]
    weights: dict[str, np.ndarray] = {}
    for name in files:
        if not (root / name).is_file():
            raise ConfigError(str(root), "weights", name, "no such file; the checkpoint is incomplete")
        weights.update(read_safetensors(root / name))
    weights = _stacked_experts(_dequantised(weights, config), config)
    if config.tie_word_embeddings:
        weights.setdefault("lm_head.weight", weights["model.embed_tokens.weight"])
    tokenizer = None
    if (root / "tokenizer.json").is_file():
        from tokenizers import Tokenizer
        tokenizer = Tokenizer.from_file(str(root / "tokenizer.json"))
    return Checkpoint(root, config, weights, tokenizer)


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of one file as fp32: the safetensors library for fp32/fp16, the file's table for bf16."""
    from safetensors import safe_open
    with open(path, "rb") as fh:
        size = struct.unpack("<Q", fh.read(8))[0]
        table = json.loads(fh.read(size))
    out = {}
    bf16 = {k for k, v in table.items() if k != "__metadata__" and v["dtype"] == "BF16"}
    with safe_open(str(path), framework="numpy") as f:
        for key in f.keys():
            if key not in bf16:
                tensor = f.get_tensor(key)
                out[key] = tensor if tensor.dtype.kind in "iu" else tensor.astype(np.float32)
    if bf16:
        raw = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + size)
        for key in bf16:
            start, stop = table[key]["data_offsets"]
            halves = np.frombuffer(raw[start:stop].tobytes(), dtype="<u2").astype(np.uint32) << 16
            out[key] = halves.view(np.float32).reshape(table[key]["shape"])
    return out


QUANT_BITS = {"w8a16": 8, "w4a16": 4}          # the weight-only schemes a checkpoint is written (and run) in


def _dequantised(weights: dict, config) -> dict:
    """Integer projections and their scales → the fp32 weights they stand for."""
    qc = config.extra.get("quantization_config") or {}
    if qc.get("quant_method") != "rsd-ray":
        return weights
    group = qc["group_size"]
    out = {}
    for name, w in weights.items():
        if name.endswith(".weight_scale"):
            continue
        if w.dtype.kind in "iu":
            q = w.astype(np.int16) if qc["bits"] == 8 else _unpacked(w)
            scale = np.repeat(weights[name + "_scale"].astype(np.float32), group, axis=1)[:, :q.shape[1]]
            w = q.astype(np.float32) * scale
        out[name] = w
    return out


def _unpacked(packed: np.ndarray) -> np.ndarray:
    low, high = (packed & 0x0F).astype(np.int16) - 8, (packed >> 4).astype(np.int16) - 8
    return np.stack([low, high], axis=-1).reshape(packed.shape[0], -1)


def quantised(w: np.ndarray, bits: int, group: int) -> tuple[np.ndarray, np.ndarray]:
    """(integers as stored, fp16 scales [out, in/group]) of one [out, in] weight: symmetric, round to nearest."""
    top = 2 ** (bits - 1) - 1
    out, n_in = w.shape
    groups = -(-n_in // group)
    padded = np.pad(w, ((0, 0), (0, groups * group - n_in))).reshape(out, groups, group)
    scale = (np.abs(padded).max(axis=2) / top).astype(np.float16)
    safe = np.where(scale == 0, np.float16(1), scale).astype(np.float32)
    q = np.clip(np.rint(padded / safe[:, :, None]), -top - 1, top).reshape(out, -1)[:, :n_in].astype(np.int8)
    if bits == 8:
        return q, scale
    nibbles = (q.astype(np.int16) + 8).astype(np.uint8)
    if n_in % 2:
        nibbles = np.pad(nibbles, ((0, 0), (0, 1)), constant_values=8)
    return (nibbles[:, 0::2] | (nibbles[:, 1::2] << 4)).astype(np.uint8), scale


def _stacked_experts(weights: dict, config) -> dict:
    """Mixtral's per-expert tensors stacked as the shard plan cuts them (``mlp.experts.*``)."""
    experts = config.extra.get("num_local_experts") or 0
    if not experts:
        return weights
    out = dict(weights)
    for i in range(config.num_hidden_layers):
        p, m = f"model.layers.{i}.block_sparse_moe.", f"model.layers.{i}.mlp."
        e = [{k: out.pop(f"{p}experts.{j}.{k}.weight") for k in ("w1", "w3", "w2")} for j in range(experts)]
        out[m + "gate.weight"] = out.pop(p + "gate.weight")
        out[m + "experts.gate_up_proj.weight"] = np.concatenate([np.concatenate([x["w1"], x["w3"]]) for x in e])
        out[m + "experts.down_proj.weight"] = np.concatenate([x["w2"] for x in e])
    return out


def make_model(path, *, layers: int = 2, hidden: int = 64, heads: int = 4, kv_heads: int = 2,
               intermediate: int = 128, vocab: int = 512, seed: int = 0, dtype: str = "float32",
               rope_theta: float = 500000.0, rope_scaling: dict | None = LLAMA3_ROPE, tie: bool = False,
               shards: int = 1, max_position: int = 8192, quantize: str = "none", group_size: int = 32,
               experts: int = 0, experts_per_token: int = 2) -> LlamaConfig:
    """A small random Llama in the Hugging Face layout (config, safetensors, a byte-level tokenizer); with
    ``experts``, a Mixtral (every MLP a mixture of that many experts of ``intermediate``); with ``quantize``
    (w8a16, w4a16), its projections stored as integers and scales. The same seed draws the same fp32
    weights whatever the format, so a quantised checkpoint can be held to its unquantised twin."""
    if dtype not in DTYPES:
        raise ConfigError("command line", "--dtype", dtype, f"choose one of {', '.join(DTYPES)}")
    if hidden % heads or heads % kv_heads:
        raise ConfigError("command line", "--heads", heads, "heads must divide hidden and kv heads divide heads")
    if vocab < 256 + len(SPECIALS):
        raise ConfigError("command line", "--vocab", vocab, f"at least {256 + len(SPECIALS)} (bytes and specials)")
    if quantize != "none" and quantize not in QUANT_BITS:
        raise ConfigError("command line", "--quantize", quantize, f"choose one of none, {', '.join(QUANT_BITS)}")
    if experts and not 1 <= experts_per_token <= experts:
        raise ConfigError("command line", "--experts-per-token", experts_per_token, f"1 to --experts ({experts})")
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    d = hidden // heads
    extra = {"num_local_experts": experts, "num_experts_per_tok": experts_per_token} if experts else {}
    if quantize != "none":
        extra["quantization_config"] = {"quant_method": "rsd-ray", "bits": QUANT_BITS[quantize],
                                        "group_size": group_size}
    config = LlamaConfig(vocab, hidden, intermediate, layers, heads, kv_heads, d, 1e-5, rope_theta, rope_scaling,
                         max_position, tie, dtype, 256, 257, extra)
    rng = np.random.default_rng(seed)

    def w(*shape, scale=0.02):
        return (rng.standard_normal(shape) * scale).astype(np.float32)
    tensors = {"model.embed_tokens.weight": w(vocab, hidden, scale=1.0), "model.norm.weight": 1 + w(hidden, scale=0.1)}
    for i in range(layers):
        p = f"model.layers.{i}."
        tensors.update({p + "input_layernorm.weight": 1 + w(hidden, scale=0.1),
                        p + "post_attention_layernorm.weight": 1 + w(hidden, scale=0.1),
                        p + "self_attn.q_proj.weight": w(heads * d, hidden, scale=hidden ** -0.5),
                        p + "self_attn.k_proj.weight": w(kv_heads * d, hidden, scale=hidden ** -0.5),
                        p + "self_attn.v_proj.weight": w(kv_heads * d, hidden, scale=hidden ** -0.5),
                        p + "self_attn.o_proj.weight": w(hidden, heads * d, scale=(heads * d) ** -0.5)})
        if experts:
            tensors[p + "block_sparse_moe.gate.weight"] = w(experts, hidden, scale=hidden ** -0.5)
            for j in range(experts):
                e = f"{p}block_sparse_moe.experts.{j}."
                tensors.update({e + "w1.weight": w(intermediate, hidden, scale=hidden ** -0.5),
                                e + "w3.weight": w(intermediate, hidden, scale=hidden ** -0.5),
                                e + "w2.weight": w(hidden, intermediate, scale=intermediate ** -0.5)})
        else:
            tensors.update({p + "mlp.gate_proj.weight": w(intermediate, hidden, scale=hidden ** -0.5),
                            p + "mlp.up_proj.weight": w(intermediate, hidden, scale=hidden ** -0.5),
                            p + "mlp.down_proj.weight": w(hidden, intermediate, scale=intermediate ** -0.5)})
    if not tie:
        tensors["lm_head.weight"] = w(vocab, hidden, scale=hidden ** -0.5)
    if quantize != "none":                       # the projections (not the router, norms, embedding, LM head)
        for name in [n for n in tensors if n.endswith(("proj.weight", ".w1.weight", ".w2.weight", ".w3.weight"))]:
            tensors[name], tensors[name + "_scale"] = quantised(tensors[name], QUANT_BITS[quantize], group_size)
    _write(root, tensors, dtype, shards)
    (root / "config.json").write_text(json.dumps({**config.to_json(), **extra}, indent=1))
    _write_tokenizer(root / "tokenizer.json", vocab)
    return config


def _write(root: Path, tensors: dict[str, np.ndarray], dtype: str, shards: int) -> None:
    names = list(tensors)
    groups = [names[i::shards] for i in range(shards)] if shards > 1 else [names]
    weight_map = {}
    for k, group in enumerate(groups):
        file = "model.safetensors" if shards == 1 else f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        write_safetensors(root / file, {n: tensors[n] for n in group}, dtype)
        weight_map.update({n: file for n in group})
    if shards > 1:
        total = sum(int(t.nbytes) if t.dtype != np.float32 else int(t.size) * (4 if dtype == "float32" else 2)
                    for t in tensors.values())
        (root / "model.safetensors.index.json").write_text(json.dumps(
            {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1))


def write_safetensors(path: Path, tensors: dict[str, np.ndarray], dtype: str) -> None:
    """The safetensors layout: 8 bytes of header length, the JSON table (padded to 8 bytes), the data."""
    table, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name, array in tensors.items():
        kind = {np.dtype(np.int8): "I8", np.dtype(np.uint8): "U8", np.dtype(np.float16): "F16"}.get(array.dtype)
        data = array.astype(array.dtype.newbyteorder("<")).tobytes() if kind else _encoded(array, dtype)
        table[name] = {"dtype": kind or SAFETENSORS_DTYPE[dtype], "shape": list(array.shape),
                       "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    header = json.dumps(table).encode()
    header += b" " * (-len(header) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(header)) + header)
        for data in blobs:
            fh.write(data)


def _encoded(array: np.ndarray, dtype: str) -> bytes:
    if dtype == "bfloat16":                       # round to nearest even, the top 16 bits of fp32
        bits = array.astype(np.float32).view(np.uint32).astype(np.uint64)
        return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype("<u2").tobytes()
    return array.astype(np.dtype(DTYPES[dtype]).newbyteorder("<")).tobytes()


def _write_tokenizer(path: Path, vocab: int) -> None:
    """Byte-level BPE with no merges: every byte one token, so any text round-trips; then the specials."""
    try:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    except ImportError:                            # optional: without it, prompts are given as ids
        return
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    ids = {ch: i for i, ch in enumerate(alphabet)}
    ids.update({s: 256 + i for i, s in enumerate(SPECIALS)})
    tok = Tokenizer(models.BPE(ids, [], unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(SPECIALS))
    tok.save(str(path))
