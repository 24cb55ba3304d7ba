"""Streaming readers of the public LLM trace formats: one ``TraceRow`` per request, never the whole file.

- ``azure``    CSV ``TIMESTAMP, ContextTokens, GeneratedTokens`` (Azure LLM inference traces 2023/2024;
               timestamps as ``2023-11-16 18:15:46.6805900`` or seconds)
- ``mooncake`` JSONL ``{"timestamp": ms, "input_length", "output_length", "hash_ids": [...]}`` (512-token
               blocks)
- ``burstgpt`` CSV ``Timestamp, Model, Request tokens, Response tokens, Total tokens, Log Type``
- ``sharegpt`` a JSON array of ``{"conversations": [{"from": "human", "value"}, {"from": "gpt", ...}]}``:
               the first human turn is the prompt and the next gpt turn the answer, both counted at
               ``CHARS_PER_TOKEN``; every later human → gpt exchange is kept in ``later`` (its prompt is the
               whole conversation so far). It has no times, so ``TraceSource`` gives it Poisson arrivals.

Times are seconds from the trace's first row. Every format may give a request's scheduling priority (an
integer, lower is sooner, as vLLM's): a ``priority`` column (CSV), key (Mooncake) or conversation key
(ShareGPT). A request with one is in the service class ``priority N``, as a served request that
names its priority is. A malformed row is a ``ConfigError`` naming the file, the line and what was expected.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Iterator

from rsd_ray.config import ConfigError

CHARS_PER_TOKEN = 4.0     # OpenAI's rule of thumb for English text (ShareGPT has text, not token counts)
FORMATS = ("azure", "mooncake", "burstgpt", "sharegpt")


@dataclass(frozen=True)
class TraceRow:
    t: float                         # seconds from the first row (ShareGPT: 0; arrivals are drawn)
    prompt: int
    output: int
    hash_ids: tuple[int, ...] = ()   # Mooncake: the prompt's 512-token blocks, chained
    line: int = 0
    session: str = ""                # ShareGPT: the conversation's id
    later: tuple[tuple[int, int], ...] = ()   # ShareGPT: the (prompt, output) of each later exchange
    priority: int | None = None      # its scheduling priority, when the trace gives one (lower is sooner)


def _bad(path, line: int, row, expected: str):
    return ConfigError(str(path), f"line {line}", row, expected)


def _count(path, line, row, value, name: str, lo: int = 0) -> int:
    try:
        n = int(float(value))
    except (TypeError, ValueError):
        raise _bad(path, line, row, f"{name} must be a whole number of tokens") from None
    if n < lo or n != float(value):
        raise _bad(path, line, row, f"{name} must be a whole number ≥ {lo}")
    return n


def _priority(path, line, row, value) -> int | None:
    """A row's priority: a whole number (None when the trace gives none)."""
    if value in (None, ""):
        return None
    try:
        n = int(float(value))
    except (TypeError, ValueError):
        raise _bad(path, line, row, "priority must be a whole number (lower is sooner)") from None
    if n != float(value):
        raise _bad(path, line, row, "priority must be a whole number (lower is sooner)")
    return n


