"""Megatron-style tensor-parallel split of a Llama-family model.

Per decoder layer, on each of ``tp`` cards (weights stored [out, in])::

    q_proj      [H·d, h]  ──column──▶ [H·d/tp, h]        heads split
    k/v_proj    [K·d, h]  ──column──▶ [max(K/tp,1)·d, h]  KV heads replicated when tp > K
    o_proj      [h, H·d]  ──row─────▶ [h, H·d/tp]        ─▶ partial sums, all-reduce
    gate/up     [I, h]    ──column──▶ [I/tp, h]
    down_proj   [h, I]    ──row─────▶ [h, I/tp]          ─▶ partial sums, all-reduce
    norms       [h]       replicated
    embed       [V, h]    ──vocab───▶ [V/tp, h] (V padded to a multiple of tp) ─▶ all-reduce
    lm_head     [V, h]    ──vocab───▶ [V/tp, h] ─▶ logit slices gathered by the host

The plan is data: each card cuts its own slice from ``Shard``; nothing else
branches on the rank.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from rsd_ray.config import ModelSpec

DTYPE_BYTES = {"fp32": 4.0, "fp16": 2.0, "bf16": 2.0, "int8": 1.0, "int4": 0.5}


def act_bytes(model: ModelSpec) -> float:
    """Bytes of one activation or KV element: fp16 whatever the weight dtype, fp32 for an fp32 model
    (functional mode computes in fp32, so its messages and KV cache are fp32)."""
    return 4.0 if model.dtype == "fp32" else 2.0


@dataclass(frozen=True)
class Shard:
    """One weight tensor (``count`` copies, e.g. one per layer) and how it is cut."""
    name: str
    shape: tuple[int, int]
    split: str                     # column | row | vocab | replicated
    card_shape: tuple[int, int]
    count: int
    collective: Optional[str]      # what follows it: all_reduce | host_gather | None

    @property
    def card_numel(self) -> int:
        return self.card_shape[0] * self.card_shape[1] * self.count

    @property
    def numel(self) -> int:
        return self.shape[0] * self.shape[1] * self.count

    def slice(self, rank: int, tp: int) -> tuple[int, int, int]:
        """(dim, start, stop) of this card's part, or dim -1 when replicated."""
        if self.split == "replicated":
            return (-1, 0, 0)
        dim = 1 if self.split == "row" else 0
        size = self.card_shape[dim]
        parts = self.shape[dim] // size            # fewer than tp: replicated KV heads, each to the cards
        start = (rank * parts // tp) * size        # whose query heads use it (consecutive ranks share one)
        return (dim, start, start + size)


def kv_heads_per_card(model: ModelSpec, tp: int) -> int:
    return max(1, model.num_kv_heads // tp)


def padded_vocab(model: ModelSpec, tp: int) -> int:
    return -(-model.vocab_size // tp) * tp


def shard_plan(model: ModelSpec, tp: int) -> list[Shard]:
    h, d, L, I = model.hidden_size, model.dims_per_head, model.num_layers, model.intermediate_size
    q, kv = model.num_heads * d, model.num_kv_heads * d
    kv_card = kv_heads_per_card(model, tp) * d
    vp = padded_vocab(model, tp)
    shards = [
        Shard("embed_tokens", (vp, h), "vocab", (vp // tp, h), 1, "all_reduce"),
        Shard("layers.*.input_layernorm", (1, h), "replicated", (1, h), L, None),
        Shard("layers.*.self_attn.q_proj", (q, h), "column", (q // tp, h), L, None),
        Shard("layers.*.self_attn.k_proj", (kv, h), "column", (kv_card, h), L, None),
        Shard("layers.*.self_attn.v_proj", (kv, h), "column", (kv_card, h), L, None),
        Shard("layers.*.self_attn.o_proj", (h, q), "row", (h, q // tp), L, "all_reduce"),
        Shard("layers.*.post_attention_layernorm", (1, h), "replicated", (1, h), L, None),
        Shard("layers.*.mlp.gate_proj", (I, h), "column", (I // tp, h), L, None),
        Shard("layers.*.mlp.up_proj", (I, h), "column", (I // tp, h), L, None),
        Shard("layers.*.mlp.down_proj", (h, I), "row", (h, I // tp), L, "all_reduce"),
        Shard("norm", (1, h), "replicated", (1, h), 1, None),
    ]
    if not model.tie_embeddings:
        shards.append(Shard("lm_head", (vp, h), "vocab", (vp // tp, h), 1, "host_gather"))
    return shards


def weight_bytes_per_card(model: ModelSpec, tp: int) -> float:
    return sum(s.card_numel for s in shard_plan(model, tp)) * DTYPE_BYTES[model.dtype]


def kv_bytes_per_token(model: ModelSpec, tp: int) -> float:
    """K and V of every layer for one token, on one card."""
    return 2 * model.num_layers * kv_heads_per_card(model, tp) * model.dims_per_head * act_bytes(model)
