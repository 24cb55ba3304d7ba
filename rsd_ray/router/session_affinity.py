"""Session affinity: every request of one session (OpenAI's ``user`` field when serving, a ShareGPT
conversation's id in a trace) goes to the same instance, by consistent hashing, so a chat's turns find
their predecessors' KV blocks in that instance's prefix cache.

The ring holds ``VIRTUAL_NODES`` points per instance (a stable hash of "instance-k"); a session's key goes
to the first point clockwise whose instance is eligible, so losing or filling an instance moves only its
own sessions. A request without a session is routed least loaded.
"""
import bisect
import hashlib

import numpy as np

from rsd_ray.router.least_loaded import least_loaded
from rsd_ray.router.registry import register

VIRTUAL_NODES = 64      # points per instance: spreads sessions evenly (the usual tens to hundreds)


def _point(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


@register("session_affinity")
class SessionAffinity:
    uses_session = True

    def __init__(self, num_instances: int, rng):
        ring = sorted((_point(f"{i}-{k}"), i) for i in range(num_instances) for k in range(VIRTUAL_NODES))
        self.points, self.owners = [p for p, _ in ring], [i for _, i in ring]

    def choose(self, loads: np.ndarray, eligible: np.ndarray, session: str = "") -> int:
        if not session:
            return least_loaded(loads, eligible)
        start = bisect.bisect(self.points, _point(session))
        for k in range(len(self.points)):
            owner = self.owners[(start + k) % len(self.points)]
            if eligible[owner]:
                return owner
        raise ValueError("no eligible instance")     # the router only asks when one is