def _seconds(path, line, row, value) -> float:
    """A timestamp as seconds: a number, or a date-time (fractions beyond microseconds dropped)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        pass
    try:
        text = str(value).strip()
        if "." in text:
            head, frac = text.split(".", 1)
            text = f"{head}.{frac[:6]}"
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise _bad(path, line, row, "the timestamp must be seconds or a date-time like "
                                    "2023-11-16 18:15:46.680590") from None


def _csv(path, columns: tuple[str, ...]) -> Iterator[tuple[int, dict]]:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh, skipinitialspace=True)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in columns if c not in header]
        if missing:
            raise _bad(path, 1, header, f"a header with {', '.join(columns)}; missing {', '.join(missing)}")
        reader.fieldnames = header
        for row in reader:
            if None in row or any(row.get(c) in (None, "") for c in columns):
                raise _bad(path, reader.line_num, row, f"every row needs {', '.join(columns)}")
            yield reader.line_num, row


def _relative(rows: Iterator[TraceRow], path) -> Iterator[TraceRow]:
    """Times from the first row, which must not go backwards."""
    first = last = None
    for r in rows:
        if first is None:
            first = last = r.t
        if r.t < last:
            raise _bad(path, r.line, r.t, "rows must be in time order")
        last = r.t
        yield TraceRow(r.t - first, r.prompt, r.output, r.hash_ids, r.line, priority=r.priority)


def azure(path) -> Iterator[TraceRow]:
    cols = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
    yield from _relative((TraceRow(_seconds(path, n, row, row["TIMESTAMP"]),
                                  _count(path, n, row, row["ContextTokens"], "ContextTokens", 1),
                                  _count(path, n, row, row["GeneratedTokens"], "GeneratedTokens"), (), n,
                                  priority=_priority(path, n, row, row.get("priority")))
                         for n, row in _csv(path, cols)), path)


def burstgpt(path, model: str = "") -> Iterator[TraceRow]:
    cols = ("Timestamp", "Model", "Request tokens", "Response tokens")
    yield from _relative((TraceRow(_seconds(path, n, row, row["Timestamp"]),
                                  _count(path, n, row, row["Request tokens"], "Request tokens", 1),
                                  _count(path, n, row, row["Response tokens"], "Response tokens"), (), n,
                                  priority=_priority(path, n, row, row.get("priority")))
                         for n, row in _csv(path, cols) if not model or row["Model"] == model), path)


def mooncake(path) -> Iterator[TraceRow]:
    def rows():
        with open(path) as fh:
            for n, text in enumerate(fh, 1):
                if not text.strip():
                    continue
                try:
                    row = json.loads(text)
                except json.JSONDecodeError:
                    raise _bad(path, n, text.strip()[:80], "one JSON object per line") from None
                if not isinstance(row, dict) or not {"timestamp", "input_length", "output_length"} <= set(row):
                    raise _bad(path, n, row, "an object with timestamp (ms), input_length, output_length")
                ids = row.get("hash_ids", [])
                if not isinstance(ids, list) or not all(isinstance(h, int) for h in ids):
                    raise _bad(path, n, ids, "hash_ids must be a list of integers")
                yield TraceRow(_seconds(path, n, row, row["timestamp"]) / 1000.0,
                               _count(path, n, row, row["input_length"], "input_length", 1),
                               _count(path, n, row, row["output_length"], "output_length"), tuple(ids), n,
                               priority=_priority(path, n, row, row.get("priority")))
    yield from _relative(rows(), path)


def _json_array(path, chunk: int = 1 << 16) -> Iterator[tuple[int, object]]:
    """The items of a top-level JSON array, decoded one by one from chunks (with the line each starts on)."""
    decoder, buf, pos, line, started = json.JSONDecoder(), "", 0, 1, False
    with open(path) as fh:
        while True:
            more = fh.read(chunk)
            buf = buf[pos:] + more
            pos = 0
            while True:
                while pos < len(buf) and buf[pos] in " \t\r\n,":
                    line += buf[pos] == "\n"
                    pos += 1
                if pos >= len(buf):
                    break
                if not started:
                    if buf[pos] != "[":
                        raise _bad(path, line, buf[pos:pos + 40], "a JSON array of conversations")
                    started, pos = True, pos + 1
                    continue
                if buf[pos] == "]":
                    return
                try:
                    item, end = decoder.raw_decode(buf, pos)
                except json.JSONDecodeError:
                    if not more:
                        raise _bad(path, line, buf[pos:pos + 40], "a JSON object") from None
                    break                                  # the item continues in the next chunk
                yield line, item
                line += buf.count("\n", pos, end)
                pos = end
            if not more:
                raise _bad(path, line, "", "the array's closing ]")


def sharegpt(path) -> Iterator[TraceRow]:
    for n, item in _json_array(path):
        turns = item.get("conversations") if isinstance(item, dict) else None
        if not isinstance(turns, list):
            raise _bad(path, n, str(item)[:80], "an object with a conversations list")
        texts = [(t.get("from"), str(t.get("value", ""))) for t in turns if isinstance(t, dict)]
        exchanges = []                                     # (prompt, output) in characters
        for k, ((fq, q), (fa, a)) in enumerate(zip(texts, texts[1:])):
            if fq == "human" and fa == "gpt":               # a later prompt is the whole conversation so far
                exchanges.append((len(q) + (sum(len(t) for _, t in texts[:k]) if exchanges else 0), len(a)))
        if not exchanges:
            continue                                       # no human → gpt exchange: nothing to replay
        (q, a), *later = [(max(1, round(p / CHARS_PER_TOKEN)), max(1, round(o / CHARS_PER_TOKEN)))
                          for p, o in exchanges]
        yield TraceRow(0.0, q, a, (), n, str(item.get("id", "")), tuple(later),
                       _priority(path, n, str(item)[:80], item.get("priority")))


def read(fmt: str, path, model: str = "") -> Iterator[TraceRow]:
    """The rows of a trace file of format ``fmt``."""
    if fmt == "burstgpt":
        return burstgpt(path, model)
    return {"azure": azure, "mooncake": mooncake, "sharegpt": sharegpt}[fmt](path)


def check(fmt: str, path, model: str = "") -> int:
    """Read the whole trace once before a run starts, so a file that is not text or a malformed row is
    refused (file and line) before anything runs, never part-way through; returns the rows read."""
    try:
        return sum(1 for _ in read(fmt, path, model))
    except UnicodeDecodeError:
        raise ConfigError(str(path), "<file>", "not text", f"a trace ({fmt}) is UTF-8 text; is this the "
                                                           "right file?") from None
    except OSError as err:
        raise ConfigError(str(path), "<file>", str(path), f"cannot be read ({err.strerror or err})") from None
