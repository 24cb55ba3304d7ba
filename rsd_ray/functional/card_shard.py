"""One card's part of a real model: its shards, cut by the compiler's shard plan, and its paged KV cache.

A step is a chain of calls, one per collective, each handed the partial sums of every card from
the call before (``rsd_ray.functional.split``)::

    begin(ids)            -> embedding partial (the card's vocab rows)     ─┐ all-reduce
    attention(l, *parts)  -> x += Σ parts; o_proj partial                  ─┤ all-reduce
    mlp(l, *parts)        -> x += Σ parts; down_proj partial               ─┤ all-reduce
    logits(*parts)        -> x += Σ parts; the card's vocab slice of logits ─┘ gathered by the host

Every card holds the same hidden state ``x`` (each adds the same partials in rank order), so the
residual stream never leaves the cards. In a mixture-of-experts layer every card routes every token
(the router is replicated) and runs its own experts on the tokens that picked them: its partial is
their weighted outputs, and the all-reduce sums the experts of every card. (The performance model
prices the all-to-all layout instead, tokens sent to their experts' cards; the text is the same.)
A quantised checkpoint's cards hold the fp32 weights its integers stand for, charged in the format.
"""
from __future__ import annotations

import numpy as np

from rsd_ray.compiler.shard import kv_heads, kv_heads_per_card, padded_vocab, shard_plan, weight_bytes_per_card
from rsd_ray.functional.kernels import PagedKV, apply_rope, attention, rms_norm, rope_frequencies, route, swiglu
from rsd_ray.hardware.ledger import MemoryLedger

HF_NAME = {"embed_tokens": "model.embed_tokens.weight", "norm": "model.norm.weight", "lm_head": "lm_head.weight"}


def cut(weights: dict, model, rank: int, tp: int) -> dict[str, np.ndarray]:
    """This rank's slice of every tensor, as the compiler's shard plan says (copies: the card owns them)."""
    out = {}
    for shard in shard_plan(model, tp):
        layers = range(shard.first_layer, shard.first_layer + shard.count)
        names = [f"model.{shard.name.replace('*', str(i))}.weight" for i in layers] \
            if "*" in shard.name else [HF_NAME[shard.name]]
        dim, start, stop = shard.slice(rank, tp)
        for name in names:
            w = weights[name]
            if dim < 0:
                out[name] = w.copy()
                continue
            part = w[start:stop] if dim == 0 else w[:, start:stop]
            if part.shape[dim] < stop - start:                # the padded end of the vocabulary
                pad = [(0, 0), (0, 0)]
                pad[dim] = (0, stop - start - part.shape[dim])
                part = np.pad(part, pad)
            out[name] = np.ascontiguousarray(part)
    if model.tie_embeddings:
        out["lm_head.weight"] = out["model.embed_tokens.weight"]
    return out


