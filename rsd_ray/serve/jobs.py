"""One request's way through the gateway: checked as vLLM would, admitted, then its tokens at their paced times.

A request is a ``Job`` of one or more ``Choice``s — one per prompt of a prompt list, times ``n`` —
each its own request to the rack (its own ticket), as vLLM runs each as its own sequence. Shared by
the HTTP API (``openai_api``) and the gRPC API (``grpc_api``).
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
from rsd_ray.serve.protocol import ApiError, ChatBody, Message, refused_field
from rsd_ray.serve.text import SYSTEM_FINGERPRINT, WORDS, OutputLengths, Tokens, logprob, top_logprobs, word

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
    instance_ports: int | None = None    # instance i also listens on instance_ports + i
    by_priority: bool = False        # engine.scheduling_policy: priority (a request's ``priority`` is honoured)

    @property
    def fingerprint(self) -> str:
        return self.writer.fingerprint if self.writer is not None else SYSTEM_FINGERPRINT


@dataclass
class Prompt:
    """One prompt of a request, as the rack counts it and as ``echo`` writes it back."""
    length: int
    units: list                          # its tokens: the tokenizer's ids or the word rule's words
    text: str                            # what echo writes back
    unit_texts: list[str]                # each token's text (echo with logprobs)
    ids: list[int] | None = None         # functional mode: the checkpoint tokenizer's ids


@dataclass
class Choice:
    """One sequence of a request: its ticket at the gateway and what it has sent so far."""
    index: int
    ticket: Ticket
    prompt: Prompt
    counts_prompt: bool                  # the first choice of its prompt (usage counts each prompt once)
    pieces: list[str] | None = None      # functional mode: each token's text (else performance mode's words)
    generated: int = 0                   # tokens the rack generated so far (a stop word's included, as vLLM counts)
    finish: str | None = None

    def piece(self, i: int) -> str:
        return self.pieces[i] if self.pieces is not None else word(self.ticket.rid, i)

    async def tokens(self, pacer):
        """Yields ("token", i, due wall time) at each token's paced wall time, then ("end", finish_reason, due);
        raises ApiError when the rack ends the request with an error. The rack ends a request at its stop word
        (the gateway told it where); that token is generated and, unless include_stop_str_in_output, not sent."""
        ticket, due = self.ticket, time.monotonic()
        while True:
            event = await ticket.events.get()
            if event[0] == "tokens":
                for t in event[1]:
                    due = pacer.wall(t)
                    delay = due - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    self.generated += 1
                    if self.generated - 1 != ticket.stop_at or ticket.send_stop:
                        yield "token", self.generated - 1, due
            elif event[0] == "end":
                self.finish = ticket.finish_reason(self.generated)
                yield "end", self.finish, due
                return
            elif event[0] in ("error", "refused"):
                raise ApiError(event[1], event[2])


@dataclass
class Job:
    """One accepted request: what the client asked for and what the rack was asked to generate."""
    ctx: ServeContext
    kind: str                     # completion | chat
    choices: list[Choice]
    max_tokens: int
    id: str
    created: int
    echo: bool = False
    logprobs: int | None = None   # how many alternatives per token (0: the token's own only); None: none
    n: int = 1

    @property
    def tickets(self) -> list[Ticket]:
        return [c.ticket for c in self.choices]

    async def events(self):
        """Every choice's ("token" | "end", value, due) as (choice, kind, value, due), in due order across
        choices (each choice paced by its own tokens' times)."""
        pacer = self.ctx.gateway.pacer
        if len(self.choices) == 1:
            async for kind, value, due in self.choices[0].tokens(pacer):
                yield self.choices[0], kind, value, due
            return
        queue: asyncio.Queue = asyncio.Queue()

        async def pump(choice):
            try:
                async for kind, value, due in choice.tokens(pacer):
                    await queue.put((choice, kind, value, due))
            except ApiError as err:
                await queue.put((choice, "error", err, 0.0))
        tasks = [asyncio.ensure_future(pump(c)) for c in self.choices]
        try:
            ended = 0
            while ended < len(self.choices):
                choice, kind, value, due = await queue.get()
                if kind == "error":
                    raise value
                ended += kind == "end"
                yield choice, kind, value, due
        finally:
            for task in tasks:
                task.cancel()

    def abort(self) -> None:
        for ticket in self.tickets:
            self.ctx.gateway.abort(ticket)

    def usage(self) -> dict:
        prompt = sum(c.prompt.length for c in self.choices if c.counts_prompt)
        generated = sum(c.generated for c in self.choices)
        return {"prompt_tokens": prompt, "completion_tokens": generated, "total_tokens": prompt + generated}

    def chunk(self, choices: list, usage: dict | None = None) -> str:
        body = {"id": self.id, "object": "chat.completion.chunk" if self.kind == "chat" else "text_completion",
                "created": self.created, "model": self.ctx.model, "system_fingerprint": self.ctx.fingerprint,
                "choices": choices}
        if usage is not None:
            body["usage"] = usage
        return f"data: {json.dumps(body)}\n\n"

    # --- the pieces of a response --------------------------------------------------------------------
    def echoed(self, choice: Choice) -> str:
        return choice.prompt.text if self.echo else ""

    def prompt_pieces(self, choice: Choice) -> list[tuple[str, int | None]]:
        """An echoed prompt's tokens as (text, position): the first has no log-probability (None), the
        others negative positions, apart from the output's."""
        return [(t, None if k == 0 else -k) for k, t in enumerate(choice.prompt.unit_texts)] if self.echo else []

    def text_logprobs(self, pieces: list[tuple[str, int | None]]) -> dict | None:
        """A completion's ``logprobs`` for (text, position) pieces, in OpenAI's legacy shape."""
        if self.logprobs is None:
            return None
        out, offset = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}, 0
        for text, position in pieces:
            out["tokens"].append(text)
            out["text_offset"].append(offset)
            offset += len(text)
            known = position is not None
            out["token_logprobs"].append(logprob(text, position) if known else None)
            out["top_logprobs"].append(dict(top_logprobs(text, position, max(1, self.logprobs))) if known else None)
        return out

    def chat_logprobs(self, pieces: list[tuple[str, int]]) -> dict | None:
        """A chat's ``logprobs``: ``content`` with each token, its log-probability, bytes and alternatives."""
        if self.logprobs is None:
            return None

        def entry(text, lp):
            return {"token": text, "logprob": lp, "bytes": list(text.encode())}
        return {"content": [{**entry(text, logprob(text, position)),
                             "top_logprobs": [entry(t, lp) for t, lp in top_logprobs(text, position, self.logprobs)]}
                            for text, position in pieces]}

    def delta(self, choice: Choice, i: int | None, finish: str | None, first: bool = False) -> dict:
        """A streamed choice: token ``i`` (None: none) and, at the end, the finish reason; ``first``: the
        chunk before any token (a chat's role, an echoed prompt)."""
        pieces = [] if i is None else [(choice.piece(i), i)]
        if self.kind == "chat":
            delta = ({"role": "assistant", "content": self.echoed(choice)} if first
                     else {"content": pieces[0][0]} if pieces else {})
            return {"index": choice.index, "delta": delta, "logprobs": self.chat_logprobs(pieces) if pieces else None,
                    "finish_reason": finish}
        if first:
            pieces = self.prompt_pieces(choice)
        text = self.echoed(choice) if first else "".join(p for p, _ in pieces)
        return {"index": choice.index, "text": text, "logprobs": self.text_logprobs(pieces) if pieces else None,
                "finish_reason": finish}

    def whole(self, choice: Choice, sent: list[int]) -> dict:
        """A choice of a non-streamed response: every token it sent."""
        pieces = [(choice.piece(i), i) for i in sent]
        text = self.echoed(choice) + "".join(p for p, _ in pieces)
        if self.kind == "chat":
            return {"index": choice.index, "message": {"role": "assistant", "content": text},
                    "logprobs": self.chat_logprobs(pieces), "finish_reason": choice.finish}
        return {"index": choice.index, "text": text, "logprobs": self.text_logprobs(self.prompt_pieces(choice) + pieces),
                "finish_reason": choice.finish}


