"""`/metrics` as vLLM exports it: every family, type, label and bucket, from the start, and values equal to
what the clients sent — parsed by prometheus_client's own parser."""
from __future__ import annotations

import math
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from rsd_ray.serve.metrics import ITL_BUCKETS, REQUEST_BUCKETS, TTFT_BUCKETS, buckets_1_2_5
from tests.serve_helpers import LiveServer, openai_client

pytestmark = pytest.mark.slow

MODEL = "llama3-8b"
ENGINES = {"0", "1", "2", "3"}
MAX_MODEL_LEN = 8192           # llama3-8b's
# vLLM's V1 families (vllm/v1/metrics/loggers.py) for what is emulated: name → type
VLLM = {"vllm:num_requests_running": "gauge", "vllm:num_requests_waiting": "gauge",
        "vllm:kv_cache_usage_perc": "gauge", "vllm:prefix_cache_queries": "counter",
        "vllm:prefix_cache_hits": "counter", "vllm:num_preemptions": "counter", "vllm:prompt_tokens": "counter",
        "vllm:generation_tokens": "counter", "vllm:request_success": "counter",
        "vllm:request_prompt_tokens": "histogram", "vllm:request_generation_tokens": "histogram",
        "vllm:iteration_tokens_total": "histogram", "vllm:request_max_num_generation_tokens": "histogram",
        "vllm:request_params_n": "histogram", "vllm:request_params_max_tokens": "histogram",
        "vllm:time_to_first_token_seconds": "histogram", "vllm:inter_token_latency_seconds": "histogram",
        "vllm:request_time_per_output_token_seconds": "histogram", "vllm:e2e_request_latency_seconds": "histogram",
        "vllm:request_queue_time_seconds": "histogram", "vllm:request_inference_time_seconds": "histogram",
        "vllm:request_prefill_time_seconds": "histogram", "vllm:request_decode_time_seconds": "histogram",
        "vllm:cache_config_info": "gauge"}
BUCKETS = {"vllm:time_to_first_token_seconds": TTFT_BUCKETS, "vllm:inter_token_latency_seconds": ITL_BUCKETS,
           "vllm:request_time_per_output_token_seconds": ITL_BUCKETS,
           "vllm:e2e_request_latency_seconds": REQUEST_BUCKETS,
           "vllm:request_prompt_tokens": (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000),
           "vllm:iteration_tokens_total": (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384),
           "vllm:request_params_n": (1, 2, 5, 10, 20)}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    live = LiveServer(tmp_path_factory.mktemp("metrics"))
    yield live
    live.stop()


def scrape(server) -> dict:
    text = httpx.get(f"{server.base}/metrics", timeout=10).text
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(families, name, sample=None, **labels) -> float:
    """The sum of ``sample`` (default the family's name) over the series matching ``labels``."""
    fam = families[name]
    want = sample or name
    return sum(s.value for s in fam.samples if s.name == want and all(s.labels.get(k) == v for k, v in labels.items()))


def test_every_family_exists_at_start_up_for_every_engine_with_vllm_s_types_and_buckets(server):
    families = scrape(server)                           # no request yet
    for name, kind in VLLM.items():
        assert name in families, name
        assert families[name].type == kind, (name, families[name].type)
        engines = {s.labels.get("engine") for s in families[name].samples}
        assert engines == ENGINES, (name, engines)
        assert all(s.labels.get("model_name") == MODEL for s in families[name].samples
                   if name != "vllm:cache_config_info")
    assert not any(s.name.endswith("_created") for f in families.values() for s in f.samples)
    assert not {n for n in families if n.startswith("vllm:")} - set(VLLM)       # none that vLLM does not export
    for name, buckets in BUCKETS.items():
        les = sorted({float(s.labels["le"]) for s in families[name].samples if s.name.endswith("_bucket")})
        assert les == sorted([float(b) for b in buckets] + [math.inf]), name
    assert buckets_1_2_5(MAX_MODEL_LEN) == BUCKETS["vllm:request_prompt_tokens"]
    reasons = {s.labels["finished_reason"] for s in families["vllm:request_success"].samples}
    assert reasons == {"stop", "length", "abort", "error"}
    info = families["vllm:cache_config_info"].samples[0].labels
    assert info["block_size"] == "16" and int(info["num_gpu_blocks"]) > 0 and info["cache_dtype"] == "auto"
    for name in ("vllm:prompt_tokens", "vllm:generation_tokens", "vllm:request_success"):
        assert value(families, name, name + "_total") == 0


