"""`rsd-ray serve` (inline executor) against real clients: the openai SDK, LiteLLM, httpx, gRPC, Prometheus."""
from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from rsd_ray.config import ConfigError
from tests.serve_helpers import LiveServer, openai_client

pytestmark = pytest.mark.slow          # the second tier: Ray, servers, installs, real clients

MODEL = "llama3-8b"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    live = LiveServer(tmp_path_factory.mktemp("serve"))
    yield live
    live.stop()


def test_openai_completions_and_chat_streaming_and_not(server):
    client = openai_client(server.base)
    assert [m.id for m in client.models.list().data] == [MODEL]
    c = client.completions.create(model=MODEL, prompt="one two three four", max_tokens=5, extra_body={"ignore_eos": True})
    assert c.choices[0].finish_reason == "length"
    assert (c.usage.prompt_tokens, c.usage.completion_tokens, c.usage.total_tokens) == (4, 5, 9)   # a token a word
    assert len(c.choices[0].text.split()) == 5
    assert "synthetic" in c.system_fingerprint
    chat = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi there"}],
                                          max_completion_tokens=3, extra_body={"ignore_eos": True})
    assert chat.choices[0].message.role == "assistant" and chat.choices[0].finish_reason == "length"
    assert (chat.usage.prompt_tokens, chat.usage.completion_tokens) == (2 + 4 + 4, 3)   # words + header + reply
    stream = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=4,
                                            stream=True, stream_options={"include_usage": True},
                                            extra_body={"ignore_eos": True})
    chunks = list(stream)
    text = [ch.choices[0].delta.content for ch in chunks if ch.choices and ch.choices[0].delta.content]
    assert len(text) == 4
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 4 and not chunks[-1].choices
    stream = client.completions.create(model=MODEL, prompt=[1, 2, 3], max_tokens=3, stream=True,
                                       extra_body={"ignore_eos": True})
    assert len([ch for ch in stream if ch.choices and ch.choices[0].text]) == 3


def test_emulated_eos_respects_min_and_max_tokens(server):
    client = openai_client(server.base)
    for _ in range(5):
        c = client.completions.create(model=MODEL, prompt="a b", max_tokens=40, extra_body={"min_tokens": 10})
        n = c.usage.completion_tokens
        assert 10 <= n <= 40
        assert c.choices[0].finish_reason == ("length" if n == 40 else "stop")


def test_a_stop_word_ends_the_request_in_the_rack_and_is_left_out_of_the_text(server):
    client = openai_client(server.base)
    stopped = server.total("vllm:request_success_total", finished_reason="stop")
    c = client.completions.create(model=MODEL, prompt="x", max_tokens=30, stop=["virtual"],
                                  extra_body={"ignore_eos": True})
    words = c.choices[0].text.split()
    assert c.choices[0].finish_reason == "stop" and "virtual" not in words
    assert c.usage.completion_tokens == len(words) + 1 < 30          # the stop word was generated, not sent
    stream = client.completions.create(model=MODEL, prompt="x", max_tokens=30, stop="virtual", stream=True,
                                       extra_body={"ignore_eos": True})
    chunks = [ch.choices[0] for ch in stream if ch.choices]
    assert "virtual" not in "".join(ch.text for ch in chunks) and chunks[-1].finish_reason == "stop"
    assert server.total("vllm:request_success_total", finished_reason="stop") == stopped + 2


def test_litellm_reaches_the_rack_and_each_instance(server):
    import litellm
    r = litellm.completion(model=f"hosted_vllm/{MODEL}", api_base=f"{server.base}/v1",
                           messages=[{"role": "user", "content": "hello"}], max_tokens=3, ignore_eos=True)
    assert r.usage.completion_tokens == 3
    before = {i: server.total("vllm:request_success_total", engine=str(i)) for i in range(4)}
    r = litellm.completion(model=f"hosted_vllm/{MODEL}", api_base=f"{server.base}/instances/2/v1",
                           messages=[{"role": "user", "content": "hello"}], max_tokens=2, stream=True,
                           ignore_eos=True)
    assert len([ch for ch in r if ch.choices and ch.choices[0].delta.content]) == 2
    after = {i: server.total("vllm:request_success_total", engine=str(i)) for i in range(4)}
    assert {i: after[i] - before[i] for i in after} == {0: 0, 1: 0, 2: 1, 3: 0}   # the router was bypassed