# --- reading the prompt ---------------------------------------------------------------------------------
def _content(m: Message) -> str:
    if isinstance(m.content, list):
        return " ".join(str(part.get("text", "")) for part in m.content)
    return m.content or ""


def _prompts(body) -> list:
    """A completion's prompts: one text or token-id list, or a list of them (a batch, as vLLM takes it)."""
    prompt = body.prompt
    if prompt is None:
        raise ApiError(400, "a completion needs a prompt", "prompt")
    batch = prompt if isinstance(prompt, list) and prompt and isinstance(prompt[0], (str, list)) else [prompt]
    for p in batch:
        if not isinstance(p, str) and not p:
            raise ApiError(400, "the prompt is empty", "prompt")
    return batch


def _unit_text(ctx: ServeContext, unit) -> str:
    """One prompt token's text: a word as written, an id through the tokenizer (else a word of ``WORDS``)."""
    if isinstance(unit, str):
        return unit
    tokenizer = ctx.writer.tokenizer if ctx.writer is not None else ctx.tokens.tokenizer
    if tokenizer is not None:
        return tokenizer.decode([unit])
    return " " + WORDS[unit % len(WORDS)]


def _read_prompt(ctx: ServeContext, body, prompt) -> Prompt:
    """One prompt as the rack counts it: the checkpoint's tokenizer (functional mode), else ``Tokens``."""
    if isinstance(body, ChatBody):
        messages = [(m.role, _content(m)) for m in body.messages]
        if ctx.writer is not None:
            ids = ctx.writer.chat_ids(messages)
            return Prompt(len(ids), ids, "", [], ids)
        units = ctx.tokens.chat_units(messages)
        last = body.messages[-1]
        echo = _content(last) if last.role == "assistant" else ""        # vLLM echoes a trailing assistant turn
        return Prompt(ctx.tokens.count_chat([c for _, c in messages]), units, echo, [])
    if ctx.writer is not None:
        ids = ctx.writer.prompt_ids(prompt)
        vocab = ctx.writer.model.config.vocab_size
        if not ids or not all(0 <= i < vocab for i in ids):
            raise ApiError(400, f"token ids must be in 0..{vocab - 1}", "prompt")
        return Prompt(len(ids), ids, ctx.writer.tokenizer.decode(ids), [ctx.writer.tokenizer.decode([i]) for i in ids],
                      ids)
    if isinstance(prompt, str):
        units = ctx.tokens.units(prompt)
        texts = [t if k == 0 or not isinstance(u, str) else " " + t         # words: as the prompt spaces them
                 for k, (u, t) in enumerate((u, _unit_text(ctx, u)) for u in units)] or [prompt]
        return Prompt(ctx.tokens.count(prompt), units, prompt, texts)
    texts = [_unit_text(ctx, u) for u in prompt]
    return Prompt(len(prompt), list(prompt), "".join(texts), texts)


