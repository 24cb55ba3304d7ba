"""Text in performance mode: how prompts are counted, what the synthetic output says, when it ends.

- **Prompt tokens.** With ``--tokenizer tokenizer.json`` (the ``tokenizers`` library) a prompt is
  counted by the model's tokenizer. Without one the documented rule is *one token per
  whitespace-separated word* (at least one), so a client that sends N words asks for N tokens; a
  prompt given as token ids counts its ids. A chat adds ``CHAT_TOKENS_PER_MESSAGE`` per message for
  its role header and ``CHAT_REPLY_TOKENS`` for the assistant's header, as Llama 3's template does.
- **Output text.** No weights run in performance mode: token *i* of request *r* is a word of
  ``WORDS``, chosen by (r + i), and every response's ``system_fingerprint`` says so.
- **Log-probabilities.** Asked for (``logprobs``), each written token gets a synthetic one, a
  function of the token's text and position alone (``logprob``): the written token is always the
  most likely, its alternatives are other words of ``WORDS`` with smaller shares, and the shares
  of a position sum to less than 1 — well-formed and the same for the same text, but not a model's.
- **When it ends.** A model stops at its EOS token; here the EOS is emulated by drawing the output
  length from the run's workload output distribution (seeded), kept within ``[min_tokens,
  max_tokens]``. ``ignore_eos`` (as vLLM's benchmarks send it) generates exactly ``max_tokens``.
"""
from __future__ import annotations

import math
import zlib

import numpy as np

from rsd_ray.workload.synthetic import LengthSampler

SYSTEM_FINGERPRINT = "rsd-ray-performance-mode:synthetic-text"
CHAT_TOKENS_PER_MESSAGE = 4     # <|start_header_id|>role<|end_header_id|>\n\n … <|eot_id|>
CHAT_REPLY_TOKENS = 4           # <|begin_of_text|> and the assistant's header
WORDS = ("the", "rack", "of", "cards", "answers", "in", "virtual", "time", "with", "tokens", "that", "say",
         "nothing", "and", "arrive", "when", "real", "ones", "would")


class Tokens:
    """Counts prompt tokens by the model's tokenizer when one is given, else by the word rule."""

    def __init__(self, tokenizer_path: str | None = None):
        self.tokenizer = None
        if tokenizer_path:
            from tokenizers import Tokenizer          # optional: only with --tokenizer
            self.tokenizer = Tokenizer.from_file(tokenizer_path)

    def count(self, text: str) -> int:
        return max(1, len(self.units(text)))

    def count_chat(self, contents: list[str]) -> int:
        return sum(self.count(c) for c in contents) + CHAT_TOKENS_PER_MESSAGE * len(contents) + CHAT_REPLY_TOKENS

    def units(self, text: str) -> list:
        """The prompt's tokens as this rule reads them: the tokenizer's ids, else the words."""
        return self.tokenizer.encode(text).ids if self.tokenizer is not None else text.split()

    def chat_units(self, messages: list[tuple[str, str]]) -> list:
        """A chat's tokens for prefix hashing: each (role, content) as its role header and its units, then the
        reply's header — the same length ``count_chat`` gives (an empty message aside)."""
        out = []
        for role, content in messages:
            out += [("header", role)] * CHAT_TOKENS_PER_MESSAGE + self.units(content)
        return out + [("reply",)] * CHAT_REPLY_TOKENS


def word(rid: int, i: int) -> str:
    """The synthetic text of output token ``i`` of request ``rid`` (with its leading space)."""
    return " " + WORDS[(rid + i) % len(WORDS)]


def stop_index(rid: int, n: int, stops: tuple[str, ...], pieces: list[str] | None = None) -> int | None:
    """The first of request ``rid``'s ``n`` output tokens whose text (``pieces``, or its word) is a stop word
    (None: none is)."""
    if stops:
        for i in range(n):
            if (pieces[i] if pieces is not None else word(rid, i)).strip() in stops:
                return i
    return None


def _share(text: str, position: int) -> float:
    """A deterministic number in [0, 1) for (text, position)."""
    return zlib.crc32(f"{position}:{text}".encode()) / 2 ** 32


def logprob(text: str, position: int) -> float:
    """The synthetic log-probability of ``text`` written at ``position``: its probability is in [0.5, 0.99)."""
    return math.log(0.5 + 0.49 * _share(text, position))


def top_logprobs(text: str, position: int, k: int) -> list[tuple[str, float]]:
    """The ``k`` most likely tokens at ``position``, most likely first: the written one, then other words
    sharing what it leaves (halving each time)."""
    if k <= 0:
        return []
    lp = logprob(text, position)
    rest, out = 1.0 - math.exp(lp), [(text, lp)]
    start = int(_share(text, position) * len(WORDS))
    for j in range(len(WORDS)):
        if len(out) >= k:
            break
        other = " " + WORDS[(start + j) % len(WORDS)]
        if other.strip() != text.strip():
            rest /= 2
            out.append((other, math.log(rest)))
    return out


class OutputLengths:
    """The emulated EOS: output lengths drawn from the workload's output distribution."""

    def __init__(self, spec, max_model_len: int, seed: int):
        self.sample, self.cap = LengthSampler(spec, np.random.default_rng(seed)), max_model_len - 1

    def __call__(self, max_tokens: int, min_tokens: int, ignore_eos: bool) -> int:
        if ignore_eos:
            return max_tokens
        return max(min_tokens, min(max_tokens, self.sample(), self.cap))
