"""The Llama forward pass's kernels in numpy (fp32), shared by a card's shards and nothing else.

Shapes: T tokens of a step, h hidden, H query heads, K KV heads, d per head. Weights are stored
[out, in] as in the checkpoint, so a projection is ``x @ W.T``.
"""
from __future__ import annotations

import math

import numpy as np


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


def swiglu(x: np.ndarray, gate: np.ndarray, up: np.ndarray, down: np.ndarray) -> np.ndarray:
    return (silu(x @ gate.T) * (x @ up.T)) @ down.T


def route(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """A mixture of experts' router (Mixtral's): the k experts of highest score for each token [T, k] and
    their weights, the softmax over all experts renormalised over the k picked."""
    picks = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    chosen = np.take_along_axis(z, picks, axis=1)
    return picks, chosen / chosen.sum(axis=1, keepdims=True)


def rope_frequencies(head_dim: int, theta: float, scaling: dict | None) -> np.ndarray:
    """Inverse frequencies of rotary embeddings (d/2), with Llama 3's long-context rescaling when given:
    long wavelengths slowed by ``factor``, short ones kept, the band between blended."""
    inv = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    if not scaling or scaling.get("rope_type", scaling.get("type")) != "llama3":
        return inv
    factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    old = scaling["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv
    scaled = np.where(wavelen > old / low, inv / factor, inv)
    smooth = (old / wavelen - low) / (high - low)
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= old / high) & (wavelen <= old / low)
    return np.where(medium, blended, scaled)


def apply_rope(x: np.ndarray, positions: np.ndarray, inv_freq: np.ndarray) -> np.ndarray:
    """Rotate ``x`` [T, heads, d] by each token's position (the halves convention of Hugging Face)."""
    angles = positions[:, None].astype(np.float64) * inv_freq[None, :]          # T × d/2
    cos = np.cos(np.concatenate([angles, angles], axis=-1)).astype(np.float32)[:, None, :]
    sin = np.sin(np.concatenate([angles, angles], axis=-1)).astype(np.float32)[:, None, :]
    half = x.shape[-1] // 2
    rotated = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rotated * sin


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, q_pos: np.ndarray) -> np.ndarray:
    """Causal grouped-query attention: q [T, H, d] at positions ``q_pos``; k, v [L, K, d] for positions
    0..L-1; query head j reads KV head j // (H/K). Returns [T, H·d]."""
    T, H, d = q.shape
    group = H // k.shape[1]
    kk, vv = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)             # L × H × d
    scores = np.einsum("thd,lhd->htl", q, kk) / np.float32(math.sqrt(d))
    scores = np.where(np.arange(k.shape[0])[None, None, :] <= q_pos[None, :, None], scores, -np.inf)
    scores = scores - scores.max(axis=-1, keepdims=True)
    p = np.exp(scores)
    p /= p.sum(axis=-1, keepdims=True)
    return np.einsum("htl,lhd->thd", p, vv).reshape(T, H * d)


class PagedKV:
    """One card's KV cache for its KV heads: fixed-size blocks, a block table per sequence."""

    def __init__(self, layers: int, kv_heads: int, head_dim: int, block_size: int = 16):
        self.layers, self.block = layers, block_size
        self.k: list[np.ndarray] = []       # one [layers, block, K, d] block each
        self.v: list[np.ndarray] = []
        self.free: list[int] = []
        self.tables: dict[int, list[int]] = {}
        self.shape = (layers, block_size, kv_heads, head_dim)

    def write(self, seq: int, layer: int, positions: np.ndarray, k: np.ndarray, v: np.ndarray) -> None:
        table = self.tables.setdefault(seq, [])
        while len(table) * self.block <= int(positions.max()):
            table.append(self._new_block())
        blocks, slots = np.array(table)[positions // self.block], positions % self.block
        for b, s, kk, vv in zip(blocks.tolist(), slots.tolist(), k, v):
            self.k[b][layer, s], self.v[b][layer, s] = kk, vv

    def read(self, seq: int, layer: int, length: int) -> tuple[np.ndarray, np.ndarray]:
        """K and V of positions 0..length-1 of ``seq`` at ``layer`` ([length, K, d] each)."""
        table = self.tables[seq][: -(-length // self.block)]
        k = np.concatenate([self.k[b][layer] for b in table])[:length]
        v = np.concatenate([self.v[b][layer] for b in table])[:length]
        return k, v

    def release(self, seq: int) -> None:
        self.free += self.tables.pop(seq, [])

    @property
    def blocks(self) -> int:
        return len(self.k)

    def _new_block(self) -> int:
        if self.free:
            return self.free.pop()
        self.k.append(np.zeros(self.shape, dtype=np.float32))
        self.v.append(np.zeros(self.shape, dtype=np.float32))
        return len(self.k) - 1


def sample(logits: np.ndarray, temperature: float, rng: np.random.Generator | None) -> int:
    """Greedy (temperature 0) or a seeded draw from the softmax at ``temperature``."""
    if temperature <= 0 or rng is None:
        return int(np.argmax(logits))
    z = logits.astype(np.float64) / temperature
    p = np.exp(z - z.max())
    return int(rng.choice(len(p), p=p / p.sum()))
