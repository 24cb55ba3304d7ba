"""Least loaded: fewest running + waiting + sent since the last telemetry (ties: lowest id)."""
import numpy as np

from rsd_ray.router.registry import register


@register("least_loaded")
class LeastLoaded:
    def __init__(self, num_instances: int, rng):
        pass

    def choose(self, loads: np.ndarray, eligible: np.ndarray) -> int:
        return int(np.where(eligible, loads, np.iinfo(loads.dtype).max).argmin())   # argmin: the first of ties
