"""The reference: a whole Llama on one device, written apart from the split path on purpose.

No shards, no KV cache, no shared kernels: every call recomputes the whole sequence, head by head,
with rotary embeddings as complex rotations and Llama 3's rescaling worked out frequency by
frequency. The tests hold the split model to it.
"""
from __future__ import annotations

import math

import numpy as np


def _inv_freq(config) -> list[float]:
    d, s = config.head_dim, config.rope_scaling
    out = []
    for i in range(d // 2):
        f = config.rope_theta ** (-2 * i / d)
        if s and s.get("rope_type", s.get("type")) == "llama3":
            wavelen = 2 * math.pi / f
            low_wl = s["original_max_position_embeddings"] / s["low_freq_factor"]
            high_wl = s["original_max_position_embeddings"] / s["high_freq_factor"]
            if wavelen > low_wl:
                f = f / s["factor"]
            elif wavelen >= high_wl:                       # between: a blend of scaled and unscaled
                smooth = (s["original_max_position_embeddings"] / wavelen - s["low_freq_factor"]) / (
                    s["high_freq_factor"] - s["low_freq_factor"])
                f = (1 - smooth) * f / s["factor"] + smooth * f
        out.append(f)
    return out


def _rotate(x: np.ndarray, pos: int, freqs: list[float]) -> np.ndarray:
    """One head's vector at ``pos``: pairs (i, i + d/2) rotated as complex numbers."""
    half = len(x) // 2
    z = (x[:half] + 1j * x[half:]) * np.exp(1j * pos * np.array(freqs))
    return np.concatenate([z.real, z.imag]).astype(np.float32)


def _norm(x, w, eps):
    return x * (1.0 / np.sqrt((x.astype(np.float64) ** 2).mean(-1, keepdims=True) + eps)).astype(np.float32) * w


def logits(config, weights: dict, ids: list[int]) -> np.ndarray:
    """Logits [len(ids), vocab] of every position of one sequence."""
    W = weights
    H, K, d, T = config.num_attention_heads, config.num_key_value_heads, config.head_dim, len(ids)
    freqs = _inv_freq(config)
    x = W["model.embed_tokens.weight"][np.array(ids)]
    for layer in range(config.num_hidden_layers):
        p = f"model.layers.{layer}."
        a = _norm(x, W[p + "input_layernorm.weight"], config.rms_norm_eps)
        q = (a @ W[p + "self_attn.q_proj.weight"].T).reshape(T, H, d)
        k = (a @ W[p + "self_attn.k_proj.weight"].T).reshape(T, K, d)
        v = (a @ W[p + "self_attn.v_proj.weight"].T).reshape(T, K, d)
        heads = []
        for h in range(H):
            kv = h * K // H
            qh = np.stack([_rotate(q[t, h], t, freqs) for t in range(T)])
            kh = np.stack([_rotate(k[t, kv], t, freqs) for t in range(T)])
            s = qh @ kh.T / math.sqrt(d)
            s[np.triu_indices(T, 1)] = -np.inf
            e = np.exp(s - s.max(axis=1, keepdims=True))
            heads.append((e / e.sum(axis=1, keepdims=True)) @ v[:, kv])
        x = x + np.concatenate(heads, axis=1) @ W[p + "self_attn.o_proj.weight"].T
        a = _norm(x, W[p + "post_attention_layernorm.weight"], config.rms_norm_eps)
        if p + "mlp.gate.weight" in W:
            x = x + _mixture(config, W, p + "mlp.", a)
            continue
        g = a @ W[p + "mlp.gate_proj.weight"].T
        x = x + ((g / (1 + np.exp(-g))) * (a @ W[p + "mlp.up_proj.weight"].T)) @ W[p + "mlp.down_proj.weight"].T
    x = _norm(x, W["model.norm.weight"], config.rms_norm_eps)
    return x @ W["lm_head.weight"].T


def _mixture(config, W: dict, p: str, a: np.ndarray) -> np.ndarray:
    """Mixtral's sparse MLP token by token: softmax over the experts' scores, the top k kept and rescaled to
    sum to one, each kept expert's SwiGLU weighted by its share."""
    E, k = config.extra["num_local_experts"], config.extra["num_experts_per_tok"]
    I, h = config.intermediate_size, config.hidden_size
    gate_up, down = W[p + "experts.gate_up_proj.weight"], W[p + "experts.down_proj.weight"]
    out = np.zeros_like(a)
    for t in range(len(a)):
        scores = (W[p + "gate.weight"] @ a[t]).astype(np.float64)
        share = np.exp(scores - scores.max())
        share /= share.sum()
        top = sorted(range(E), key=lambda e: -scores[e])[:k]
        norm = sum(share[e] for e in top)
        for e in top:
            g = gate_up[2 * e * I:(2 * e + 1) * I] @ a[t]
            u = gate_up[(2 * e + 1) * I:(2 * e + 2) * I] @ a[t]
            out[t] += np.float32(share[e] / norm) * (down[e * h:(e + 1) * h] @ (g / (1 + np.exp(-g)) * u))
    return out


def greedy(config, weights: dict, ids: list[int], max_tokens: int) -> list[int]:
    """Greedy decoding by recomputing the whole sequence each token."""
    out = list(ids)
    for _ in range(max_tokens):
        out.append(int(np.argmax(logits(config, weights, out)[-1])))
    return out[len(ids):]