def _check(ctx: ServeContext, body, kind: str, instance: int | None, prompts: list[Prompt]) -> int:
    """vLLM's checks of a request that can be read; returns its max_tokens."""
    if body.model is not None and body.model != ctx.model:
        raise ApiError(404, f"The model `{body.model}` does not exist.", "model")
    refused = refused_field(body)
    if refused is not None:
        raise refused
    if body.priority and not ctx.by_priority:
        raise ApiError(400, f"Got priority {body.priority} but priority scheduling is not enabled: serve with "
                            "--scheduling-policy priority", "priority")
    if ctx.writer is not None and body.logprobs is not None and body.logprobs is not False:
        raise ApiError(400, "logprobs are not computed in functional mode", "logprobs")
    if kind == "chat" and body.top_logprobs and not body.logprobs:
        raise ApiError(400, "top_logprobs needs logprobs: true", "top_logprobs")
    if instance is not None and not 0 <= instance < ctx.instances:
        raise ApiError(404, f"no instance {instance}: this rack has {ctx.instances}", "instance")
    limit = ctx.max_model_len
    asked = (body.max_completion_tokens or body.max_tokens) if kind == "chat" else body.max_tokens
    longest = max(p.length for p in prompts)
    if longest >= limit:
        raise ApiError(400, f"This model's maximum context length is {limit} tokens. However, your prompt has "
                            f"{longest} tokens. Please reduce the length of the prompt.", "prompt")
    max_tokens = asked or (DEFAULT_COMPLETION_MAX_TOKENS if kind == "completion" else limit - longest)
    if longest + max_tokens > limit:
        raise ApiError(400, f"This model's maximum context length is {limit} tokens. However, you requested "
                            f"{longest + max_tokens} tokens ({longest} in the messages, {max_tokens} in the "
                            "completion). Please reduce the length of the messages or completion.", "max_tokens")
    if body.min_tokens > max_tokens:
        raise ApiError(400, f"min_tokens ({body.min_tokens}) must be at most max_tokens ({max_tokens})", "min_tokens")
    return max_tokens


