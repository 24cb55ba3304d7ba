"""One request's way through the gateway: checked as vLLM would, admitted, then its tokens at their paced times.

Shared by the HTTP API (``openai_api``) and the gRPC API (``grpc_api``).
"""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from rsd_ray.engine.prefix_cache import chain_hashes
from rsd_ray.serve.gateway import Gateway, Refused, Ticket
from rsd_ray.serve.protocol import ApiError, ChatBody, Message
from rsd_ray.serve.text import SYSTEM_FINGERPRINT, OutputLengths, Tokens, word

DEFAULT_COMPLETION_MAX_TOKENS = 16      # OpenAI's and vLLM's default for /v1/completions


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
    writer: Any = None               # rsd_ray.functional.writer.FunctionalWriter: real text (--model DIR)
    hash_block_tokens: int = 0       # prompts' chained block hashes, for prefix caching and routing (0: none)

    @property
    def fingerprint(self) -> str:
        return self.writer.fingerprint if self.writer is not None else SYSTEM_FINGERPRINT


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
    pieces: list[str] | None = None   # functional mode: each token's text (else performance mode's words)

    def piece(self, i: int) -> str:
        return self.pieces[i] if self.pieces is not None else word(self.ticket.rid, i)

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
                "created": self.created, "model": self.ctx.model, "system_fingerprint": self.ctx.fingerprint,
                "choices": choices}
        if usage is not None:
            body["usage"] = usage
        return f"data: {json.dumps(body)}\n\n"

    def choice(self, text: str | None, finish: str | None, first: bool = False) -> dict:
        if self.kind == "chat":
            delta = ({"role": "assistant", "content": ""} if first else {} if text is None else {"content": text})
            return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}


def _prompt(body):
    """A completion's one prompt: text or token ids."""
    prompt = body.prompt
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], (str, list)):
        if len(prompt) != 1:
            raise ApiError(400, "one prompt per request (batched prompts are not supported)", "prompt")
        prompt = prompt[0]
    if not isinstance(prompt, str) and not prompt:
        raise ApiError(400, "the prompt is empty", "prompt")
    return prompt


def _prompt_tokens(ctx: ServeContext, body) -> int:
    if isinstance(body, ChatBody):
        return ctx.tokens.count_chat([_content(m) for m in body.messages])
    prompt = _prompt(body)
    return ctx.tokens.count(prompt) if isinstance(prompt, str) else len(prompt)


def _prompt_ids(ctx: ServeContext, body) -> list[int]:
    """Functional mode: the prompt as the checkpoint's tokenizer (and a plain chat template) reads it."""
    if isinstance(body, ChatBody):
        return ctx.writer.chat_ids([(m.role, _content(m)) for m in body.messages])
    ids = ctx.writer.prompt_ids(_prompt(body))
    vocab = ctx.writer.model.config.vocab_size
    if not ids or not all(0 <= i < vocab for i in ids):
        raise ApiError(400, f"token ids must be in 0..{vocab - 1}", "prompt")
    return ids


def _prompt_hashes(ctx: ServeContext, body, ids: list[int] | None) -> tuple[int, ...]:
    """The prompt's chained block hashes, over the tokens it was counted by."""
    if ids is not None:
        units = ids
    elif isinstance(body, ChatBody):
        units = ctx.tokens.chat_units([(m.role, _content(m)) for m in body.messages])
    else:
        prompt = _prompt(body)
        units = ctx.tokens.units(prompt) if isinstance(prompt, str) else prompt
    return chain_hashes(units, ctx.hash_block_tokens)


def _content(m: Message) -> str:
    if isinstance(m.content, list):
        return " ".join(str(part.get("text", "")) for part in m.content)
    return m.content or ""


def admit(ctx: ServeContext, body, kind: str, instance: int | None, arrival_wall: float | None = None) -> Job:
    """Check the request as vLLM would, then hand it to the gateway."""
    if body.model != ctx.model:
        raise ApiError(404, f"The model `{body.model}` does not exist.", "model")
    if body.n != 1:
        raise ApiError(400, "only n=1 is supported", "n")
    ids = _prompt_ids(ctx, body) if ctx.writer is not None else None
    prompt_len = len(ids) if ids is not None else _prompt_tokens(ctx, body)
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
    pieces = None if ids is None else ctx.writer.write(ids, max_tokens, body.min_tokens, body.ignore_eos,
                                                       body.temperature or 0.0, body.seed or 0)
    out_len = len(pieces) if pieces is not None else ctx.lengths(max_tokens, body.min_tokens, body.ignore_eos)
    try:
        ticket = ctx.gateway.submit(prompt_len, out_len, -1 if instance is None else instance, max_tokens,
                                    arrival_wall, tuple(s.strip() for s in stops if s.strip()), pieces, body.user or "",
                                    _prompt_hashes(ctx, body, ids) if ctx.hash_block_tokens else ())
    except Refused as err:
        raise ApiError(err.status, err.message) from None
    prefix = "chatcmpl" if kind == "chat" else "cmpl"
    return Job(ctx, ticket, kind, prompt_len, max_tokens, f"{prefix}-{uuid.uuid4().hex}", int(time.time()),
               pieces=pieces)


async def accepted(job: Job) -> None:
    """Wait for the router's answer: accepted, or refused (raised as ApiError, before any byte is sent)."""
    event = await job.ticket.events.get()
    if event[0] != "accepted":
        raise ApiError(event[1], event[2])
