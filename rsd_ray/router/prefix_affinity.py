"""Prefix affinity: a request goes where its prompt's leading blocks went before — that instance's prefix
cache is the likeliest to hold them — unless the load is imbalanced, then least loaded. This is the
strategy of Ray Serve LLM's PrefixCacheAffinityRouter and llm-d's prefix-cache scorer.

The router cannot see the engines' caches, so it remembers what it routed: block hash → the instance it
last sent that block to (a bounded, least-recently-used table). The candidate is the instance holding the
longest leading run of the prompt's hashes. It wins when it matched at least ``MATCH_RATE_THRESHOLD`` of
them (Ray Serve's documented 10 %) and the spread of loads over eligible instances is below
``IMBALANCE_THRESHOLD`` requests; otherwise the least loaded instance (ties: lowest id) takes it. A prompt
without hashes is routed least loaded.
"""
from collections import OrderedDict

import numpy as np

from rsd_ray.router.least_loaded import least_loaded
from rsd_ray.router.registry import register

MATCH_RATE_THRESHOLD = 0.10   # Ray Serve LLM PrefixCacheAffinityRouter: "High Match Rate (≥10%)"
IMBALANCE_THRESHOLD = 10      # requests between the most and least loaded instance before load wins (our choice)
TABLE_BLOCKS = 1_000_000      # hashes remembered; the oldest are forgotten first


@register("prefix_affinity")
class PrefixAffinity:
    uses_prefix = True

    def __init__(self, num_instances: int, rng):
        self.owner: OrderedDict[int, int] = OrderedDict()

    def choose(self, loads: np.ndarray, eligible: np.ndarray, hash_ids=()) -> int:
        pick, run = least_loaded(loads, eligible), 0
        if hash_ids and loads[eligible].max() - loads[eligible].min() < IMBALANCE_THRESHOLD:
            first = self.owner.get(hash_ids[0])
            if first is not None and eligible[first]:
                for h in hash_ids:
                    if self.owner.get(h) != first:
                        break
                    run += 1
                if run >= MATCH_RATE_THRESHOLD * len(hash_ids):
                    pick = first
        for h in hash_ids:
            self.owner[h] = pick
            self.owner.move_to_end(h)
        while len(self.owner) > TABLE_BLOCKS:
            self.owner.popitem(last=False)
        return pick
