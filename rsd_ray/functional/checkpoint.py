"""Llama checkpoints in the Hugging Face layout: read them, and write small random ones.

A directory holds ``config.json`` (LlamaConfig's keys), ``model.safetensors`` or shards
``model-0000i-of-0000n.safetensors`` with ``model.safetensors.index.json``, and optionally
``tokenizer.json``. Tensors are fp32, fp16 or bf16; they are computed in fp32. numpy has no bf16,
so bf16 tensors are read from the file's own table (the safetensors layout) and widened.
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
                out[key] = f.get_tensor(key).astype(np.float32)
    if bf16:
        raw = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + size)
        for key in bf16:
            start, stop = table[key]["data_offsets"]
            halves = np.frombuffer(raw[start:stop].tobytes(), dtype="<u2").astype(np.uint32) << 16
            out[key] = halves.view(np.float32).reshape(table[key]["shape"])
    return out


def make_model(path, *, layers: int = 2, hidden: int = 64, heads: int = 4, kv_heads: int = 2,
               intermediate: int = 128, vocab: int = 512, seed: int = 0, dtype: str = "float32",
               rope_theta: float = 500000.0, rope_scaling: dict | None = LLAMA3_ROPE, tie: bool = False,
               shards: int = 1, max_position: int = 8192) -> LlamaConfig:
    """A small random Llama in the Hugging Face layout (config, safetensors, a byte-level tokenizer)."""
    if dtype not in DTYPES:
        raise ConfigError("command line", "--dtype", dtype, f"choose one of {', '.join(DTYPES)}")
    if hidden % heads or heads % kv_heads:
        raise ConfigError("command line", "--heads", heads, "heads must divide hidden and kv heads divide heads")
    if vocab < 256 + len(SPECIALS):
        raise ConfigError("command line", "--vocab", vocab, f"at least {256 + len(SPECIALS)} (bytes and specials)")
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    d = hidden // heads
    config = LlamaConfig(vocab, hidden, intermediate, layers, heads, kv_heads, d, 1e-5, rope_theta, rope_scaling,
                         max_position, tie, dtype, 256, 257)
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
                        p + "self_attn.o_proj.weight": w(hidden, heads * d, scale=(heads * d) ** -0.5),
                        p + "mlp.gate_proj.weight": w(intermediate, hidden, scale=hidden ** -0.5),
                        p + "mlp.up_proj.weight": w(intermediate, hidden, scale=hidden ** -0.5),
                        p + "mlp.down_proj.weight": w(hidden, intermediate, scale=intermediate ** -0.5)})
    if not tie:
        tensors["lm_head.weight"] = w(vocab, hidden, scale=hidden ** -0.5)
    _write(root, tensors, dtype, shards)
    (root / "config.json").write_text(json.dumps(config.to_json(), indent=1))
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
        total = sum(int(t.size) for t in tensors.values()) * (4 if dtype == "float32" else 2)
        (root / "model.safetensors.index.json").write_text(json.dumps(
            {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1))


def write_safetensors(path: Path, tensors: dict[str, np.ndarray], dtype: str) -> None:
    """The safetensors layout: 8 bytes of header length, the JSON table (padded to 8 bytes), the data."""
    table, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name, array in tensors.items():
        data = _encoded(array, dtype)
        table[name] = {"dtype": SAFETENSORS_DTYPE[dtype], "shape": list(array.shape),
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
