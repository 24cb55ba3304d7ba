"""Model + TP degree + rack → per-card plans: shards, memory, command streams, placement."""
from __future__ import annotations

from dataclasses import dataclass

from rsd_ray.compiler.memory import MemoryPlan, plan_memory
from rsd_ray.compiler.placement import Placement, place
from rsd_ray.compiler.program import Program, compile_program
from rsd_ray.compiler.shard import Shard, shard_plan
from rsd_ray.config import ConfigError, RunSpec
from rsd_ray.interconnect.topology import Topology


@dataclass(frozen=True)
class Plan:
    """What the compiler hands to the placement and the cards."""
    shards: tuple[Shard, ...]
    memory: MemoryPlan
    programs: tuple[Program, ...]      # one per rank of a TP group
    placement: Placement


def compile_plan(spec: RunSpec, topology: Topology) -> Plan:
    memory = plan_memory(spec.model, spec.tp, spec.device, spec.engine)
    programs = tuple(compile_program(spec.model, spec.tp, rank, spec.compiler.pipeline_chunks,
                                     spec.engine.kv_cache_dtype, spec.seed) for rank in range(spec.tp))
    placement = place(topology, spec.tp)
    prefill = spec.router.prefill_instances
    if prefill >= len(placement.groups):
        raise ConfigError("run config", "router.prefill_instances", prefill,
                          f"the rack holds {len(placement.groups)} instances of TP {spec.tp}: leave at least one "
                          "to decode (0: every instance does both)")
    return Plan(tuple(shard_plan(spec.model, spec.tp)), memory, programs, placement)


def check_plan(spec: RunSpec) -> Plan:
    """Compile and place without starting anything: raises ConfigError when the config cannot run."""
    return compile_plan(spec, Topology(spec.rack, spec.device))


__all__ = ["Plan", "check_plan", "compile_plan", "MemoryPlan", "Placement", "Program", "Shard", "compile_program",
           "plan_memory", "place", "shard_plan"]
