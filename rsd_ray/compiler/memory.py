"""Per-card memory plan, checked against the card's budget before anything starts.

::

    ┌──────────── usable DRAM (16 GiB − 288 MiB on ATOM) ─────────────┐
    │ weights shard │ activation workspace │ comm buffers │ KV blocks │ (1 − kv_cache_fraction) spare
    └─────────────────────────────────────────────────────────────────┘
"""
from __future__ import annotations

from dataclasses import dataclass

from rsd_ray.compiler.formats import weight_format
from rsd_ray.compiler.shard import kv_bytes_per_token, kv_heads_per_card, padded_vocab, weight_bytes_per_card
from rsd_ray.config import GIB, ConfigError, DeviceSpec, EngineSpec, ModelSpec

WORKSPACE_BYTES = 2.0  # the workspace is sized in 16-bit activations, whatever the weights


@dataclass(frozen=True)
class MemoryPlan:
    weights: int
    workspace: int
    comm_buffers: int
    kv_cache: int
    budget: int
    kv_bytes_per_token: float
    block_size: int
    num_blocks: int

    @property
    def regions(self) -> dict[str, int]:
        return {"weights": self.weights, "workspace": self.workspace,
                "comm_buffers": self.comm_buffers, "kv_cache": self.kv_cache}

    @property
    def used(self) -> int:
        return sum(self.regions.values())


def _needs(model: ModelSpec, tp: int, engine: EngineSpec) -> tuple[int, int, int, int]:
    h, d, tokens = model.hidden_size, model.dims_per_head, engine.max_num_batched_tokens
    q, kv = model.num_heads // tp * d, kv_heads_per_card(model, tp) * d
    per_token = h * 2 + q * 2 + kv * 2 + 3 * (model.intermediate_size // tp)
    logits = engine.max_num_seqs * padded_vocab(model, tp) // tp
    workspace = int((tokens * per_token + logits) * WORKSPACE_BYTES)
    comm = int(2 * tokens * h * WORKSPACE_BYTES)
    max_len = engine.max_model_len or model.max_seq_len
    one_seq_kv = int(kv_bytes_per_token(model, tp, engine.kv_cache_dtype) * max_len)
    return int(weight_bytes_per_card(model, tp)), workspace, comm, one_seq_kv


def plan_memory(model: ModelSpec, tp: int, device: DeviceSpec, engine: EngineSpec, field: str = "tp") -> MemoryPlan:
    """Lay out one card's memory, or refuse (blaming ``field``) with the numbers and a TP that fits."""
    weights, workspace, comm, one_seq = _needs(model, tp, engine)
    budget = device.usable_bytes
    kv = int(budget * engine.kv_cache_fraction) - weights - workspace - comm
    if kv < one_seq:
        max_len = engine.max_model_len or model.max_seq_len
        raise ConfigError("run config", field, tp, (
            f"{model.name} at tp={tp} needs {weights / GIB:.2f} GiB of {weight_format(model)} weights + "
            f"{one_seq / GIB:.2f} GiB of KV for one {max_len:,}-token sequence + "
            f"{(workspace + comm) / GIB:.2f} GiB workspace and buffers per card; one {device.name} card has "
            f"{budget / GIB:.2f} GiB ({engine.kv_cache_fraction:.0%} usable); {_suggest(model, device, engine)}"))
    per_token = kv_bytes_per_token(model, tp, engine.kv_cache_dtype)
    return MemoryPlan(weights, workspace, comm, kv, budget, per_token, engine.block_size,
                      int(kv // (per_token * engine.block_size)))


def _suggest(model: ModelSpec, device: DeviceSpec, engine: EngineSpec) -> str:
    """The smallest TP that fits; else what keeps every TP out: the engine's workspace on its own (its
    step's tokens and its batch's logits), or the weights and one sequence's KV."""
    usable, buffers = device.usable_bytes * engine.kv_cache_fraction, 0
    for tp in (1, 2, 4, 8, 16, 32, 64):
        if model.num_heads % tp or model.intermediate_size % tp:
            continue
        if model.num_kv_heads % tp and tp % model.num_kv_heads:
            continue
        weights, workspace, comm, one_seq = _needs(model, tp, engine)
        if weights + workspace + comm + one_seq <= usable:
            return f"use tp ≥ {tp}"
        buffers = workspace + comm                 # at the largest TP tried
    if buffers > usable:
        return (f"no tp up to 64 fits: the workspace alone takes {buffers / GIB:.2f} GiB a card; lower "
                f"engine.max_num_seqs ({engine.max_num_seqs:,}) or engine.max_num_batched_tokens "
                f"({engine.max_num_batched_tokens:,})")
    return "no tp up to 64 fits; use a larger card or a shorter engine.max_model_len"

