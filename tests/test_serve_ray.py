"""`rsd-ray serve` on the Ray executor: the gateway a Ray actor, every card an actor; real clients."""
from __future__ import annotations

import pytest

from tests.serve_helpers import LiveServer, openai_client
from tests.test_ray import _raylets

pytestmark = pytest.mark.slow          # the second tier: Ray, servers, installs, real clients


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    before = _raylets()
    live = LiveServer(tmp_path_factory.mktemp("serve-ray"), "--rack", "mini", "--model", "tiny-llama", "--tp", "2",
                      executor="ray")
    live.raylets_before = before
    yield live
    live.stop()


def test_openai_and_litellm_against_a_rack_of_card_actors(server):
    client = openai_client(server.base)
    c = client.completions.create(model="tiny-llama", prompt="a b c", max_tokens=4, extra_body={"ignore_eos": True})
    assert c.usage.completion_tokens == 4 and c.choices[0].finish_reason == "length"
    stream = client.chat.completions.create(model="tiny-llama", messages=[{"role": "user", "content": "hi"}],
                                            max_tokens=3, stream=True, extra_body={"ignore_eos": True})
    assert len([ch for ch in stream if ch.choices and ch.choices[0].delta.content]) == 3
    import litellm
    r = litellm.completion(model="hosted_vllm/tiny-llama", api_base=f"{server.base}/instances/1/v1",
                           messages=[{"role": "user", "content": "hello"}], max_tokens=2, ignore_eos=True)
    assert r.usage.completion_tokens == 2
    assert server.total("vllm:request_success_total", engine="1") >= 1
    assert len([1 for (n, _), _v in server.metrics().items() if n == "RBLN_DEVICE_STATUS:CARD_POWER"]) == 8


def test_sigint_drains_and_leaves_no_ray_behind(server):
    import signal
    code, doc = server.stop(signal.SIGINT)
    assert code == 130, server.output()
    assert doc["status"] == "interrupted" and "SIGINT" in doc["reason"] and doc["emulator"]["executor"] == "ray"
    assert doc["requests"]["completed"] == 3
    assert _raylets() <= server.raylets_before          # its private Ray is gone


def test_a_killed_serving_actor_ends_the_command_with_a_clear_message(tmp_path):
    import os
    import signal

    from rsd_ray.serve.client import RackClient
    before = _raylets()
    live = LiveServer(tmp_path, "--rack", "mini", "--model", "tiny-llama", "--tp", "8", executor="ray")
    with RackClient(f"127.0.0.1:{live.grpc_port}") as rack:
        pid = rack.status()["pid"]
    assert pid != live.proc.pid                          # the gateway is an actor, not the command's process
    os.kill(pid, signal.SIGKILL)
    live.proc.wait(timeout=60)
    code, _ = live.stop()
    out = live.output()
    assert code == 1 and "the serving actor is gone" in out and "Traceback" not in out, out[-3000:]
    assert _raylets() <= before
