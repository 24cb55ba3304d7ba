"""The plan as data, for ``rsd-ray compile``: shards, memory, steps, link volumes.

A report over the compiler's output (it also prices steps with the cost model and the
sync), so it sits beside the compiler, not inside it."""
from __future__ import annotations

import dataclasses
from collections import Counter

import numpy as np

from rsd_ray.calibration import HostCost
from rsd_ray.interconnect.collectives import sharers
from rsd_ray.compiler import compile_plan, plan_memory
from rsd_ray.compiler.formats import KV_CACHE_DTYPES, SCHEMES, matmul_compute, weight_format
from rsd_ray.compiler.shard import weight_bytes_per_card
from rsd_ray.config import ConfigError, RunSpec
from rsd_ray.hardware.card_group import slowest
from rsd_ray.hardware.costmodel import StepCost, peak_flops, runs_in
from rsd_ray.engine.pricing import GroupSync
from rsd_ray.interconnect.topology import Topology


def example_shapes(spec: RunSpec) -> dict[str, np.ndarray]:
    """A full prefill chunk of one prompt and a decode step of a full batch at 1,024 context."""
    prompt = min(spec.engine.max_num_batched_tokens, 1024)
    batch, ctx = min(spec.engine.max_num_seqs, 64), 1024
    return {f"prefill {prompt} tok": np.array([1.0, prompt, 1, prompt * (prompt + 1) / 2, prompt]),
            f"decode {batch} seq @ {ctx}": np.array([1.0, batch, batch, batch * (ctx + 1), batch * (ctx + 1)])}


def precision(spec: RunSpec, memory) -> dict:
    """The number formats the plan uses, what the device computes the matmuls in, and the memory figures
    the formats changed beside those of the unquantised model (``compile`` shows what a format buys)."""
    m, e, dev = spec.model, spec.engine, spec.device
    compute, plain_model = matmul_compute(m), dataclasses.replace(m, quantization="none")
    try:
        plain = plan_memory(plain_model, spec.tp, dev, dataclasses.replace(e, kv_cache_dtype="auto"))
        unquantised = {"weights": plain.weights, "num_blocks": plain.num_blocks}
    except ConfigError:                                   # only the formats make it fit at this TP
        unquantised = {"weights": weight_bytes_per_card(plain_model, spec.tp), "num_blocks": None}
    return {"quantization": m.quantization, "weights": weight_format(m),
            "group_size": m.quant_group_size if SCHEMES[m.quantization].grouped else None,
            "matmul_compute": compute, "matmul_runs_in": runs_in(dev, compute),
            "matmul_peak_tflops": peak_flops(dev, compute) / 1e12,
            "activations": m.dtype, "kv_cache": KV_CACHE_DTYPES[e.kv_cache_dtype] or m.dtype,
            "unquantised": unquantised,
            "quantised": {"weights": memory.weights, "num_blocks": memory.num_blocks}}


def experts(spec: RunSpec, program) -> dict | None:
    """A mixture of experts' placement: whole experts per card and each card's share of the routed pairs."""
    m = spec.model
    if not m.num_experts:
        return None
    routing = list(program.routing)
    return {"experts": m.num_experts, "per_token": m.experts_per_token, "per_card": m.num_experts // spec.tp,
            "shared": m.num_shared_experts, "moe_layers": m.moe_layers, "skew": m.expert_skew,
            "pairs_per_token_by_card": routing, "busiest_over_mean": max(routing) / (sum(routing) / len(routing))}


def describe(spec: RunSpec) -> dict:
    topology = Topology(spec.rack, spec.device)
    plan = compile_plan(spec, topology)
    group = list(plan.placement.groups[plan.prefill_instances])     # the rack's (decode) pool's first
    shared = sharers(topology, [list(g) for g in plan.placement.groups])
    program = plan.programs[0]
    ranks = tuple((StepCost(p, spec.device), 1.0) for p in plan.programs)   # a MoE's ranks may differ
    cost = ranks[0][0]
    steps = []
    for name, x in example_shapes(spec).items():
        sync = GroupSync(program, group, topology, spec.compiler.collective, shared)
        segments = slowest(ranks, x[None])    # the group waits for its slowest card, segment by segment
        seconds, collectives = sync.run_steps(x[None], segments, HostCost.of(spec.engine, len(group)))
        took, collectives = float(seconds[0]), collectives[0]
        steps.append({"step": name, **cost.totals(x), "compute_s": float(segments[0].sum()),
                      "collective_s": float(collectives.sum()), "step_s": took,
                      "tokens_per_s": float(x[1]) / took,
                      "link_bytes": {k: v for k, v in sorted(sync.link_bytes().items()) if v}})
    return {
        "model": spec.model.name, "tp": spec.tp, "rack": spec.rack.name, "device": spec.device.name,
        "placement": {"scope": plan.placement.scope, "instances": len(plan.placement.groups),
                      "groups": [list(g) for g in plan.placement.groups],
                      "idle_cards": list(plan.placement.idle_cards)},
        "shards": [dataclasses.asdict(s) | {"card_numel": s.card_numel} for s in plan.shards],
        "memory": dataclasses.asdict(plan.memory),
        "precision": precision(spec, plan.memory),
        "experts": experts(spec, program),
        "commands": dict(Counter(c.kind for c in program.commands)),
        "pipeline_chunks": program.chunks,
        "program_bytes": len(program.to_msgpack()),
        "steps": steps,
        **({"prefill_pool": {"tp": pool.tp, "instances": plan.prefill_instances,
                             "memory": dataclasses.asdict(pool.memory)}} if (pool := plan.prefill_pool) else {}),
    }


__all__ = ["describe", "example_shapes", "experts", "precision"]
