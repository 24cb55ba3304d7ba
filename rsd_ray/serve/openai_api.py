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
import uuid
from dataclasses import dataclass
from typing import Annotated, Any, Optional, Union

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from rsd_ray.serve.gateway import Gateway, Refused, Ticket
from rsd_ray.serve.text import SYSTEM_FINGERPRINT, OutputLengths, Tokens, word

DEFAULT_COMPLETION_MAX_TOKENS = 16      # OpenAI's and vLLM's default for /v1/completions
DISCONNECT_POLL_S = 0.25
ARRIVAL = "rsd_ray.arrival"          # the ASGI scope key of a request's arrival wall time
ERROR_TYPES = {400: "BadRequestError", 404: "NotFoundError", 429: "RateLimitError", 500: "InternalServerError",
               503: "ServiceUnavailableError"}

Finite = Annotated[float, Field(allow_inf_nan=False)]


@dataclass
class ServeContext:
    """What every endpoint shares."""
    gateway: Gateway
    model: str
    max_model_len: int
    instances: int
    tokens: Tokens
    lengths: OutputLengths
    version: str
    metrics: Any = None              # rsd_ray.serve.metrics.RackMetrics


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param = status, message, param

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": ERROR_TYPES[self.status],
                          "param": self.param, "code": self.status}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status)


# --- request bodies -----------------------------------------------------------------------------------
class StreamOptions(BaseModel):
    include_usage: bool = False
    continuous_usage_stats: bool = False


class Sampling(BaseModel):
    """The parameters both endpoints take; unknown fields are accepted and ignored, as vLLM does."""
    model_config = ConfigDict(extra="allow")
    model: str
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    max_tokens: Optional[int] = Field(None, ge=1)
    stop: Union[str, list[str], None] = None
    n: int = Field(1, ge=1)
    temperature: Optional[Finite] = Field(None, ge=0)
    top_p: Optional[Finite] = Field(None, gt=0, le=1)
    seed: Optional[int] = None
    ignore_eos: bool = False
    min_tokens: int = Field(0, ge=0)
    user: Optional[str] = None


class CompletionBody(Sampling):
    prompt: Union[str, list[int], list[str], list[list[int]]]


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: Union[str, list[dict], None] = None


class ChatBody(Sampling):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1)


# --- the work of one request ----------------------------------------------------------------------------
@dataclass
class Job:
    """One accepted request: what the client asked for and what the rack was asked to generate."""
    ctx: ServeContext
    ticket: Ticket
    kind: str                     # completion | chat
    prompt_len: int
    max_tokens: int
    id: str
    created: int
    generated: int = 0            # tokens the rack generated so far (a stop word's included, as vLLM counts)

    async def tokens(self):
        """Yields ("token", i) at each token's paced wall time, then ("end", finish_reason); raises ApiError
        when the rack ends the request with an error. The rack ends a request at its stop word (the gateway
        told it where); that token is generated but not sent, as OpenAI leaves stop sequences out."""
        pacer, ticket = self.ctx.gateway.pacer, self.ticket
        while True:
            event = await ticket.events.get()
            if event[0] == "tokens":
                for t in event[1]:
                    delay = pacer.wall(t) - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    self.generated += 1
                    if self.generated - 1 != ticket.stop_at:
                        yield "token", self.generated - 1
            elif event[0] == "end":
                yield "end", ticket.finish_reason(self.generated)
                return
            elif event[0] in ("error", "refused"):
                raise ApiError(event[1], event[2])

    def usage(self) -> dict:
        return {"prompt_tokens": self.prompt_len, "completion_tokens": self.generated,
                "total_tokens": self.prompt_len + self.generated}

    def chunk(self, choices: list, usage: dict | None = None) -> str:
        body = {"id": self.id, "object": "chat.completion.chunk" if self.kind == "chat" else "text_completion",
                "created": self.created, "model": self.ctx.model, "system_fingerprint": SYSTEM_FINGERPRINT,
                "choices": choices}
        if usage is not None:
            body["usage"] = usage
        return f"data: {json.dumps(body)}\n\n"

    def choice(self, text: str | None, finish: str | None, first: bool = False) -> dict:
        if self.kind == "chat":
            delta = ({"role": "assistant", "content": ""} if first else {} if text is None else {"content": text})
            return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}


def _prompt_tokens(ctx: ServeContext, body) -> int:
    if isinstance(body, ChatBody):
        return ctx.tokens.count_chat([_content(m) for m in body.messages])
    prompt = body.prompt
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], (str, list)):
        if len(prompt) != 1:
            raise ApiError(400, "one prompt per request (batched prompts are not supported)", "prompt")
        prompt = prompt[0]
    if isinstance(prompt, str):
        return ctx.tokens.count(prompt)
    if not prompt:
        raise ApiError(400, "the prompt is empty", "prompt")
    return len(prompt)


def _content(m: Message) -> str:
    if isinstance(m.content, list):
        return " ".join(str(part.get("text", "")) for part in m.content)
    return m.content or ""


