"""``rsd-ray bench``: benchmark any OpenAI-compatible server the way ``vllm bench serve`` does.

Random prompts of ``--random-input-len`` words (one token each by ``rsd-ray serve``'s rule;
another server counts with its tokenizer, and its ``usage`` says how many), streamed
``/v1/completions`` with ``ignore_eos`` and ``max_tokens``, sent at ``--request-rate``
(Poisson, or gamma with ``--burstiness``) under ``--max-concurrency``. The printed
block and the JSON keys are ``vllm bench serve``'s; duration runs from the first send
to the last completion.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import datetime

import numpy as np

from rsd_ray.config import ConfigError

VOCABULARY = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo",
              "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango")
READ_TIMEOUT_S = 600.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    from rsd_ray.config.arguments import finite
    p.add_argument("--base-url", default="http://127.0.0.1:8000", help="the server (its /v1 is added)")
    p.add_argument("--endpoint", default="/v1/completions")
    p.add_argument("--model", help="model name (default: the server's first in /v1/models)")
    p.add_argument("--num-prompts", type=finite(int, 1), default=100)
    p.add_argument("--random-input-len", type=finite(int, 1), default=1024)
    p.add_argument("--random-output-len", type=finite(int, 1), default=128)
    p.add_argument("--random-range-ratio", type=finite(float, 0), default=0.0,
                   help="lengths uniform in [L(1-r), L(1+r)] (0: fixed)")
    p.add_argument("--request-rate", type=float, default=float("inf"),
                   help="requests/s, Poisson (default inf: all at once)")
    p.add_argument("--burstiness", type=finite(float), default=1.0, help="gamma shape of the gaps (1 = Poisson)")
    p.add_argument("--max-concurrency", type=finite(int, 1), help="at most this many requests in flight")
    p.add_argument("--seed", type=finite(int), default=0)
    p.add_argument("--workload", metavar="trace:FORMAT:PATH",
                   help="replay a trace's first --num-prompts rows (their lengths and gaps; ShareGPT's gaps from "
                        "--request-rate) instead of random prompts")
    p.add_argument("--result-file", help="write the JSON result here")
    p.add_argument("--json", action="store_true", help="print the JSON result on stdout instead of the block")


def _check(args) -> None:
    rate = args.request_rate
    if rate != rate or rate <= 0:
        raise ConfigError("command line", "--request-rate", rate, "requests/s must be > 0 (inf: all at once)")
    if args.burstiness <= 0:
        raise ConfigError("command line", "--burstiness", args.burstiness, "the gamma shape must be > 0")
    if args.random_range_ratio >= 1:
        raise ConfigError("command line", "--random-range-ratio", args.random_range_ratio, "must be < 1")


def _lengths(rng, mean: int, ratio: float, n: int) -> list[int]:
    lo, hi = max(1, int(mean * (1 - ratio))), max(1, int(mean * (1 + ratio)))
    return rng.integers(lo, hi + 1, size=n).tolist()


async def _one(session, url: str, payload: dict, sem) -> dict:
    """One streamed request: TTFT, ITLs, latency, tokens, and how it ended: ``finish`` (the server's
    finish_reason), an ``error`` the server sent (an HTTP status or an error event), or a ``transport`` error
    (the connection failed: nothing the server said). Never an exception."""
    import aiohttp
    out = {"success": False, "ttft": 0.0, "itl": [], "latency": 0.0, "output_tokens": 0, "prompt_tokens": None,
           "error": "", "finish": None, "transport": False}
    async with sem:
        start = last = time.perf_counter()
        chunks = 0
        try:
            async with session.post(url, json=payload) as resp:
                if resp.status != 200:
                    body = await resp.text(errors="replace")
                    out["error"] = f"HTTP {resp.status}: {body[:200]}"
                    return out
                async for raw in resp.content:
                    line = raw.strip()
                    if not line.startswith(b"data: "):
                        continue
                    data = line[6:]
                    if data == b"[DONE]":
                        break
                    msg = json.loads(data)
                    if "error" in msg:
                        out["error"] = msg["error"].get("message", str(msg["error"]))
                        return out
                    if msg.get("usage"):
                        out["output_tokens"] = msg["usage"]["completion_tokens"]
                        out["prompt_tokens"] = msg["usage"]["prompt_tokens"]
                    for choice in msg.get("choices", []):
                        if choice.get("text"):
                            now = time.perf_counter()
                            if chunks == 0:
                                out["ttft"] = now - start
                            else:
                                out["itl"].append(now - last)
                            last, chunks = now, chunks + 1
                        out["finish"] = choice.get("finish_reason") or out["finish"]
            out["latency"] = time.perf_counter() - start
            out["output_tokens"] = out["output_tokens"] or chunks
            out["success"] = chunks > 0
            if not chunks:
                out["error"] = "no tokens came back"
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as err:
            out["error"], out["transport"] = f"{type(err).__name__}: {err}", True
        except Exception as err:       # noqa: BLE001  (a failed request is counted, not fatal)
            out["error"] = f"{type(err).__name__}: {err}"
        return out


def _trace(ref: str, n: int):
    """The first ``n`` rows of a ``trace:FORMAT:PATH``: prompt lengths, output lengths (an empty answer asks for
    one token) and arrival times (None for ShareGPT, which has none)."""
    import itertools
    from pathlib import Path

    from rsd_ray.workload.trace_readers import FORMATS, read
    fmt, _, path = ref.removeprefix("trace:").partition(":") if ref.startswith("trace:") else ("", "", "")
    if fmt not in FORMATS or not Path(path).is_file():
        raise ConfigError("command line", "--workload", ref, f"give trace:FORMAT:PATH of an existing file; "
                                                              f"formats: {', '.join(FORMATS)}")
    rows = list(itertools.islice(read(fmt, path), n))
    if not rows:
        raise ConfigError("command line", "--workload", ref, "the trace has no rows")
    times = None if fmt == "sharegpt" else [r.t for r in rows]
    return [r.prompt for r in rows], [max(1, r.output) for r in rows], times


def _payload(model: str, prompt: str, out_len: int) -> dict:
    return {"model": model, "prompt": prompt, "max_tokens": out_len, "ignore_eos": True, "stream": True,
            "stream_options": {"include_usage": True}, "temperature": 0.0}


async def _bench(args, model: str, prompts: list[str], outputs: list[int], gaps: list[float]) -> tuple[list, float]:
    import aiohttp
    url = args.base_url.rstrip("/").removesuffix("/v1") + args.endpoint
    sem = asyncio.Semaphore(args.max_concurrency or len(prompts))
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30.0, sock_read=READ_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as client:
        tasks = []
        start = time.perf_counter()
        for prompt, out_len, gap in zip(prompts, outputs, gaps):
            if gap > 0:
                await asyncio.sleep(gap)
            tasks.append(asyncio.ensure_future(_one(client, url, _payload(model, prompt, out_len), sem)))
        results = await asyncio.gather(*tasks)
        return results, time.perf_counter() - start


def _stats(name: str, values_s: list[float]) -> dict:
    ms = np.array(values_s) * 1000 if values_s else np.zeros(1)
    return {f"mean_{name}_ms": float(ms.mean()), f"median_{name}_ms": float(np.median(ms)),
            f"std_{name}_ms": float(ms.std()), f"p99_{name}_ms": float(np.percentile(ms, 99))}


def summarise(args, model: str, input_lens: list[int], results: list[dict], duration: float) -> dict:
    ok = [r for r in results if r["success"]]
    inputs = [r["prompt_tokens"] if r["prompt_tokens"] is not None else n for r, n in zip(results, input_lens)
              if r["success"]]
    outputs = [r["output_tokens"] for r in ok]
    tpots = [(r["latency"] - r["ttft"]) / (r["output_tokens"] - 1) for r in ok if r["output_tokens"] > 1]
    doc = {"date": datetime.now().strftime("%Y%m%d-%H%M%S"), "backend": "openai", "model_id": model,
           "num_prompts": len(results), "request_rate": args.request_rate, "burstiness": args.burstiness,
           "max_concurrency": args.max_concurrency, "duration": duration, "completed": len(ok),
           "failed": len(results) - len(ok), "total_input_tokens": int(sum(inputs)),
           "total_output_tokens": int(sum(outputs)), "request_throughput": len(ok) / duration,
           "output_throughput": sum(outputs) / duration, "total_token_throughput": (sum(inputs) + sum(outputs)) / duration,
           "input_lens": inputs, "output_lens": outputs, "ttfts": [r["ttft"] for r in ok],
           "itls": [r["itl"] for r in ok], "errors": [r["error"] for r in results if not r["success"]],
           "transport_errors": sum(r["transport"] for r in results),
           "finish_reasons": {k: sum(r["finish"] == k for r in results) for k in {r["finish"] for r in results} if k}}
    doc.update(_stats("ttft", [r["ttft"] for r in ok]))
    doc.update(_stats("tpot", tpots))
    doc.update(_stats("itl", [x for r in ok for x in r["itl"]]))
    doc.update(_stats("e2el", [r["latency"] for r in ok]))
    return doc


def render(doc: dict, out=None) -> None:
    """vllm bench serve's result block, on ``out`` (the standard output at the time of the call)."""
    out = out or sys.stdout

    def line(label, value, fmt="{:<10.2f}"):
        print(f"{label:<40} " + (fmt.format(value) if value is not None else "None"), file=out)
    print("{s:{c}^{n}}".format(s=" Serving Benchmark Result ", n=50, c="="), file=out)
    line("Successful requests:", doc["completed"], "{:<10}")
    line("Failed requests:", doc["failed"], "{:<10}")
    if doc["max_concurrency"]:
        line("Maximum request concurrency:", doc["max_concurrency"], "{:<10}")
    line("Benchmark duration (s):", doc["duration"])
    line("Total input tokens:", doc["total_input_tokens"], "{:<10}")
    line("Total generated tokens:", doc["total_output_tokens"], "{:<10}")
    line("Request throughput (req/s):", doc["request_throughput"])
    line("Output token throughput (tok/s):", doc["output_throughput"])
    line("Total Token throughput (tok/s):", doc["total_token_throughput"])
    for key, title in (("ttft", "Time to First Token"), ("tpot", "Time per Output Token (excl. 1st token)"),
                       ("itl", "Inter-token Latency"), ("e2el", "End-to-end Latency")):
        print("{s:{c}^{n}}".format(s=title, n=50, c="-"), file=out)
        name = key.upper() if key != "e2el" else "E2EL"
        line(f"Mean {name} (ms):", doc[f"mean_{key}_ms"])
        line(f"Median {name} (ms):", doc[f"median_{key}_ms"])
        line(f"P99 {name} (ms):", doc[f"p99_{key}_ms"])
    print("=" * 50, file=out)


