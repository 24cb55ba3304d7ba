"""The rack's gRPC API: generic handlers, messages as msgpack maps (no generated code).

Service ``rsdray.Rack``; every request and response is one msgpack map:

==========  ===============  ======================================================================
method      kind             request → response
==========  ===============  ======================================================================
Generate    unary → stream   {prompt | prompt_ids | prompt_tokens, max_tokens, min_tokens, ignore_eos,
                             instance} → {index, text, t} per token, then {finish_reason, usage}
Telemetry   unary → stream   {interval_s} → a dashboard frame (``rsd_ray.report.telemetry``) per interval
Smi         unary → unary    {} → {t, device, pcie_gen, cards_per_server, cards[] (``CardFrame``), contexts[]}
Status      unary → unary    {} → {rack, model, tp, router, t, pace, lag_s, in_flight, instances, ...}
Control     unary → unary    {kind: kill_card | kill_server | ambient | degrade_link, target, value, link}
                             | {kind: pace, value}
                             → {ok, message}
==========  ===============  ======================================================================

Errors are gRPC status codes: INVALID_ARGUMENT (HTTP 400), NOT_FOUND (404),
RESOURCE_EXHAUSTED (429), UNAVAILABLE (503). ``rsd_ray.serve.client.RackClient`` is the
Python client.
"""
from __future__ import annotations

import asyncio
import dataclasses
import math
import time

import grpc
import msgpack
from pydantic import ValidationError

from rsd_ray.config import ConfigError
from rsd_ray.rack.faults import parse as parse_fault
from rsd_ray.serve.jobs import accepted, admit
from rsd_ray.serve.protocol import ApiError, CompletionBody

SERVICE = "rsdray.Rack"
STATUS = {400: grpc.StatusCode.INVALID_ARGUMENT, 404: grpc.StatusCode.NOT_FOUND,
          429: grpc.StatusCode.RESOURCE_EXHAUSTED, 503: grpc.StatusCode.UNAVAILABLE}
TELEMETRY_MIN_INTERVAL_S = 0.05


def pack(message) -> bytes:
    return msgpack.packb(message, use_bin_type=True)


def unpack(data: bytes):
    return msgpack.unpackb(data, raw=False)


def frames(items) -> list[dict]:
    return [dataclasses.asdict(f) for f in items]


class RackService:
    def __init__(self, server):
        """``server``: the RackServer (its gateway, controller and API context)."""
        self.server, self.ctx = server, server.ctx

    async def Generate(self, request: dict, context):
        prompt = request.get("prompt_ids") or request.get("prompt")
        if prompt is None and "prompt_tokens" in request:
            prompt = [0] * int(request["prompt_tokens"])
        try:
            body = CompletionBody(model=self.ctx.model, prompt=prompt if prompt is not None else "",
                                  max_tokens=request.get("max_tokens"), min_tokens=request.get("min_tokens", 0),
                                  ignore_eos=request.get("ignore_eos", False))
            instance = request.get("instance", -1)
            job = admit(self.ctx, body, "completion", None if instance is None or instance < 0 else instance)
        except ValidationError as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err.errors()[0].get("msg")))
        except ApiError as err:
            await context.abort(STATUS[err.status], err.message)
        done = False
        try:
            await accepted(job)
            async for choice, kind, value, due in job.events():
                if kind == "token":
                    yield {"index": value, "text": choice.piece(value)}
                    self.server.gateway.delivered(time.monotonic() - due, first=value == 0)
                else:
                    done = True
                    yield {"finish_reason": value, "usage": job.usage()}
        except ApiError as err:
            done = True
            await context.abort(STATUS[err.status], err.message)
        finally:
            if not done:
                job.abort()

    async def Telemetry(self, request: dict, context):
        interval = max(TELEMETRY_MIN_INTERVAL_S, float(request.get("interval_s", 0.5)))
        while True:
            yield self.server.frame()
            await asyncio.sleep(interval)

    async def Smi(self, request: dict, context):
        g, spec = self.server.gateway, self.server.spec
        return {"t": g.t, "device": spec.device.name, "pcie_gen": spec.device.pcie_gen,
                "cards_per_server": spec.rack.cards_per_server, "cards": frames(g.cards),
                "contexts": self.server.contexts()}

    async def Status(self, request: dict, context):
        spec = self.server.spec
        return {"rack": spec.rack.name, "model": self.ctx.model, "tp": spec.tp, "router": spec.router.policy,
                "servers": spec.rack.servers, "cards": spec.rack.servers * spec.rack.cards_per_server,
                **self.server.status()}

    async def Control(self, request: dict, context):
        kind = request.get("kind")
        if kind == "pace":
            value = request.get("value")
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"pace must be a finite number > 0, not {value!r}")
            self.server.gateway.set_pace(float(value))
            return {"ok": True, "message": f"pace {value}"}
        faults = {"kill_card": "card:{target}@0", "kill_server": "server:{target}@0",
                  "ambient": "ambient:server{target}={value:+g}C@0", "degrade_link": "link:{link}={value:g}%@0"}
        if kind in faults:
            try:
                fault = parse_fault(faults[kind].format(target=request.get("target"), value=request.get("value") or 0,
                                                        link=request.get("link")), self.server.spec)
            except (ConfigError, ValueError, TypeError) as err:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
            self.server.controller.control(fault.control())
            return {"ok": True, "message": f"{kind} {request.get('target')} at the next epoch"}
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                            f"unknown control {kind!r}: kill_card, kill_server, ambient, degrade_link or pace")


def _handler(service: RackService) -> grpc.GenericRpcHandler:
    streams = {"Generate", "Telemetry"}
    methods = {}
    for name in ("Generate", "Telemetry", "Smi", "Status", "Control"):
        make = grpc.unary_stream_rpc_method_handler if name in streams else grpc.unary_unary_rpc_method_handler
        methods[name] = make(getattr(service, name), request_deserializer=unpack, response_serializer=pack)
    return grpc.method_handlers_generic_handler(SERVICE, methods)


async def start_grpc(server, host: str, port: int):
    """A started grpc.aio server on the running loop; raises when the port cannot be bound."""
    grpc_server = grpc.aio.server()
    grpc_server.add_generic_rpc_handlers((_handler(RackService(server)),))
    try:
        bound = grpc_server.add_insecure_port(f"{host}:{port}")
    except RuntimeError:
        bound = 0
    if not bound:
        raise ConfigError("command line", "--grpc-port", port, f"cannot listen on {host}:{port}; choose another "
                          "port (or 0 for no gRPC server)")
    await grpc_server.start()
    return grpc_server
