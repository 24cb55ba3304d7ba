"""Every request field vLLM honours is honoured (prompt lists, n, echo, logprobs, a missing model, stop strings
kept on request); the rest are refused with an OpenAI 400 naming the field (``rsd_ray.serve.protocol``)."""
from __future__ import annotations

import math

import httpx
import pytest

from rsd_ray.serve.protocol import NEEDS_WEIGHTS
from tests.serve_helpers import LiveServer, openai_client

pytestmark = pytest.mark.slow

MODEL = "llama3-8b"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    live = LiveServer(tmp_path_factory.mktemp("fields"))
    yield live
    live.stop()


def test_a_list_of_prompts_and_n_give_a_choice_each_with_usage_summed(server):
    c = openai_client(server.base).completions.create(model=MODEL, prompt=["a b c", "d e"], n=2, max_tokens=3,
                                                      extra_body={"ignore_eos": True})
    assert [ch.index for ch in c.choices] == [0, 1, 2, 3]
    assert all(len(ch.text.split()) == 3 and ch.finish_reason == "length" for ch in c.choices)
    assert (c.usage.prompt_tokens, c.usage.completion_tokens) == (3 + 2, 4 * 3)      # a prompt counted once
    ids = openai_client(server.base).completions.create(model=MODEL, prompt=[[1, 2], [3, 4, 5]], max_tokens=1)
    assert len(ids.choices) == 2 and ids.usage.prompt_tokens == 5


def test_a_request_without_a_model_means_the_served_one(server):
    r = httpx.post(f"{server.base}/v1/completions", json={"prompt": "x", "max_tokens": 2})
    assert r.status_code == 200 and r.json()["model"] == MODEL
    r = httpx.post(f"{server.base}/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}],
                                                               "max_tokens": 2})
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["role"] == "assistant"


def test_echo_and_logprobs_are_well_formed_and_deterministic(server):
    client = openai_client(server.base)
    c = client.completions.create(model=MODEL, prompt="one two three", max_tokens=4, echo=True, logprobs=3,
                                  extra_body={"ignore_eos": True})
    choice = c.choices[0]
    assert choice.text.startswith("one two three") and len(choice.text.split()) == 3 + 4
    lp = choice.logprobs
    assert len(lp.tokens) == 3 + 4 and "".join(lp.tokens) == choice.text
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None     # the first prompt token has none
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(len(lp.tokens))]
    for token, value, top in zip(lp.tokens[1:], lp.token_logprobs[1:], lp.top_logprobs[1:]):
        assert value <= 0 and len(top) == 3 and top[token] == value and max(top.values()) == value
        assert sum(math.exp(v) for v in top.values()) < 1.0
    again = client.completions.create(model=MODEL, prompt="one two three", max_tokens=4, echo=True, logprobs=3,
                                      extra_body={"ignore_eos": True}).choices[0].logprobs
    assert again.token_logprobs[:3] == lp.token_logprobs[:3]             # the same prompt, the same figures
    chat = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=3,
                                          logprobs=True, top_logprobs=2, extra_body={"ignore_eos": True})
    content = chat.choices[0].logprobs.content
    assert "".join(t.token for t in content) == chat.choices[0].message.content and len(content) == 3
    assert all(len(t.top_logprobs) == 2 and t.top_logprobs[0].token == t.token and bytes(t.bytes) == t.token.encode()
               for t in content)
    stream = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=3,
                                            logprobs=True, stream=True, extra_body={"ignore_eos": True})
    streamed = [ch.choices[0].logprobs.content[0] for ch in stream if ch.choices and ch.choices[0].logprobs]
    assert len(streamed) == 3 and all(t.top_logprobs == [] for t in streamed)


def test_a_stop_string_is_kept_when_asked(server):
    c = openai_client(server.base).completions.create(model=MODEL, prompt="x", max_tokens=30, stop=["virtual"],
                                                      extra_body={"ignore_eos": True,
                                                                  "include_stop_str_in_output": True})
    assert c.choices[0].finish_reason == "stop" and c.choices[0].text.split()[-1] == "virtual"


def test_streamed_n_sends_every_choice_and_its_finish(server):
    stream = openai_client(server.base).completions.create(model=MODEL, prompt="x", n=3, max_tokens=2, stream=True,
                                                           extra_body={"ignore_eos": True})
    texts, finishes = {}, {}
    for ch in stream:
        for choice in ch.choices:
            texts[choice.index] = texts.get(choice.index, "") + choice.text
            if choice.finish_reason:
                finishes[choice.index] = choice.finish_reason
    assert finishes == {0: "length", 1: "length", 2: "length"}
    assert all(len(t.split()) == 2 for t in texts.values())


@pytest.mark.parametrize("field,value", [("logit_bias", {"1": 5}), ("best_of", 2), ("suffix", "end"),
                                         ("response_format", {"type": "json_schema", "json_schema": {}}),
                                         ("guided_json", {"type": "object"}),
                                         ("stop_token_ids", [2]), ("prompt_logprobs", 1)])
def test_fields_that_need_weights_are_refused_by_name(server, field, value):
    assert field in NEEDS_WEIGHTS
    r = httpx.post(f"{server.base}/v1/completions", json={"prompt": "x", field: value})
    assert r.status_code == 400 and r.json()["error"]["param"] == field


def test_a_priority_without_the_priority_policy_is_refused_as_vllm_does(server):
    r = httpx.post(f"{server.base}/v1/completions", json={"prompt": "x", "max_tokens": 1, "priority": 1})
    assert r.status_code == 400 and r.json()["error"]["param"] == "priority"
    assert "priority scheduling is not enabled" in r.json()["error"]["message"]


def test_served_priorities_are_scheduled_and_measured_by_class(tmp_path):
    """--scheduling-policy priority: a request's ``priority`` is its class; /metrics has every latency by class
    and the results break the summary down by it."""
    live = LiveServer(tmp_path, "--scheduling-policy", "priority")
    try:
        client = openai_client(live.base)
        for p in (0, 5, 5):
            client.completions.create(model=MODEL, prompt="a b", max_tokens=3, extra_body={"priority": p,
                                                                                         "ignore_eos": True})
        text = httpx.get(f"{live.base}/metrics").text
        for p, n in ((0, 1), (5, 2)):
            assert (f'rsd_ray_time_to_first_token_by_class_seconds_count{{model_name="{MODEL}",'
                    f'service_class="priority {p}"}} {float(n)}') in text
    finally:
        code, doc = live.stop()
    assert code == 143 and doc["by_class"]["priority 5"]["completed"] == 2       # stopped by SIGTERM
    assert doc["by_class"]["priority 0"]["priority"] == 0


def test_chat_tools_are_refused_but_harmless_values_are_not(server):
    body = {"messages": [{"role": "user", "content": "x"}], "max_tokens": 1}
    r = httpx.post(f"{server.base}/v1/chat/completions",
                   json={**body, "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "tools"
    for harmless in ({"tool_choice": "none"}, {"response_format": {"type": "text"}}, {"best_of": 1},
                     {"presence_penalty": 0.5, "top_k": 5, "repetition_penalty": 1.1}, {"priority": 0}):
        assert httpx.post(f"{server.base}/v1/chat/completions", json={**body, **harmless}).status_code == 200, harmless