def test_litellm_config_deploys_every_instance(server, tmp_path):
    import yaml

    from rsd_ray.cli import main
    out = tmp_path / "config.yaml"
    assert main(["litellm-config", "--base-url", server.base, "--routing-strategy", "least-busy",
                 "--out", str(out)]) == 0
    config = yaml.safe_load(out.read_text())
    bases = [d["litellm_params"]["api_base"] for d in config["model_list"]]
    assert bases == [f"{server.base}/instances/{i}/v1" for i in range(4)]
    assert {d["litellm_params"]["model"] for d in config["model_list"]} == {f"hosted_vllm/{MODEL}"}
    assert config["router_settings"]["routing_strategy"] == "least-busy"
    import litellm
    router = litellm.Router(model_list=config["model_list"])
    r = router.completion(model=MODEL, messages=[{"role": "user", "content": "x"}], max_tokens=2, ignore_eos=True)
    assert r.usage.completion_tokens == 2


BAD = [
    (b"{not json", 400, None),
    (b"\xff\xfe not text", 400, None),
    (json.dumps({"model": MODEL, "prompt": "x", "temperature": -1}), 400, "temperature"),
    (json.dumps({"model": MODEL, "prompt": "x", "best_of": 3}), 400, "best_of"),
    (json.dumps({"model": MODEL, "prompt": "x", "logprobs": 21}), 400, "logprobs"),
    (json.dumps({"model": MODEL, "prompt": "x", "logit_bias": {"5": 10}}), 400, "logit_bias"),
    (json.dumps({"model": MODEL, "prompt": "x", "suffix": "y"}), 400, "suffix"),
    (json.dumps({"model": MODEL, "prompt": "x", "response_format": {"type": "json_object"}}), 400, "response_format"),
    (json.dumps({"model": MODEL, "prompt": "x", "tools": [{"type": "function", "function": {"name": "f"}}]}), 400,
     "tools"),
    (json.dumps({"model": MODEL, "prompt": "x", "max_tokens": 0}), 400, "max_tokens"),
    ('{"model": "llama3-8b", "prompt": "x", "top_p": NaN}', 400, "top_p"),
    (json.dumps({"model": MODEL, "prompt": "x", "min_tokens": 9, "max_tokens": 3}), 400, "min_tokens"),
    (json.dumps({"model": MODEL, "prompt": "w " * 8200}), 400, "prompt"),
    (json.dumps({"model": MODEL, "prompt": "w " * 8000, "max_tokens": 500}), 400, "max_tokens"),
    (json.dumps({"model": MODEL}), 400, "prompt"),
    (json.dumps({"model": "gpt-4", "prompt": "x"}), 404, "model"),
]


