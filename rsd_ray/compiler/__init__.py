"""Model + TP degree + rack → per-card plans: shards, memory, command streams, placement."""
from __future__ import annotations

from dataclasses import dataclass

from rsd_ray.compiler.memory import MemoryPlan, plan_memory
from rsd_ray.compiler.placement import Placement, place
from rsd_ray.compiler.program import Program, compile_program
from rsd_ray.compiler.shard import Shard, shard_plan
from rsd_ray.config import ConfigError, EngineSpec, RunSpec
from rsd_ray.interconnect.topology import Topology


@dataclass(frozen=True)
class PoolPlan:
    """What every instance of one pool runs: its engine, and the model compiled for its TP degree."""
    tp: int
    engine: EngineSpec
    shards: tuple[Shard, ...]
    memory: MemoryPlan
    programs: tuple[Program, ...]      # one per rank of a TP group

    @property
    def num_blocks(self) -> int:
        """KV blocks an instance of the pool has: the engine's override (vLLM's num_gpu_blocks_override), or
        the memory plan's."""
        return self.engine.num_blocks_override or self.memory.num_blocks


@dataclass(frozen=True)
class Plan:
    """What the compiler hands to the placement and the cards. ``pools``: the rack's one pool, or a
    disaggregated rack's prefill pool of its own (the first ``prefill_instances`` instances) and then the
    decode pool; ``shards``, ``memory`` and ``programs`` are the rack's (decode) pool's."""
    pools: tuple[PoolPlan, ...]
    placement: Placement
    prefill_instances: int = 0

    def pool_of(self, instance: int) -> PoolPlan:
        return self.pools[0] if instance < self.prefill_instances else self.pools[-1]

    @property
    def prefill_pool(self) -> PoolPlan | None:
        """The prefill pool's plan when it has settings of its own (None: every instance runs the rack's)."""
        return self.pools[0] if len(self.pools) > 1 else None

    @property
    def shards(self) -> tuple[Shard, ...]:
        return self.pools[-1].shards

    @property
    def memory(self) -> MemoryPlan:
        return self.pools[-1].memory

    @property
    def programs(self) -> tuple[Program, ...]:
        return self.pools[-1].programs


def compile_pool(spec: RunSpec, tp: int, engine: EngineSpec, field: str = "tp") -> PoolPlan:
    memory = plan_memory(spec.model, tp, spec.device, engine, field)
    programs = tuple(compile_program(spec.model, tp, rank, spec.compiler.pipeline_chunks, engine.kv_cache_dtype,
                                     spec.seed) for rank in range(tp))
    return PoolPlan(tp, engine, tuple(shard_plan(spec.model, tp)), memory, programs)


def compile_plan(spec: RunSpec, topology: Topology) -> Plan:
    pools = [compile_pool(spec, spec.tp, spec.engine)]
    prefill = spec.router.prefill_instances
    if (spec.prefill_tp, spec.prefill_engine) != (spec.tp, spec.engine):
        pools.insert(0, compile_pool(spec, spec.prefill_tp, spec.prefill_engine, "prefill.tp"))
    placement = place(topology, spec.tp, (prefill, spec.prefill_tp))
    if prefill >= len(placement.groups):
        raise ConfigError("run config", "router.prefill_instances", prefill, _no_decode(spec, topology, placement))
    return Plan(tuple(pools), placement, prefill)


def _no_decode(spec: RunSpec, topology: Topology, placement: Placement) -> str:
    """Why ``router.prefill_instances`` leaves no instance to decode, and what to do."""
    tp, prefill_tp = spec.tp, spec.prefill_tp
    if prefill_tp == tp:
        return (f"the rack holds {len(placement.groups)} instances of TP {tp}: leave at least one to decode (0: every "
                "instance does both)")
    fit = len(place(topology, prefill_tp).groups)
    if fit < spec.router.prefill_instances:
        return f"the rack holds {fit} instances of TP {prefill_tp}: use fewer, and leave cards for one of TP {tp}"
    return f"they leave no {tp} cards together for a decode instance: use fewer"


def check_plan(spec: RunSpec) -> Plan:
    """Compile and place without starting anything: raises ConfigError when the config cannot run."""
    return compile_plan(spec, Topology(spec.rack, spec.device))


__all__ = ["Plan", "PoolPlan", "check_plan", "compile_plan", "MemoryPlan", "Placement", "Program", "Shard",
           "compile_program", "plan_memory", "place", "shard_plan"]
