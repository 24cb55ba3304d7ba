"""Power of two choices: two instances drawn at random (seeded), the less loaded wins."""
import numpy as np

from rsd_ray.router.registry import register


@register("power_of_two")
class PowerOfTwo:
    def __init__(self, num_instances: int, rng):
        self.rng = rng

    def choose(self, loads, eligible) -> int:
        eligible = np.flatnonzero(eligible).tolist()
        if len(eligible) == 1:
            return eligible[0]
        a, b = self.rng.sample(eligible, 2)
        return min((a, b), key=lambda i: (loads[i], i))