@pytest.mark.parametrize("body,status,param", BAD)
def test_bad_requests_get_openai_errors_and_the_server_keeps_serving(server, body, status, param):
    r = httpx.post(f"{server.base}/v1/completions", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status
    error = r.json()["error"]
    assert error["code"] == status and error["message"] and error["type"]
    if param:
        assert param in (error["param"] or "")
    else:
        assert error["param"] is None and "JSON" in error["message"]
    ok = httpx.post(f"{server.base}/v1/completions", json={"model": MODEL, "prompt": "x", "max_tokens": 1})
    assert ok.status_code == 200


def test_an_instance_or_route_that_does_not_exist_is_an_openai_404(server):
    for r in (httpx.post(f"{server.base}/instances/9/v1/completions", json={"model": MODEL, "prompt": "x"}),
              httpx.get(f"{server.base}/v1/nothing-here"), httpx.post(f"{server.base}/v2/completions", json={})):
        assert r.status_code == 404
        assert r.json()["error"]["type"] == "NotFoundError" and r.json()["error"]["code"] == 404


def test_ttft_the_client_measures_matches_the_emulation_on_an_idle_rack(server):
    client = openai_client(server.base)
    for _ in range(3):
        count = server.total("vllm:time_to_first_token_seconds_count")
        total = server.total("vllm:time_to_first_token_seconds_sum")
        sent = time.perf_counter()
        stream = client.completions.create(model=MODEL, prompt="w " * 4000, max_tokens=2, stream=True,
                                           extra_body={"ignore_eos": True})
        first = None
        for ch in stream:
            if first is None and ch.choices and ch.choices[0].text:
                first = time.perf_counter() - sent
        assert server.total("vllm:time_to_first_token_seconds_count") == count + 1
        emulated = server.total("vllm:time_to_first_token_seconds_sum") - total
        assert emulated > 0.1                         # a 4,000-token prefill takes that long (virtual)
        assert abs(first - emulated) < 0.05, (first, emulated)


def test_a_client_that_disconnects_frees_its_request(server):
    aborted = server.total("vllm:generation_tokens_total")
    with httpx.stream("POST", f"{server.base}/v1/completions",
                      json={"model": MODEL, "prompt": "x", "max_tokens": 2000, "ignore_eos": True,
                            "stream": True}) as r:
        for n, _ in enumerate(r.iter_lines()):
            if n > 4:
                break
    time.sleep(0.5)
    running = server.total("vllm:num_requests_running") + server.total("vllm:num_requests_waiting")
    assert running == 0
    generated = server.total("vllm:generation_tokens_total") - aborted
    assert generated < 200                          # stopped far short of its 2,000 tokens


async def _client(base: str, until: float, seen: dict) -> None:
    async with httpx.AsyncClient(timeout=60) as http:
        while time.monotonic() < until:
            body = {"model": MODEL, "prompt": "w " * 64, "max_tokens": 16, "ignore_eos": True, "stream": True,
                    "stream_options": {"include_usage": True}}
            async with http.stream("POST", f"{base}/v1/completions", json=body) as r:
                if r.status_code != 200:
                    seen["errors"][r.status_code] = seen["errors"].get(r.status_code, 0) + 1
                    await r.aread()
                    await asyncio.sleep(0.2)
                    continue
                tokens, usage, done = 0, None, False
                async for line in r.aiter_lines():
                    if line == "data: [DONE]":
                        done = True
                    elif line.startswith("data: "):
                        msg = json.loads(line[6:])
                        tokens += sum(1 for c in msg.get("choices", []) if c.get("text"))
                        usage = msg.get("usage") or usage
                        if "error" in msg:
                            seen["errors"]["stream"] = seen["errors"].get("stream", 0) + 1
                            done = False
                            break
                if done and usage:
                    assert usage["completion_tokens"] == tokens == 16
                    seen["completed"] += 1
                    seen["prompt_tokens"] += usage["prompt_tokens"]
                    seen["tokens"] += tokens
                elif not done:
                    seen["errors"]["unfinished"] = seen["errors"].get("unfinished", 0) + 1


def test_200_streaming_clients_for_30_s_and_metrics_agree(server):
    before = {k: server.total(k) for k in ("vllm:request_success_total", "vllm:prompt_tokens_total")}
    seen = {"completed": 0, "prompt_tokens": 0, "tokens": 0, "errors": {}}

    async def main():
        until = time.monotonic() + 30
        await asyncio.gather(*[_client(server.base, until, seen) for _ in range(200)])
    asyncio.run(main())
    assert seen["completed"] > 200
    assert set(seen["errors"]) <= {429}, seen["errors"]       # every request completed or was refused, explicitly
    time.sleep(0.5)
    assert server.total("vllm:request_success_total") - before["vllm:request_success_total"] == seen["completed"]
    assert server.total("vllm:prompt_tokens_total") - before["vllm:prompt_tokens_total"] == seen["prompt_tokens"]
    assert seen["prompt_tokens"] == 64 * seen["completed"]
    assert server.total("rsd_ray_lag_seconds") < 1.0


def test_metrics_have_vllm_and_rbln_names(server):
    m = server.metrics()
    names = {name for name, _ in m}
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
                 "vllm:prompt_tokens_total", "vllm:generation_tokens_total", "vllm:request_success_total",
                 "vllm:num_preemptions_total", "vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total",
                 "vllm:time_to_first_token_seconds_bucket",
                 "vllm:inter_token_latency_seconds_bucket", "vllm:e2e_request_latency_seconds_bucket",
                 "vllm:request_queue_time_seconds_bucket",
                 "RBLN_DEVICE_STATUS:TEMPERATURE", "RBLN_DEVICE_STATUS:CARD_POWER", "RBLN_DEVICE_STATUS:DRAM_USED",
                 "RBLN_DEVICE_STATUS:DRAM_TOTAL", "RBLN_DEVICE_STATUS:UTILIZATION", "RBLN_DEVICE_STATUS:HEALTH",
                 "rsd_ray_virtual_time_seconds", "rsd_ray_pace", "rsd_ray_lag_seconds"):
        assert name in names, name
    queued = server.total("vllm:request_queue_time_seconds_count")
    finished = sum(server.total("vllm:request_success_total", finished_reason=r) for r in ("stop", "length"))
    aborted = server.total("vllm:request_success_total", finished_reason="abort")   # queued only if scheduled
    assert finished <= queued <= finished + aborted and queued > 200
    assert 0 < server.total("vllm:request_queue_time_seconds_sum") < server.total("vllm:e2e_request_latency_seconds_sum")
    temps = [v for (n, labels), v in m.items() if n == "RBLN_DEVICE_STATUS:TEMPERATURE"]
    assert len(temps) == 16 and all(20 < t < 110 for t in temps)
    total = [v for (n, _), v in m.items() if n == "RBLN_DEVICE_STATUS:DRAM_TOTAL"]
    assert all(abs(t - total[0]) < 1e-9 for t in total) and 10 < total[0] <= 16      # ATOM: 16 GiB GDDR6
    assert {dict(labels)["engine"] for (n, labels), _ in m.items() if n == "vllm:num_requests_running"} == \
        {"0", "1", "2", "3"}