class ArrivalStamp:
    """ASGI middleware: the wall time a request reached the server, before its body is read and checked, so the
    rack's TTFT starts when the client's does (vLLM's starts after parsing)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        scope.setdefault(ARRIVAL, time.monotonic())
        await self.app(scope, receive, send)


def _admit(ctx: ServeContext, body, kind: str, instance: int | None, arrival_wall: float | None = None) -> Job:
    """Check the request as vLLM would, then hand it to the gateway."""
    if body.model != ctx.model:
        raise ApiError(404, f"The model `{body.model}` does not exist.", "model")
    if body.n != 1:
        raise ApiError(400, "only n=1 is supported", "n")
    prompt_len = _prompt_tokens(ctx, body)
    limit = ctx.max_model_len
    if prompt_len >= limit:
        raise ApiError(400, f"This model's maximum context length is {limit} tokens. However, your prompt has "
                            f"{prompt_len} tokens. Please reduce the length of the prompt.", "prompt")
    asked = body.max_completion_tokens or body.max_tokens if kind == "chat" else body.max_tokens
    max_tokens = asked or (DEFAULT_COMPLETION_MAX_TOKENS if kind == "completion" else limit - prompt_len)
    if prompt_len + max_tokens > limit:
        raise ApiError(400, f"This model's maximum context length is {limit} tokens. However, you requested "
                            f"{prompt_len + max_tokens} tokens ({prompt_len} in the messages, {max_tokens} in the "
                            "completion). Please reduce the length of the messages or completion.", "max_tokens")
    if body.min_tokens > max_tokens:
        raise ApiError(400, f"min_tokens ({body.min_tokens}) must be at most max_tokens ({max_tokens})", "min_tokens")
    if instance is not None and not 0 <= instance < ctx.instances:
        raise ApiError(404, f"no instance {instance}: this rack has {ctx.instances}", "instance")
    stops = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
    out_len = ctx.lengths(max_tokens, body.min_tokens, body.ignore_eos)
    try:
        ticket = ctx.gateway.submit(prompt_len, out_len, -1 if instance is None else instance, max_tokens,
                                    arrival_wall, tuple(s.strip() for s in stops if s.strip()))
    except Refused as err:
        raise ApiError(err.status, err.message) from None
    prefix = "chatcmpl" if kind == "chat" else "cmpl"
    return Job(ctx, ticket, kind, prompt_len, max_tokens, f"{prefix}-{uuid.uuid4().hex}", int(time.time()))


async def _accepted(job: Job) -> None:
    """Wait for the router's answer: accepted, or refused (raised as ApiError, before any byte is sent)."""
    event = await job.ticket.events.get()
    if event[0] != "accepted":
        raise ApiError(event[1], event[2])


async def _stream(job: Job, body):
    gateway, done = job.ctx.gateway, False
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    try:
        if job.kind == "chat":
            yield job.chunk([job.choice(None, None, first=True)])
        async for kind, value in job.tokens():
            if kind == "token":
                yield job.chunk([job.choice(word(job.ticket.rid, value), None)])
            else:
                yield job.chunk([job.choice(None if job.kind == "chat" else "", value)])
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
            gateway.abort(job.ticket)       # the client went away: free its request


async def _whole(job: Job, request: Request) -> JSONResponse:
    async def collect():
        sent, finish = [], None
        async for kind, value in job.tokens():
            if kind == "token":
                sent.append(value)
            else:
                finish = value
        return sent, finish

    task = asyncio.ensure_future(collect())
    while not task.done():
        await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
        if not task.done() and await request.is_disconnected():
            task.cancel()
            job.ctx.gateway.abort(job.ticket)
            return ApiError(400, "the client disconnected").response()
    sent, finish = task.result()
    text = "".join(word(job.ticket.rid, i) for i in sent)
    if job.kind == "chat":
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                  "finish_reason": finish}
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
    return JSONResponse({"id": job.id, "object": "chat.completion" if job.kind == "chat" else "text_completion",
                         "created": job.created, "model": job.ctx.model, "system_fingerprint": SYSTEM_FINGERPRINT,
                         "choices": [choice], "usage": job.usage()})


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
        first = err.errors()[0] if err.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        return ApiError(400, f"{where}: {first.get('msg')}" if where else str(first.get("msg")), where or None).response()

    async def serve(request: Request, body, kind: str):
        job = _admit(ctx, body, kind, instance, request.scope.get(ARRIVAL))
        try:
            await _accepted(job)
        except asyncio.CancelledError:
            ctx.gateway.abort(job.ticket)
            raise
        if body.stream:
            return StreamingResponse(_stream(job, body), media_type="text/event-stream")
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
            """Each instance's own OpenAI base URL (relative), for an external router."""
            return {"object": "list", "data": [{"instance": i, "api_base": f"/instances/{i}/v1",
                                                "healthy": ctx.gateway.healthy(i)} for i in range(ctx.instances)]}

        @app.get("/metrics")
        async def metrics():
            body, content_type = ctx.metrics.exposition()
            return Response(body, media_type=content_type)

        for i in range(ctx.instances):
            app.mount(f"/instances/{i}", make_app(ctx, i))
    return app
