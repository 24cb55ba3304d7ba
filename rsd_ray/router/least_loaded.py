"""Least loaded: fewest running + waiting + sent since the last telemetry (ties: lowest id)."""
import numpy as np

from rsd_ray.router.registry import register

NEVER = np.iinfo(np.int64).max       # the load of an instance that may not be chosen

def least_loaded(loads: np.ndarray, eligible: np.ndarray) -> int:
    """The eligible instance with the smallest load; argmin takes the first of ties. Other policies fall
    back to it."""
    return int(np.where(eligible, loads, NEVER).argmin())


@register("least_loaded")
class LeastLoaded:
    def __init__(self, num_instances: int, rng):
        pass

    def choose(self, loads: np.ndarray, eligible: np.ndarray) -> int:
        return least_loaded(loads, eligible)
