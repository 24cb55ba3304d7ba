"""Power of two choices: two instances drawn at random (seeded), the less loaded wins."""
from rsd_ray.router.registry import register


@register("power_of_two")
class PowerOfTwo:
    def __init__(self, num_instances: int, rng):
        self.rng = rng

    def choose(self, loads: list[int], eligible: list[int]) -> int:
        if len(eligible) == 1:
            return eligible[0]
        a, b = self.rng.sample(eligible, 2)
        return min((a, b), key=lambda i: (loads[i], i))