def admit(ctx: ServeContext, body, kind: str, instance: int | None, arrival_wall: float | None = None) -> Job:
    """Check the request as vLLM would, then hand each of its sequences to the gateway (all or none)."""
    prompts = [_read_prompt(ctx, body, None)] if kind == "chat" else [_read_prompt(ctx, body, p)
                                                                      for p in _prompts(body)]
    max_tokens = _check(ctx, body, kind, instance, prompts)
    stops = tuple(s.strip() for s in ((body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ()))
                  if s.strip())
    choices: list[Choice] = []
    try:
        for p, prompt in enumerate(prompts):
            for k in range(body.n):
                pieces = None if prompt.ids is None else ctx.writer.write(
                    prompt.ids, max_tokens, body.min_tokens, body.ignore_eos, body.temperature or 0.0,
                    (body.seed or 0) + k)
                out_len = (len(pieces) if pieces is not None
                           else ctx.lengths(max_tokens, body.min_tokens, body.ignore_eos))
                hashes = chain_hashes(prompt.units, ctx.hash_block_tokens) if ctx.hash_block_tokens else ()
                ticket = ctx.gateway.submit(prompt.length, out_len, -1 if instance is None else instance, max_tokens,
                                            arrival_wall, stops, pieces, body.user or "", hashes,
                                            body.include_stop_str_in_output, body.n, k == 0,
                                            body.priority if ctx.by_priority else None)
                choices.append(Choice(p * body.n + k, ticket, prompt, k == 0, pieces))
    except Refused as err:
        for c in choices:
            ctx.gateway.abort(c.ticket)
        raise ApiError(err.status, err.message) from None
    if kind == "chat":
        logprobs = (body.top_logprobs or 0) if body.logprobs else None
    else:
        logprobs = body.logprobs
    prefix = "chatcmpl" if kind == "chat" else "cmpl"
    return Job(ctx, kind, choices, max_tokens, f"{prefix}-{uuid.uuid4().hex}", int(time.time()), echo=body.echo,
               logprobs=logprobs, n=body.n)


async def accepted(job: Job) -> None:
    """Wait for the router's answer for every sequence: accepted, or refused (raised as ApiError, before any
    byte is sent; the request's other sequences are aborted)."""
    for ticket in job.tickets:
        event = await ticket.events.get()
        if event[0] != "accepted":
            job.abort()
            raise ApiError(event[1], event[2])
