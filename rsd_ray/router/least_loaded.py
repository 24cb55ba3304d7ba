"""Least loaded: fewest running + waiting + sent since the last telemetry (ties: lowest id)."""
import numpy as np

from rsd_ray.router.registry import register

NEVER = np.iinfo(np.int64).max       # the load of an instance that may not be chosen


def least_loaded(loads: np.ndarray, eligible: np.ndarray) -> int:
    """The eligible instance with the smallest load; argmin takes the first of ties. Other policies fall
    back to it."""
    return int(np.where(eligible, loads, NEVER).argmin())


def least_loaded_in_turn(loads: np.ndarray, eligible: np.ndarray, room: np.ndarray, count: int) -> np.ndarray:
    """The instances ``least_loaded`` picks for ``count`` requests routed one after another, each pick adding
    one to its instance's load and taking one of its ``room`` (at 0 it takes nothing more) — in one go.
    The picks are the ``count`` smallest (load + j, id) pairs with j < room, in that order: every instance
    is filled up to a water level (found by bisection), then the instances at the level take one more, by
    id. Fewer than ``count`` when the room runs out. ``tests/test_router.py`` holds it to one at a time."""
    idx = np.flatnonzero(eligible & (room > 0))
    if not len(idx) or count <= 0:
        return np.zeros(0, dtype=np.int64)
    base, cap = loads[idx], np.minimum(room[idx], count)

    def below(level: int) -> int:                 # picks at loads under ``level``
        return int(np.minimum(np.maximum(level - base, 0), cap).sum())
    lo, hi = int(base.min()), int((base + cap).max())
    if below(hi) <= count:                        # every pick there is
        lo = hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if below(mid) <= count else (lo, mid)
    takes = np.minimum(np.maximum(lo - base, 0), cap)
    at_level = np.flatnonzero((base <= lo) & (lo < base + cap))[:count - int(takes.sum())]
    takes[at_level] += 1
    owner = np.repeat(idx, takes)
    step = np.arange(len(owner)) - np.repeat(np.cumsum(takes) - takes, takes)   # j: its instance's j-th pick
    return owner[np.lexsort((owner, np.repeat(base, takes) + step))]


@register("least_loaded")
class LeastLoaded:
    def __init__(self, num_instances: int, rng):
        pass

    def choose(self, loads: np.ndarray, eligible: np.ndarray) -> int:
        return least_loaded(loads, eligible)

    def choose_in_turn(self, loads: np.ndarray, eligible: np.ndarray, room: np.ndarray, count: int) -> np.ndarray:
        return least_loaded_in_turn(loads, eligible, room, count)
