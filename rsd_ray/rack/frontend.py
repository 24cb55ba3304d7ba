"""The rack's front end: the gateway/router server a request passes through, and the network to its
instance's server. Off unless the router spec gives the gateway cores (``gateway_cores``).

The gateway is ``cores`` servers in parallel, first come first served: a request's service is
``GATEWAY_REQUEST_S`` plus ``GATEWAY_TOKEN_S`` per output token it will stream (its streaming work is
booked when it is admitted, a simplification: the core is taken then rather than spread over the answer).
It then crosses ToR → NIC → host of its instance's server: the path's latencies plus its prompt's bytes at
the slowest link. Each answer's tokens cross back (``RESPONSE_BYTES_PER_TOKEN`` each, counted, not timed).
Under load the gateway saturates (its cores busy all the time), requests queue there, and the rack's
tokens/s stop growing with servers: the bend a real rack's scaling curve has and a free front end hides.
"""
from __future__ import annotations

import heapq

from rsd_ray.calibration import GATEWAY_REQUEST_S, GATEWAY_TOKEN_S, REQUEST_BYTES_PER_TOKEN, RESPONSE_BYTES_PER_TOKEN
from rsd_ray.engine.request import Submit
from rsd_ray.interconnect.topology import Topology


class Frontend:
    def __init__(self, cores: int, topology: Topology):
        self.cores, self.topology = cores, topology
        self.free_at = [0.0] * cores                 # each core's next free time (a heap)
        self.requests = 0
        self.busy_s = self.wait_s = self.max_wait_s = 0.0
        self.request_bytes = self.response_bytes = 0.0

    def reach(self, sub: Submit, server: int) -> float:
        """The time request ``sub`` (sent at ``sub.arrival``) reaches the host of ``server``."""
        start = max(sub.arrival, heapq.heappop(self.free_at))
        service = GATEWAY_REQUEST_S + GATEWAY_TOKEN_S * sub.max_tokens
        heapq.heappush(self.free_at, start + service)
        path = self.topology.path("tor", f"host{server}")
        nbytes = REQUEST_BYTES_PER_TOKEN * sub.prompt_len
        self.requests += 1
        self.busy_s += service
        self.wait_s += start - sub.arrival
        self.max_wait_s = max(self.max_wait_s, start - sub.arrival)
        self.request_bytes += nbytes
        self.response_bytes += RESPONSE_BYTES_PER_TOKEN * sub.max_tokens
        return start + service + sum(l.latency for l in path) + nbytes / min(l.bandwidth for l in path)

    def summary(self, elapsed_s: float) -> dict:
        n = max(1, self.requests)
        return {"gateway_cores": self.cores, "requests": self.requests, "busy_s": self.busy_s,
                "utilisation": self.busy_s / (self.cores * elapsed_s) if elapsed_s else 0.0,
                "mean_wait_ms": self.wait_s / n * 1e3, "max_wait_ms": self.max_wait_s * 1e3,
                "request_bytes": self.request_bytes, "response_bytes": self.response_bytes}
