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

A mixture-of-experts layer has four blocks (``_moe_blocks``): attention, reduce-scatter; route,
dispatch; experts, combine; weigh, all-gather. Its experts' weight reads are the one term that is not
linear in the shape: a card reads the experts some token of the step picked
(``experts.active_fraction``, applied by the cost model to ``EXPERT_WEIGHTS``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import msgpack
import numpy as np

from rsd_ray.calibration import ATTENTION_HEADS_FLOOR, DEQUANT_OPS_PER_WEIGHT
from rsd_ray.compiler.experts import card_shares, expert_shares
from rsd_ray.compiler.formats import FORMAT_BYTES, act_bytes, kv_bytes, linear_bytes, matmul_compute, weight_only
from rsd_ray.compiler.shard import kv_heads_per_card, padded_vocab, shard_plan
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
    compute: str = "fp16"                     # the number type its FLOPs run in (a device peak_tflops key)


@dataclass(frozen=True)
class Program:
    model: str
    tp: int
    rank: int
    chunks: int
    commands: tuple[Command, ...]
    shards: tuple[tuple[str, int, int, int], ...]   # (tensor, dim, start, stop) this card holds
    expert_shares: tuple[float, ...] = ()           # MoE: the share of tokens picking each expert this card holds
    routing: tuple[float, ...] = ()                 # MoE: token-expert pairs per token on each card of the group

    def to_msgpack(self) -> bytes:
        return msgpack.packb(asdict(self))

    @classmethod
    def from_msgpack(cls, blob: bytes) -> "Program":
        d = msgpack.unpackb(blob)
        cmds = tuple(Command(**{k: tuple(v) if isinstance(v, list) else v for k, v in c.items()})
                     for c in d.pop("commands"))
        return cls(commands=cmds, shards=tuple(tuple(s) for s in d.pop("shards")),
                   expert_shares=tuple(d.pop("expert_shares")), routing=tuple(d.pop("routing")), **d)


def _v(const=0.0, tokens=0.0, seqs=0.0, pairs=0.0, kv=0.0) -> tuple[float, ...]:
    return (float(const), float(tokens), float(seqs), float(pairs), float(kv))


def _chunked(vec: tuple[float, ...], n: int) -> tuple[float, ...]:
    return (vec[0],) + tuple(x / n for x in vec[1:])


def compile_program(model: ModelSpec, tp: int, rank: int, chunks: int = 1, kv_cache_dtype: str = "auto",
                    seed: int = 0) -> Program:
    """The step program of card ``rank`` in a TP group of ``tp`` cards. The projections' weights are in the
    model's quantisation scheme and their FLOPs in its compute type (``formats``); a weight-only scheme also
    pays ``DEQUANT_OPS_PER_WEIGHT`` per weight per pass. A mixture-of-experts layer's experts are routed
    as ``experts.expert_shares`` draws them from ``seed``."""
    h, d, b = model.hidden_size, model.dims_per_head, FORMAT_BYTES[model.dtype]
    act, kvb = act_bytes(model), kv_bytes(model, kv_cache_dtype)   # activations and messages; a K or V entry
    q, kv = model.num_heads // tp * d, kv_heads_per_card(model, tp) * d
    inter, vocab = model.intermediate_size // tp, padded_vocab(model, tp) // tp
    heads_floor = max(1.0, ATTENTION_HEADS_FLOOR / (model.num_heads // tp))  # KV reads as if ≥ that many heads
    dequant = DEQUANT_OPS_PER_WEIGHT if weight_only(model) else 0.0

    def ne(name, flops, dram, compute=model.dtype):
        return (NEURAL_ENGINE, name, flops, dram, _v(), compute)

    def norm(name):
        return ne(name, _v(tokens=4 * h), _v(const=h * b, tokens=2 * h * act))

    def matmul(name, n_in, n_out):
        return ne(name, _v(const=dequant * n_in * n_out, tokens=2 * n_in * n_out),
                  _v(const=linear_bytes(model, n_in, n_out), tokens=(n_in + n_out) * act), matmul_compute(model))

    def other(kind, name, link=_v()):
        return (kind, name, _v(), _v(), link, model.dtype)

    head = [other(HOST, "schedule"), other(TASK_DMA, "load_commands"), other(EXTERNAL_HDMA, "input_ids", _v(tokens=8)),
            ne("embedding", _v(), _v(tokens=h * (b + act)))]
    attn = [norm("input_layernorm"), matmul("qkv_proj", h, q + 2 * kv),
            ne("rope", _v(tokens=6 * (q + kv)), _v(tokens=2 * (q + kv) * act)),
            ne("attention", _v(pairs=4 * q), _v(tokens=2 * kv * kvb + 2 * q * act, kv=2 * kv * kvb * heads_floor)),
            matmul("o_proj", q, h)]
    mlp = [norm("post_attention_layernorm"), matmul("gate_up_proj", h, 2 * inter),
           ne("silu_mul", _v(tokens=4 * inter), _v(tokens=3 * inter * act)), matmul("down_proj", inter, h)]
    tail = [ne("final_norm", _v(seqs=4 * h), _v(const=h * b, seqs=2 * h * act)),
            ne("lm_head", _v(seqs=2 * h * vocab), _v(const=h * vocab * b, seqs=(h + vocab) * act)),
            other(EXTERNAL_HDMA, "logits_to_host", _v(seqs=vocab * act)), other(HOST, "sample")]

    first_moe = model.num_layers - model.moe_layers
    blocks = [(-1, head, "all_reduce")] + [(layer, part, "all_reduce") for layer in range(first_moe)
                                           for part in (attn, mlp)]
    shares, routing = (), ()
    if model.num_experts:
        picked = expert_shares(model.num_experts, model.experts_per_token, model.expert_skew, seed)
        per_card = card_shares(picked, tp)
        shares, routing = per_card[rank], tuple(sum(c) for c in per_card)
        moe = _moe_blocks(model, tp, routing[rank], norm, ne, dequant, act, b)
        blocks += [(layer, part, sync) for layer in range(first_moe, model.num_layers)
                   for part, sync in [(attn, "reduce_scatter"), *moe]]
    commands: list[Command] = []
    for layer, block, sync in blocks:
        for c in range(chunks):
            for kind, name, flops, dram, link, compute in block:
                commands.append(Command(kind, name, layer, c, _chunked(flops, chunks), _chunked(dram, chunks),
                                        _chunked(link, chunks), compute=compute))
            commands.append(Command(DEVICE_SYNC, sync, layer, c, link=_v(tokens=h * act / chunks),
                                    collective=sync, compute=model.dtype))
    commands += [Command(kind, name, model.num_layers, 0, f, dr, lk, compute=cp) for kind, name, f, dr, lk, cp in tail]
    shards = tuple((s.name, *s.slice(rank, tp)) for s in shard_plan(model, tp))
    return Program(model.name, tp, rank, chunks, tuple(commands), shards, shares, routing)


EXPERT_WEIGHTS = ("experts_gate_up", "experts_down")   # commands whose weight reads are the experts some token picked


def _moe_blocks(model: ModelSpec, tp: int, pairs: float, norm, ne, dequant: float, act: float, b: float):
    """A mixture-of-experts MLP on one card, after the attention's reduce-scatter left it 1/tp of the tokens:
    route them (and pass them through the shared experts), send each to its experts' cards (dispatch),
    run this card's experts on the ``pairs`` token-expert pairs per step token it receives, send the results
    back (combine), weigh them and all-gather every token for the next layer's attention."""
    h, E, k, Ie, S = model.hidden_size, model.num_experts, model.experts_per_token, model.expert_size, \
        model.num_shared_experts
    local, mine = E // tp, 1.0 / tp                   # experts held; share of the step's tokens owned
    compute = matmul_compute(model)
    route = [norm("post_attention_layernorm"),
             ne("router", _v(tokens=2 * h * E * mine), _v(const=h * E * b, tokens=(h + E) * act * mine))]
    if S:
        route += [ne("shared_gate_up", _v(const=dequant * h * 2 * S * Ie, tokens=2 * h * 2 * S * Ie * mine),
                     _v(const=linear_bytes(model, h, 2 * S * Ie), tokens=(h + 2 * S * Ie) * act * mine), compute),
                  ne("shared_down", _v(const=dequant * S * Ie * h, tokens=2 * S * Ie * h * mine),
                     _v(const=linear_bytes(model, S * Ie, h), tokens=(S * Ie + h) * act * mine), compute)]
    experts = [ne("experts_gate_up", _v(const=dequant * h * 2 * Ie * local, tokens=2 * h * 2 * Ie * pairs),
                  _v(const=linear_bytes(model, h, 2 * Ie * local), tokens=(h + 2 * Ie) * act * pairs), compute),
               ne("experts_silu_mul", _v(tokens=4 * Ie * pairs), _v(tokens=3 * Ie * act * pairs)),
               ne("experts_down", _v(const=dequant * Ie * h * local, tokens=2 * Ie * h * pairs),
                  _v(const=linear_bytes(model, Ie, h * local), tokens=(Ie + h) * act * pairs), compute)]
    combine = [ne("moe_combine", _v(tokens=2 * (k + 1) * h * mine), _v(tokens=(k + 2) * h * act * mine))]
    return [(route, "dispatch"), (experts, "combine"), (combine, "all_gather")]