def run(args) -> int:
    import httpx
    _check(args)
    base = args.base_url.rstrip("/").removesuffix("/v1")
    model = args.model
    if not model:
        try:
            model = httpx.get(f"{base}/v1/models", timeout=10).json()["data"][0]["id"]
        except (httpx.HTTPError, KeyError, IndexError, ValueError) as err:
            raise ConfigError("command line", "--base-url", args.base_url,
                              f"no OpenAI-compatible server answers there ({type(err).__name__}); start one or "
                              "give --model") from None
    rng = np.random.default_rng(args.seed)
    n = args.num_prompts
    trace = _trace(args.workload, n) if args.workload else None
    if trace:
        input_lens, outputs, times = trace
        n = len(input_lens)
    else:
        input_lens = _lengths(rng, args.random_input_len, args.random_range_ratio, n)
        outputs = _lengths(rng, args.random_output_len, args.random_range_ratio, n)
    prompts = [" ".join(rng.choice(VOCABULARY, size=k).tolist()) for k in input_lens]
    if trace and times is not None:
        gaps = [0.0] + np.diff(times).tolist()
    elif args.request_rate == float("inf"):
        gaps = [0.0] * n
    else:
        shape = args.burstiness
        gaps = [0.0] + rng.gamma(shape, 1.0 / (args.request_rate * shape), size=n - 1).tolist()
    print(f"benchmarking {model} at {base}: {n} prompts, request rate {args.request_rate}, "
          f"max concurrency {args.max_concurrency}", file=sys.stderr)
    results, duration = asyncio.run(_bench(args, model, prompts, outputs, gaps))
    doc = summarise(args, model, input_lens, results, duration)
    if args.result_file:
        with open(args.result_file, "w") as fh:
            json.dump(doc, fh)
    if args.json:
        json.dump(doc, sys.stdout)
        print()
    else:
        render(doc)
        for err in sorted(set(doc["errors"]))[:5]:
            print(f"error: {err}", file=sys.stderr)
    return 0 if doc["completed"] else 1
