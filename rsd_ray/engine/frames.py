"""An instance's telemetry, as a router scrapes it (vLLM's per-instance gauges and counters)."""
from __future__ import annotations

from dataclasses import dataclass

from rsd_ray.engine.request import PlainValues


@dataclass(frozen=True)
class InstanceFrame(PlainValues):
    instance: int
    clock_s: float
    running: int
    waiting: int
    kv_usage: float
    output_tokens: int
    computed_tokens: int
    steps: int
    preemptions: int
    busy_s: float
    failed: bool = False
    prefix_cache_queries: int = 0     # prompt tokens looked up in the prefix cache (vLLM's counter)
    prefix_cache_hits: int = 0        # of them, found
    kv_offload_hits: int = 0          # prompt tokens' KV brought back from host memory (kv_offloading_size)
    kv_offload_stored: int = 0        # prefix blocks evicted from the cards into host memory
