"""Least loaded: fewest running + waiting + sent since the last telemetry (ties: lowest id)."""
from rsd_ray.router.registry import register


@register("least_loaded")
class LeastLoaded:
    def __init__(self, num_instances: int, rng):
        pass

    def choose(self, loads: list[int], eligible: list[int]) -> int:
        return min(eligible, key=lambda i: (loads[i], i))