def test_values_are_what_the_clients_sent(server):
    sent = []             # (engine, prompt tokens, output tokens, max_tokens)
    for engine, words, out in ((0, 10, 5), (1, 30, 1), (2, 7, 12), (1, 100, 3)):
        c = openai_client(f"{server.base}/instances/{engine}").completions.create(
            model=MODEL, prompt="w " * words, max_tokens=out, extra_body={"ignore_eos": True})
        assert c.usage.prompt_tokens == words and c.usage.completion_tokens == out
        sent.append((str(engine), words, out, out))
    def long_prompt(_):                                # two at once on one instance: the second queues
        return openai_client(f"{server.base}/instances/0").completions.create(
            model=MODEL, prompt="w " * 2000, max_tokens=2, extra_body={"ignore_eos": True})
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(2) as pool:
        assert all(c.usage.completion_tokens == 2 for c in pool.map(long_prompt, range(2)))
    sent += [("0", 2000, 2, 2)] * 2
    pair = openai_client(f"{server.base}/instances/3").completions.create(model=MODEL, prompt="a b c", max_tokens=4, n=2, extra_body={"ignore_eos": True})
    assert len(pair.choices) == 2 and pair.usage.completion_tokens == 8 and pair.usage.prompt_tokens == 3
    f = scrape(server)
    for engine in ("0", "1", "2"):                     # each instance: exactly what was sent to it
        mine = [x for x in sent if x[0] == engine]
        assert value(f, "vllm:prompt_tokens", "vllm:prompt_tokens_total", engine=engine) == sum(x[1] for x in mine)
        assert value(f, "vllm:request_generation_tokens", "vllm:request_generation_tokens_sum", engine=engine) == \
            sum(x[2] for x in mine)
        assert value(f, "vllm:request_success", "vllm:request_success_total", engine=engine) == len(mine)
    total_prompt = sum(x[1] for x in sent) + 3 * 2               # each of n=2's sequences prefills its prompt
    total_out = sum(x[2] for x in sent) + 8
    assert value(f, "vllm:prompt_tokens", "vllm:prompt_tokens_total") == total_prompt
    assert value(f, "vllm:request_success", "vllm:request_success_total", finished_reason="length") == 8
    assert value(f, "vllm:request_success", "vllm:request_success_total", finished_reason="abort") == 0
    assert value(f, "vllm:request_success", "vllm:request_success_total", finished_reason="stop") == 0
    assert value(f, "vllm:request_prompt_tokens", "vllm:request_prompt_tokens_sum") == total_prompt
    assert value(f, "vllm:request_generation_tokens", "vllm:request_generation_tokens_sum") == total_out
    assert value(f, "vllm:request_params_max_tokens", "vllm:request_params_max_tokens_sum") == \
        sum(x[3] for x in sent) + 4 * 2
    assert value(f, "vllm:request_params_n", "vllm:request_params_n_count") == 7        # once per client request
    assert value(f, "vllm:request_params_n", "vllm:request_params_n_sum") == 6 + 2
    # TPOT: one observation per request of more than one token (the 1-token request has none)
    assert value(f, "vllm:request_time_per_output_token_seconds",
                 "vllm:request_time_per_output_token_seconds_count") == 7
    ttft = value(f, "vllm:time_to_first_token_seconds", "vllm:time_to_first_token_seconds_sum")
    queue = value(f, "vllm:request_queue_time_seconds", "vllm:request_queue_time_seconds_sum")
    prefill = value(f, "vllm:request_prefill_time_seconds", "vllm:request_prefill_time_seconds_sum")
    decode = value(f, "vllm:request_decode_time_seconds", "vllm:request_decode_time_seconds_sum")
    inference = value(f, "vllm:request_inference_time_seconds", "vllm:request_inference_time_seconds_sum")
    e2e = value(f, "vllm:e2e_request_latency_seconds", "vllm:e2e_request_latency_seconds_sum")
    assert queue > 0.01 and ttft > 0 and abs(queue + prefill - ttft) < 1e-9   # first token = waiting + prefill
    assert abs(prefill + decode - inference) < 1e-9                  # running = prefill + decode
    assert abs(queue + inference - e2e) < 1e-9
    # every computed token is in a step: a request computes its prompt and all but its last output token
    assert value(f, "vllm:iteration_tokens_total", "vllm:iteration_tokens_total_sum") == total_prompt + total_out - 8
    assert value(f, "vllm:iteration_tokens_total", "vllm:iteration_tokens_total_count") > 0
    assert value(f, "vllm:generation_tokens", "vllm:generation_tokens_total") == total_out
    assert value(f, "vllm:num_requests_running") + value(f, "vllm:num_requests_waiting") == 0
    assert value(f, "rsd_ray_delivery_delay_seconds", "rsd_ray_delivery_delay_seconds_count") == 7   # a response each
    # a client that goes away: its request ends as an abort, on its instance
    with httpx.stream("POST", f"{server.base}/instances/3/v1/completions",
                      json={"model": MODEL, "prompt": "x", "max_tokens": 2000, "ignore_eos": True, "stream": True}) as r:
        for n, _ in enumerate(r.iter_lines()):
            if n > 3:
                break                                  # the client goes away: an abort
    time.sleep(0.5)
    time.sleep(0.5)
    g = scrape(server)
    assert value(g, "vllm:request_success", "vllm:request_success_total", engine="3", finished_reason="abort") == 1
    assert value(g, "vllm:request_success", "vllm:request_success_total", finished_reason="length") == 8
