"""Round robin: the next instance with room, in turn."""
from rsd_ray.router.registry import register


@register("round_robin")
class RoundRobin:
    def __init__(self, num_instances: int, rng):
        self.n, self.next = num_instances, 0

    def choose(self, loads, eligible) -> int:
        for k in range(self.n):
            i = (self.next + k) % self.n
            if eligible[i]:
                self.next = (i + 1) % self.n
                return i
        raise AssertionError("choose() called with no eligible instance")
