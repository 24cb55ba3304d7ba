"""The OpenAI-compatible HTTP API (FastAPI), as vLLM's own server answers it.

``make_app(ctx)`` is the rack's endpoint (the router chooses an instance);
``make_app(ctx, i)`` is instance ``i``'s own endpoint, bypassing the router — mounted at
``/instances/{i}`` and, with ``--instance-ports``, on a port of its own. Errors come in
OpenAI's JSON (``{"error": {"message", "type", "param", "code"}}``).
"""
from __future__ import annotations

import asyncio
import json
import time

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from rsd_ray.serve.jobs import Job, ServeContext, accepted, admit
from rsd_ray.serve.protocol import ApiError, ChatBody, CompletionBody

DISCONNECT_POLL_S = 0.25
ARRIVAL = "rsd_ray.arrival"          # the ASGI scope key of a request's arrival wall time


class ArrivalStamp:
    """ASGI middleware: the wall time a request reached the server, before its body is read and checked, so the
    rack's TTFT starts when the client's does (vLLM's starts after parsing). The server's HTTP protocol stamps
    earlier where it can (``server._http_protocol``: as the first bytes are parsed); this is the fallback."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        scope.setdefault(ARRIVAL, time.monotonic())
        await self.app(scope, receive, send)


async def _stream(job: Job, include_usage: bool):
    """Server-sent events as vLLM writes them: a first chunk per choice (a chat's role, an echoed prompt), a
    chunk per token at its paced time, the finish reason, the usage when asked, then ``[DONE]``. Each token's
    delivery delay (its due wall time to the moment its chunk was written) is measured as the next one is
    asked for, which is when the server has written the previous."""
    gateway, done = job.ctx.gateway, False
    try:
        if job.kind == "chat" or job.echo:
            yield job.chunk([job.delta(c, None, None, first=True) for c in job.choices])
        async for choice, kind, value, due_now in job.events():
            if kind == "token":
                yield job.chunk([job.delta(choice, value, None)])[:-3] + f', "due": {due_now}}}\n\n'
                gateway.delivered(time.monotonic() - due_now, first=value == 0)
            else:
                yield job.chunk([job.delta(choice, None, value)])
        if include_usage:
            yield job.chunk([], job.usage())
        done = True
        yield "data: [DONE]\n\n"
    except ApiError as err:
        done = True
        yield f"data: {json.dumps(err.body())}\n\n"
        yield "data: [DONE]\n\n"
    finally:
        if not done:
            job.abort()                     # the client went away: free its requests


async def _whole(job: Job, request: Request) -> JSONResponse:
    async def collect():
        sent: dict[int, list[int]] = {c.index: [] for c in job.choices}
        last = time.monotonic()
        async for choice, kind, value, due in job.events():
            if kind == "token":
                sent[choice.index].append(value)
            last = due
        return sent, last

    task = asyncio.ensure_future(collect())
    while not task.done():
        await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
        if not task.done() and await request.is_disconnected():
            task.cancel()
            job.abort()
            return ApiError(400, "the client disconnected").response()
    sent, last = task.result()
    job.ctx.gateway.delivered(time.monotonic() - last, first=True)
    return JSONResponse({"id": job.id, "object": "chat.completion" if job.kind == "chat" else "text_completion",
                         "created": job.created, "model": job.ctx.model, "system_fingerprint": job.ctx.fingerprint,
                         "choices": [job.whole(c, sent[c.index]) for c in job.choices], "usage": job.usage()})


def _validation_error(err: RequestValidationError) -> ApiError:
    """pydantic's first complaint as OpenAI's 400: the field it names, or where the JSON broke."""
    first = err.errors()[0] if err.errors() else {"loc": (), "msg": "invalid request"}
    if first.get("type") == "json_invalid":
        at = first.get("loc", ("body", "?"))[-1]
        return ApiError(400, f"the body is not valid JSON (at character {at}: "
                             f"{(first.get('ctx') or {}).get('error', 'decode error')})")
    where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
    return ApiError(400, f"{where}: {first.get('msg')}" if where else str(first.get("msg")), where or None)


def make_app(ctx: ServeContext, instance: int | None = None) -> FastAPI:
    """The rack's API (``instance`` None, with every instance's API mounted under ``/instances/{i}``),
    or one instance's own."""
    app = FastAPI(title="rsd-ray", version=ctx.version)
    app.add_middleware(ArrivalStamp)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError):
        return err.response()

    @app.exception_handler(Exception)
    async def unexpected(request: Request, err: Exception):
        return ApiError(500, f"internal error: {type(err).__name__}: {err}").response()

    @app.exception_handler(RequestValidationError)
    async def bad_body(request: Request, err: RequestValidationError):
        return _validation_error(err).response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException):
        message = (f"no route {request.method} {request.url.path}" if err.status_code in (404, 405)
                   else f"the body is not valid JSON ({err.detail})" if err.status_code == 400 else str(err.detail))
        return ApiError(err.status_code, message).response()

    async def serve(request: Request, body, kind: str):
        job = admit(ctx, body, kind, instance, request.scope.get(ARRIVAL))
        try:
            await accepted(job)
        except asyncio.CancelledError:
            job.abort()
            raise
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(_stream(job, include_usage), media_type="text/event-stream", headers={"x-arrival": str(request.scope.get(ARRIVAL))})
        return await _whole(job, request)

    @app.post("/v1/completions")
    async def completions(body: CompletionBody, request: Request):
        return await serve(request, body, "completion")

    @app.post("/v1/chat/completions")
    async def chat(body: ChatBody, request: Request):
        return await serve(request, body, "chat")

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": ctx.model, "object": "model", "created": 0, "owned_by": "rsd-ray",
                                            "root": ctx.model, "parent": None, "max_model_len": ctx.max_model_len}]}

    @app.get("/health")
    async def health():
        healthy = ctx.gateway.healthy(instance)
        return Response(status_code=200 if healthy and not ctx.gateway.closed else 503)

    @app.get("/version")
    async def version():
        return {"version": ctx.version}

    if instance is None:
        @app.get("/v1/instances")
        async def instances():
            """Each instance's own OpenAI base URL (relative) and, with --instance-ports, its own port."""
            return {"object": "list", "data": [{"instance": i, "api_base": f"/instances/{i}/v1",
                                                "port": ctx.instance_ports + i if ctx.instance_ports else None,
                                                "healthy": ctx.gateway.healthy(i)} for i in range(ctx.instances)]}

        @app.get("/metrics")
        async def metrics():
            body, content_type = ctx.metrics.exposition()
            return Response(body, media_type=content_type)

        for i in range(ctx.instances):
            app.mount(f"/instances/{i}", make_app(ctx, i))
    return app