def test_grpc_generate_smi_status_and_control(server):
    import grpc

    from rsd_ray.serve.client import RackClient
    with RackClient(f"127.0.0.1:{server.grpc_port}") as rack:
        events = list(rack.generate(prompt_tokens=32, max_tokens=5, ignore_eos=True))
        assert [e["index"] for e in events[:-1]] == [0, 1, 2, 3, 4]
        assert events[-1]["finish_reason"] == "length" and events[-1]["usage"]["prompt_tokens"] == 32
        smi = rack.smi()
        assert [c["card"] for c in smi["cards"]] == list(range(16))
        status = rack.status()
        assert (status["rack"], status["tp"], status["instances"], status["healthy"]) == ("atom-server", 4, 4, 4)
        frame = next(iter(rack.telemetry(0.1)))
        assert len(frame["instances"]) == 4 and frame["t"] > 0
        with pytest.raises(grpc.RpcError) as err:
            rack.control("pace", value=-1.0)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as err:
            rack.control("kill_server", target=5)          # atom-server has one server
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "--fault" in err.value.details()
        assert rack.control("ambient", target=0, value=1.0)["ok"]
        with pytest.raises(grpc.RpcError) as err:
            list(rack.generate(prompt_tokens=9000, max_tokens=1))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_bench_reports_what_the_rack_reports(server):
    from rsd_ray.serve.bench import run
    import argparse

    from rsd_ray.serve.bench import add_arguments
    p = argparse.ArgumentParser()
    add_arguments(p)
    counts = {k: server.total(k) for k in ("vllm:time_to_first_token_seconds_sum",
                                           "vllm:time_to_first_token_seconds_count",
                                           "vllm:e2e_request_latency_seconds_sum", "vllm:generation_tokens_total")}
    args = p.parse_args(["--base-url", server.base, "--num-prompts", "24", "--random-input-len", "2048",
                         "--random-output-len", "32", "--max-concurrency", "4", "--result-file",
                         str(server.out.parent / "bench.json")])
    assert run(args) == 0
    doc = json.loads((server.out.parent / "bench.json").read_text())
    assert doc["completed"] == 24 and doc["total_output_tokens"] == 24 * 32 and doc["total_input_tokens"] == 24 * 2048
    n = server.total("vllm:time_to_first_token_seconds_count") - counts["vllm:time_to_first_token_seconds_count"]
    assert n == 24
    ttft = (server.total("vllm:time_to_first_token_seconds_sum") - counts["vllm:time_to_first_token_seconds_sum"]) / n
    e2e = (server.total("vllm:e2e_request_latency_seconds_sum") - counts["vllm:e2e_request_latency_seconds_sum"]) / n
    print("bench vs rack (ms): e2e", doc["mean_e2el_ms"], e2e * 1000, "ttft", doc["mean_ttft_ms"], ttft * 1000,
          "tpot", doc["mean_tpot_ms"], (e2e - ttft) / 31 * 1000)
    assert doc["mean_e2el_ms"] == pytest.approx(e2e * 1000, rel=0.05)
    assert doc["mean_ttft_ms"] == pytest.approx(ttft * 1000, rel=0.05)    # + HTTP in and out: 2-10 ms here
    assert doc["mean_ttft_ms"] >= ttft * 1000                             # a client never sees it sooner
    tpot = (e2e - ttft) / 31
    assert doc["mean_tpot_ms"] == pytest.approx(tpot * 1000, rel=0.05)


def test_bench_replays_a_trace_with_its_lengths_and_gaps(server):
    import argparse
    import time

    from rsd_ray.serve.bench import add_arguments, run
    trace = server.out.parent / "az.csv"
    trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n0,100,5\n0.5,200,0\n1.0,300,7\n9,1,1\n")
    p = argparse.ArgumentParser()
    add_arguments(p)
    t0 = time.perf_counter()
    assert run(p.parse_args(["--base-url", server.base, "--workload", f"trace:azure:{trace}", "--num-prompts", "3",
                             "--result-file", str(server.out.parent / "trace-bench.json")])) == 0
    doc = json.loads((server.out.parent / "trace-bench.json").read_text())
    assert doc["completed"] == 3 and doc["total_input_tokens"] == 600 and doc["total_output_tokens"] == 5 + 1 + 7
    assert doc["duration"] >= 1.0 and time.perf_counter() - t0 >= 1.0      # the last request was sent 1 s in
    bad = argparse.Namespace(**{**vars(p.parse_args(["--base-url", server.base])), "workload": "trace:azure:/nope"})
    with pytest.raises(ConfigError, match="--workload"):
        run(bad)


