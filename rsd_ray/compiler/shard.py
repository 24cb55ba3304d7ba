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

In a mixture-of-experts layer (``model.num_experts``; the first ``first_dense_layers`` stay dense)
the MLP is::

    gate (router)   [E, h]      replicated
    experts gate_up [E·2I, h]   ──expert──▶ [E/tp·2I, h]   whole experts on each card (expert parallelism)
    experts down    [E·h, I]    ──expert──▶ [E/tp·h, I]
    shared experts              replicated

and o_proj's partial sums are reduce-scattered, not all-reduced: each card keeps 1/tp of the tokens,
sends them all-to-all to their experts' cards, takes the results back and all-gathers them
(``program``).

The plan is data: each card cuts its own slice from ``Shard``; nothing else
branches on the rank.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from rsd_ray.compiler.formats import FORMAT_BYTES, kv_bytes, linear_bytes
from rsd_ray.config import ModelSpec


@dataclass(frozen=True)
class Shard:
    """One weight tensor (``count`` copies, e.g. one per layer) and how it is cut."""
    name: str
    shape: tuple[int, int]
    split: str                     # column | row | vocab | expert (whole experts, stacked on dim 0) | replicated
    card_shape: tuple[int, int]
    count: int
    collective: Optional[str]      # what follows it: all_reduce | host_gather | None
    linear: bool = False           # a decoder projection: stored in the model's quantisation scheme
    first_layer: int = 0           # the layer of the first copy (a MoE model's expert layers follow its dense ones)

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


def kv_heads(num_kv_heads: int, tp: int, rank: int) -> range:
    """The KV heads rank ``rank`` of ``tp`` holds: an equal share, or, when the ranks outnumber the heads,
    one head replicated on tp / H ranks (``kv_heads_per_card``)."""
    h = num_kv_heads
    first = rank * h // tp
    return range(first, (rank + 1) * h // tp) if tp <= h else range(first, first + 1)


def kv_sources(num_kv_heads: int, prefill_tp: int, decode_tp: int) -> list[list[tuple[int, range]]]:
    """Where each decode rank reads the KV heads it holds from a prefill instance of another (or the same)
    TP degree: (prefill rank, the heads it reads there) each, a prefill rank that holds them — its own
    rank's share first, as vLLM's NixlConnector pairs ranks of unequal TP (a decode TP above the prefill's
    reads part of one prefill card, below it several)."""
    out = []
    for j in range(decode_tp):
        own = j * prefill_tp // decode_tp
        reads: dict[int, list[int]] = {}
        for head in kv_heads(num_kv_heads, decode_tp, j):
            i = own if head in kv_heads(num_kv_heads, prefill_tp, own) else \
                next(i for i in range(prefill_tp) if head in kv_heads(num_kv_heads, prefill_tp, i))
            reads.setdefault(i, []).append(head)
        out.append([(i, range(heads[0], heads[-1] + 1)) for i, heads in reads.items()])
    return out


def kv_flows(num_kv_heads: int, head_bytes: float, prefill: tuple[int, ...], decode: tuple[int, ...]
             ) -> list[tuple[int, int, float]]:
    """(from card, to card, bytes) of a KV cache of ``head_bytes`` a head moved from the ``prefill`` cards to
    the ``decode`` cards (``kv_sources``)."""
    return [(prefill[i], card, head_bytes * len(heads))
            for card, reads in zip(decode, kv_sources(num_kv_heads, len(prefill), len(decode))) for i, heads in reads]


def padded_vocab(model: ModelSpec, tp: int) -> int:
    return -(-model.vocab_size // tp) * tp


def shard_plan(model: ModelSpec, tp: int) -> list[Shard]:
    h, d, L, I = model.hidden_size, model.dims_per_head, model.num_layers, model.intermediate_size
    q, kv = model.num_heads * d, model.num_kv_heads * d
    kv_card = kv_heads_per_card(model, tp) * d
    vp = padded_vocab(model, tp)
    moe, dense = model.moe_layers, model.num_layers - model.moe_layers
    shards = [
        Shard("embed_tokens", (vp, h), "vocab", (vp // tp, h), 1, "all_reduce"),
        Shard("layers.*.input_layernorm", (1, h), "replicated", (1, h), L, None),
        Shard("layers.*.self_attn.q_proj", (q, h), "column", (q // tp, h), L, None, linear=True),
        Shard("layers.*.self_attn.k_proj", (kv, h), "column", (kv_card, h), L, None, linear=True),
        Shard("layers.*.self_attn.v_proj", (kv, h), "column", (kv_card, h), L, None, linear=True),
        Shard("layers.*.self_attn.o_proj", (h, q), "row", (h, q // tp), L,
              "reduce_scatter" if moe else "all_reduce", linear=True),
        Shard("layers.*.post_attention_layernorm", (1, h), "replicated", (1, h), L, None),
    ]
    if dense:
        shards += [Shard("layers.*.mlp.gate_proj", (I, h), "column", (I // tp, h), dense, None, linear=True),
                   Shard("layers.*.mlp.up_proj", (I, h), "column", (I // tp, h), dense, None, linear=True),
                   Shard("layers.*.mlp.down_proj", (h, I), "row", (h, I // tp), dense, "all_reduce", linear=True)]
    if moe:
        E, Ie, S = model.num_experts, model.expert_size, model.num_shared_experts
        shards += [Shard("layers.*.mlp.gate", (E, h), "replicated", (E, h), moe, None, first_layer=dense),  # router
                   Shard("layers.*.mlp.experts.gate_up_proj", (E * 2 * Ie, h), "expert", (E // tp * 2 * Ie, h), moe,
                         "all_to_all", linear=True, first_layer=dense),
                   Shard("layers.*.mlp.experts.down_proj", (E * h, Ie), "expert", (E // tp * h, Ie), moe,
                         "all_to_all", linear=True, first_layer=dense)]
        if S:
            shards += [Shard("layers.*.mlp.shared_experts.gate_up_proj", (S * 2 * Ie, h), "replicated",
                             (S * 2 * Ie, h), moe, None, linear=True, first_layer=dense),
                       Shard("layers.*.mlp.shared_experts.down_proj", (S * h, Ie), "replicated", (S * h, Ie), moe,
                             "all_gather", linear=True, first_layer=dense)]
    shards.append(Shard("norm", (1, h), "replicated", (1, h), 1, None))
    if not model.tie_embeddings:
        shards.append(Shard("lm_head", (vp, h), "vocab", (vp // tp, h), 1, "host_gather"))
    return shards


def shard_bytes(model: ModelSpec, shard: Shard) -> float:
    """One card's bytes of a shard: a projection in the model's scheme (scales included), the rest in its dtype."""
    if shard.linear:
        return linear_bytes(model, shard.card_shape[1], shard.card_shape[0]) * shard.count
    return shard.card_numel * FORMAT_BYTES[model.dtype]


def weight_bytes_per_card(model: ModelSpec, tp: int) -> float:
    return sum(shard_bytes(model, s) for s in shard_plan(model, tp))


def kv_bytes_per_token(model: ModelSpec, tp: int, kv_cache_dtype: str = "auto") -> float:
    """K and V of every layer for one token, on one card."""
    return 2 * model.num_layers * kv_heads_per_card(model, tp) * model.dims_per_head * kv_bytes(model, kv_cache_dtype)
