"""Command streams in ATOM's vocabulary, one per card, for any batch shape.

A step's cost terms are linear in five batch-shape terms (``TERMS``), so one
program serves prefill, decode and mixed steps (vLLM v1's single rule):

- ``const``      1 per step (weights streamed once per step or chunk)
- ``tokens``     tokens computed this step (prefill chunk tokens + decodes)
- ``seqs``       sequences that sample a token this step
- ``attn_pairs`` query·key pairs attended (Σ over tokens of their context length)
- ``kv_tokens``  KV entries read (Σ over sequences of their context length)

A program is a list of blocks, each ending in a Device Sync collective, then a
tail. Layer pipelining splits every block into ``chunks`` that each carry 1/n
of the token terms and re-stream the weights (they do not fit in SRAM), so a
chunk's all-reduce can overlap the next chunk's compute::

    [embed c0][sync][embed c1][sync][attn0 c0][sync][attn0 c1][sync] … [tail]
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import msgpack
import numpy as np

from rsd_ray.calibration import ATTENTION_HEADS_FLOOR
from rsd_ray.compiler.shard import DTYPE_BYTES, act_bytes, kv_heads_per_card, padded_vocab, shard_plan
from rsd_ray.config import ModelSpec

TERMS = ("const", "tokens", "seqs", "attn_pairs", "kv_tokens")
NEURAL_ENGINE = "neural_engine"    # Neural Engine Clusters; carries its Neural DMA weight/activation traffic
TASK_DMA = "task_dma"              # command descriptors into the card
EXTERNAL_HDMA = "external_hdma"    # host <-> card over the card's PCIe link
DEVICE_SYNC = "device_sync"        # collective between cards, data moved by Device HDMA (P2P)
HOST = "host"                      # work on the server CPU (scheduling, sampling)
KINDS = (NEURAL_ENGINE, TASK_DMA, EXTERNAL_HDMA, DEVICE_SYNC, HOST)


def batch_shape(computed: np.ndarray, new: np.ndarray, sampled: np.ndarray) -> np.ndarray:
    """The five ``TERMS`` of k steps, from (k × slots) arrays of each slot's tokens computed before the step,
    its new tokens (0: not in the step) and whether it samples a token. The one place a batch becomes a
    shape: the engine, functional timing and the compile report all count it here::

        a sequence with p tokens computed and n new:  tokens n, attn_pairs n·p + n(n+1)/2, kv_tokens p + n
    """
    took = new > 0
    out = np.empty((len(new), len(TERMS)))
    out[:, 0] = 1.0
    out[:, 1] = new.sum(axis=1)
    out[:, 2] = (sampled & took).sum(axis=1)
    out[:, 3] = (new * computed + new * (new + 1) // 2).sum(axis=1)
    out[:, 4] = np.where(took, computed + new, 0).sum(axis=1)
    return out


@dataclass(frozen=True)
class Command:
    kind: str
    name: str
    layer: int
    chunk: int
    flops: tuple[float, ...] = (0.0,) * 5
    dram: tuple[float, ...] = (0.0,) * 5      # bytes through the card's DRAM
    link: tuple[float, ...] = (0.0,) * 5      # bytes over PCIe (HDMA) or message bytes (Device Sync)
    collective: str = ""


@dataclass(frozen=True)
class Program:
    model: str
    tp: int
    rank: int
    chunks: int
    commands: tuple[Command, ...]
    shards: tuple[tuple[str, int, int, int], ...]   # (tensor, dim, start, stop) this card holds

    def to_msgpack(self) -> bytes:
        return msgpack.packb(asdict(self))

    @classmethod
    def from_msgpack(cls, blob: bytes) -> "Program":
        d = msgpack.unpackb(blob)
        cmds = tuple(Command(**{k: tuple(v) if isinstance(v, list) else v for k, v in c.items()})
                     for c in d.pop("commands"))
        return cls(commands=cmds, shards=tuple(tuple(s) for s in d.pop("shards")), **d)


def _v(const=0.0, tokens=0.0, seqs=0.0, pairs=0.0, kv=0.0) -> tuple[float, ...]:
    return (float(const), float(tokens), float(seqs), float(pairs), float(kv))


def _chunked(vec: tuple[float, ...], n: int) -> tuple[float, ...]:
    return (vec[0],) + tuple(x / n for x in vec[1:])


def compile_program(model: ModelSpec, tp: int, rank: int, chunks: int = 1) -> Program:
    """The step program of card ``rank`` in a TP group of ``tp`` cards."""
    h, d, b = model.hidden_size, model.dims_per_head, DTYPE_BYTES[model.dtype]
    act = act_bytes(model)                                # activations, messages and the KV cache
    q, kv = model.num_heads // tp * d, kv_heads_per_card(model, tp) * d
    inter, vocab = model.intermediate_size // tp, padded_vocab(model, tp) // tp
    heads_floor = max(1.0, ATTENTION_HEADS_FLOOR / (model.num_heads // tp))  # KV reads as if ≥ that many heads

    def ne(name, flops, dram):
        return (NEURAL_ENGINE, name, flops, dram, _v())

    def norm(name):
        return ne(name, _v(tokens=4 * h), _v(const=h * b, tokens=2 * h * act))

    def matmul(name, n_in, n_out):
        return ne(name, _v(tokens=2 * n_in * n_out), _v(const=n_in * n_out * b, tokens=(n_in + n_out) * act))

    head = [(HOST, "schedule", _v(), _v(), _v()), (TASK_DMA, "load_commands", _v(), _v(), _v()),
            (EXTERNAL_HDMA, "input_ids", _v(), _v(), _v(tokens=8)),
            ne("embedding", _v(), _v(tokens=h * (b + act)))]
    attn = [norm("input_layernorm"), matmul("qkv_proj", h, q + 2 * kv),
            ne("rope", _v(tokens=6 * (q + kv)), _v(tokens=2 * (q + kv) * act)),
            ne("attention", _v(pairs=4 * q), _v(tokens=2 * kv * act + 2 * q * act, kv=2 * kv * act * heads_floor)),
            matmul("o_proj", q, h)]
    mlp = [norm("post_attention_layernorm"), matmul("gate_up_proj", h, 2 * inter),
           ne("silu_mul", _v(tokens=4 * inter), _v(tokens=3 * inter * act)), matmul("down_proj", inter, h)]
    tail = [ne("final_norm", _v(seqs=4 * h), _v(const=h * b, seqs=2 * h * act)),
            ne("lm_head", _v(seqs=2 * h * vocab), _v(const=h * vocab * b, seqs=(h + vocab) * act)),
            (EXTERNAL_HDMA, "logits_to_host", _v(), _v(), _v(seqs=vocab * act)),
            (HOST, "sample", _v(), _v(), _v())]

    blocks = [(-1, head)] + [(layer, part) for layer in range(model.num_layers) for part in (attn, mlp)]
    commands: list[Command] = []
    for layer, block in blocks:
        for c in range(chunks):
            for kind, name, flops, dram, link in block:
                commands.append(Command(kind, name, layer, c, _chunked(flops, chunks), _chunked(dram, chunks),
                                        _chunked(link, chunks)))
            commands.append(Command(DEVICE_SYNC, "all_reduce", layer, c, link=_v(tokens=h * act / chunks),
                                    collective="all_reduce"))
    commands += [Command(kind, name, model.num_layers, 0, f, dr, lk) for kind, name, f, dr, lk in tail]
    shards = tuple((s.name, *s.slice(rank, tp)) for s in shard_plan(model, tp))
    return Program(model.name, tp, rank, chunks, tuple(commands), shards)