def test_sigterm_drains_and_writes_the_results_document(server):
    code, doc = server.stop()
    assert code == 143, server.output()                          # as every command a signal stops (128 + 15)
    assert doc["status"] == "interrupted" and "SIGTERM" in doc["reason"] and doc["served"]["pace"] == 1.0
    r = doc["requests"]
    assert r["accepted"] == r["completed"] + r["errored"] + r["unfinished"] and r["unfinished"] == 0
    assert r["completed"] > 200
    assert doc["config"]["duration_s"] < 600            # the served window, not the open-ended horizon


@pytest.fixture(scope="module")
def tight(tmp_path_factory):
    """One instance of 8 cards with room for 2 running and 2 waiting requests."""
    tmp = tmp_path_factory.mktemp("tight")
    config = tmp / "tight.yaml"
    config.write_text("rack: mini\nmodel: tiny-llama\ntp: 8\nengine: {max_num_seqs: 2}\n"
                      "router: {max_pending_per_instance: 2}\n")
    live = LiveServer(tmp, "--config", str(config))
    yield live
    live.stop()


async def _flood(base: str, n: int) -> list[int]:
    async with httpx.AsyncClient(timeout=60) as http:
        body = {"model": "tiny-llama", "prompt": "w " * 16, "max_tokens": 200, "ignore_eos": True}
        replies = await asyncio.gather(*[http.post(f"{base}/v1/completions", json=body) for _ in range(n)])
    for r in replies:
        if r.status_code != 200:
            assert r.json()["error"]["code"] == r.status_code
        if r.status_code == 429:
            assert int(r.headers["retry-after"]) >= 1            # when to come back, as OpenAI's API says
    return [r.status_code for r in replies]


def test_a_full_rack_refuses_with_429_and_finishes_what_it_took(tight):
    codes = asyncio.run(_flood(tight.base, 24))
    assert set(codes) == {200, 429}
    assert codes.count(200) >= 2                          # the 2 the admission bound lets wait, at least
    assert tight.total("vllm:request_success_total") == codes.count(200)


def test_no_healthy_instance_is_503_and_health_says_so(tight):
    from rsd_ray.serve.client import RackClient
    with RackClient(f"127.0.0.1:{tight.grpc_port}") as rack:
        rack.control("kill_card", target=3)
    deadline = time.monotonic() + 10
    while httpx.get(f"{tight.base}/health").status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert httpx.get(f"{tight.base}/health").status_code == 503
    r = httpx.post(f"{tight.base}/v1/completions", json={"model": "tiny-llama", "prompt": "x", "max_tokens": 2})
    assert r.status_code == 503 and r.json()["error"]["type"] == "ServiceUnavailableError"
    assert httpx.get(f"{tight.base}/v1/models").status_code == 200      # the server itself still answers
    deadline = time.monotonic() + 5                                        # card frames come each virtual second
    while tight.total("RBLN_DEVICE_STATUS:HEALTH") < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert tight.total("RBLN_DEVICE_STATUS:HEALTH") == 1                  # the lost card reads inactive


@pytest.mark.parametrize("flags,field", [
    (["--pace", "0"], "--pace"), (["--pace", "-1"], "--pace"), (["--pace", "nan"], "--pace"),
    (["--pace", "inf"], "--pace"), (["--port", "0"], "--port"), (["--port", "70000"], "--port"),
    (["--drain", "-1"], "--drain"), (["--out", "/no/such/dir/x.json"], "--out"), (["--rate", "5"], "--rate"),
])
def test_bad_serve_flags_are_refused_before_anything_starts(flags, field):
    import subprocess
    import sys
    res = subprocess.run([sys.executable, "-m", "rsd_ray.cli", "serve", "--executor", "inline", *flags],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and field in res.stderr and "Traceback" not in res.stderr, res.stderr


def test_a_port_in_use_is_a_clear_error(tight):
    import subprocess
    import sys
    res = subprocess.run([sys.executable, "-m", "rsd_ray.cli", "serve", "--executor", "inline", "--port",
                          str(tight.port), "--grpc-port", "0"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "--port" in res.stderr and "choose another port" in res.stderr
    assert "Traceback" not in res.stderr
