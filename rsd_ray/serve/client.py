"""A small Python client of the rack's gRPC API (``rsd_ray.serve.grpc_api`` has the schema).

::

    with RackClient("127.0.0.1:50051") as rack:
        for event in rack.generate(prompt_tokens=128, max_tokens=32, ignore_eos=True):
            ...
        rack.smi()["cards"]; rack.status(); rack.control("kill_card", target=3)
"""
from __future__ import annotations

import grpc

from rsd_ray.serve.grpc_api import SERVICE, pack, unpack


class RackClient:
    def __init__(self, target: str, timeout_s: float = 30.0):
        self.channel = grpc.insecure_channel(target)
        self.timeout_s = timeout_s

    def _call(self, method: str, stream: bool):
        make = self.channel.unary_stream if stream else self.channel.unary_unary
        return make(f"/{SERVICE}/{method}", request_serializer=pack, response_deserializer=unpack)

    def generate(self, prompt: str | None = None, prompt_ids: list[int] | None = None,
                 prompt_tokens: int | None = None, max_tokens: int = 16, min_tokens: int = 0,
                 ignore_eos: bool = False, instance: int = -1):
        """Yields {index, text} per token, then {finish_reason, usage}; raises grpc.RpcError on an error."""
        request = {"max_tokens": max_tokens, "min_tokens": min_tokens, "ignore_eos": ignore_eos,
                   "instance": instance}
        for key, value in (("prompt", prompt), ("prompt_ids", prompt_ids), ("prompt_tokens", prompt_tokens)):
            if value is not None:
                request[key] = value
        yield from self._call("Generate", True)(request)

    def telemetry(self, interval_s: float = 0.5):
        """Yields the rack's frames every ``interval_s`` (until the caller stops iterating)."""
        return self._call("Telemetry", True)({"interval_s": interval_s})

    def smi(self) -> dict:
        return self._call("Smi", False)({}, timeout=self.timeout_s)

    def status(self) -> dict:
        return self._call("Status", False)({}, timeout=self.timeout_s)

    def control(self, kind: str, target: int | None = None, value: float | None = None, link: str | None = None) -> dict:
        return self._call("Control", False)({"kind": kind, "target": target, "value": value, "link": link},
                                            timeout=self.timeout_s)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
