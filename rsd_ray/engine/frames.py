"""An instance's telemetry, as a router scrapes it (vLLM's per-instance gauges and counters)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class InstanceFrame:
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

    @classmethod
    def of(cls, **fields) -> "InstanceFrame":
        """A frame from every field, at a fraction of the frozen ``__init__``'s cost (each is a plain value:
        nothing to check), which every instance pays every epoch."""
        new = object.__new__(cls)
        new.__dict__.update(fields)
        return new