class CardShard:
    def __init__(self, config, model, rank: int, tp: int, tensors: dict[str, np.ndarray], budget: int,
                 block_size: int = 16):
        """``model``: the checkpoint as the compiler's ModelSpec; ``budget``: the card's usable bytes."""
        self.config, self.rank, self.tp = config, rank, tp
        self.ledger = MemoryLedger(f"card rank {rank}", budget)
        self.ledger.allocate("weights", int(weight_bytes_per_card(model, tp)))   # in the checkpoint's formats
        self.w = tensors
        self.experts = (model.num_experts, model.experts_per_token, model.num_experts // tp)
        self.heads = config.num_attention_heads // tp
        self.kv_heads = kv_heads_per_card(model, tp)
        self.first_kv_head = kv_heads(model.num_kv_heads, tp, rank).start
        self.vocab_rows = padded_vocab(model, tp) // tp
        self.inv_freq = rope_frequencies(config.head_dim, config.rope_theta, config.rope_scaling)
        self.kv = PagedKV(config.num_hidden_layers, self.kv_heads, config.head_dim, block_size)
        self.x: np.ndarray | None = None
        self.received: dict[int, int] = {}                # bytes of partial sums taken from each other rank
        self.kv_received: dict[int, int] = {}             # bytes of KV caches taken from each prefill rank
        self.batch: list[tuple[int, int, int]] = []       # (sequence, first position, tokens) of this step

    def begin(self, batch: list[tuple[int, list[int], int]]) -> np.ndarray:
        """A step of several sequences, each (id, new token ids, position of the first): its embedding
        rows that fall in this card's part of the vocabulary (zeros elsewhere)."""
        self.batch = [(seq, start, len(ids)) for seq, ids, start in batch]
        self.x = None
        ids = np.array([t for _, toks, _ in batch for t in toks]) - self.rank * self.vocab_rows
        mine = (ids >= 0) & (ids < self.vocab_rows)
        out = np.zeros((len(ids), self.config.hidden_size), dtype=np.float32)
        out[mine] = self.w["model.embed_tokens.weight"][ids[mine]]
        return out

    def _add(self, partials) -> None:
        for rank, p in enumerate(partials):
            if rank != self.rank:
                self.received[rank] = self.received.get(rank, 0) + int(p.nbytes)
        total = partials[0].copy()
        for p in partials[1:]:
            total += p
        self.x = total if self.x is None else self.x + total

    def attention(self, layer: int, *partials) -> np.ndarray:
        self._add(partials)
        p, c, d = f"model.layers.{layer}.", self.config, self.config.head_dim
        a = rms_norm(self.x, self.w[p + "input_layernorm.weight"], c.rms_norm_eps)
        q = (a @ self.w[p + "self_attn.q_proj.weight"].T).reshape(-1, self.heads, d)
        k = (a @ self.w[p + "self_attn.k_proj.weight"].T).reshape(-1, self.kv_heads, d)
        v = (a @ self.w[p + "self_attn.v_proj.weight"].T).reshape(-1, self.kv_heads, d)
        out, row = [], 0
        for seq, start, n in self.batch:
            pos = np.arange(start, start + n)
            qs, ks = apply_rope(q[row:row + n], pos, self.inv_freq), apply_rope(k[row:row + n], pos, self.inv_freq)
            self.kv.write(seq, layer, pos, ks, v[row:row + n])
            kk, vv = self.kv.read(seq, layer, start + n)
            out.append(attention(qs, kk, vv, pos))
            row += n
        return np.concatenate(out) @ self.w[p + "self_attn.o_proj.weight"].T

    def mlp(self, layer: int, *partials) -> np.ndarray:
        self._add(partials)
        p = f"model.layers.{layer}."
        a = rms_norm(self.x, self.w[p + "post_attention_layernorm.weight"], self.config.rms_norm_eps)
        if p + "mlp.gate.weight" in self.w:
            return self._experts(p + "mlp.", a)
        return swiglu(a, self.w[p + "mlp.gate_proj.weight"], self.w[p + "mlp.up_proj.weight"],
                      self.w[p + "mlp.down_proj.weight"])

    def _experts(self, p: str, a: np.ndarray) -> np.ndarray:
        """This card's experts on the tokens that picked them, weighted (``kernels.route``)."""
        total, k, local = self.experts
        picks, weights = route(a @ self.w[p + "gate.weight"].T, k)
        gate_up, down = self.w[p + "experts.gate_up_proj.weight"], self.w[p + "experts.down_proj.weight"]
        inter, h = gate_up.shape[0] // (2 * local), a.shape[1]
        out = np.zeros_like(a)
        for j in range(local):
            rows, slot = np.nonzero(picks == self.rank * local + j)
            if len(rows):
                g, u = gate_up[2 * j * inter:(2 * j + 1) * inter], gate_up[(2 * j + 1) * inter:(2 * j + 2) * inter]
                out[rows] += weights[rows, slot][:, None] * swiglu(a[rows], g, u, down[j * h:(j + 1) * h])
        return out

    def logits(self, *partials) -> np.ndarray:
        """This card's vocabulary slice of the logits at each sequence's last new token."""
        self._add(partials)
        last = np.cumsum([n for _, _, n in self.batch]) - 1
        x = rms_norm(self.x[last], self.w["model.norm.weight"], self.config.rms_norm_eps)
        return x @ self.w["lm_head.weight"].T

    def release(self, seq: int) -> None:
        self.kv.release(seq)

    def export_kv(self, seq: int, length: int, heads: range) -> np.ndarray:
        """The KV cache of ``seq``'s first ``length`` positions on this card, every layer, of the KV ``heads``
        (rack-wide numbers, held here) ([2, layers, length, heads, head dim]): what a disaggregated prefill
        hands to a decode card."""
        ks, vs = zip(*(self.kv.read(seq, layer, length) for layer in range(self.kv.layers)))
        local = slice(heads.start - self.first_kv_head, heads.stop - self.first_kv_head)
        return np.stack([np.stack(ks), np.stack(vs)])[:, :, :, local]

    def import_kv(self, seq: int, ranks: list[int], *parts: np.ndarray) -> int:
        """Prefill cards' exported KV caches (from ``ranks``, their heads in order) become ``seq``'s here;
        returns the bytes taken so far."""
        cache = np.concatenate(parts, axis=3)
        positions = np.arange(cache.shape[2])
        for layer in range(self.kv.layers):
            self.kv.write(seq, layer, positions, cache[0, layer], cache[1, layer])
        for rank, part in zip(ranks, parts):
            self.kv_received[rank] = self.kv_received.get(rank, 0) + int(part.nbytes)
        return sum(self.kv_received.values())

    def memory(self) -> dict:
        return {"rank": self.rank, "weights": self.ledger.regions["weights"], "kv_blocks": self.kv.blocks,
                "tensors": len(self.w), "received": dict(self.received), "kv_received": dict(self.kv_received)}
