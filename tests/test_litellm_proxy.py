"""The LiteLLM proxy server, as users run it (`litellm --config`), in front of `rsd-ray serve`.

The config is the one `rsd-ray litellm-config` writes; the proxy is the real process of the
installed release, on loopback; the clients are the `openai` SDK pointed at the proxy.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.serve_helpers import LiveServer, free_port, free_ports, openai_client

pytestmark = pytest.mark.slow

MODEL = "llama3-8b"
PROXY_START_S = 180.0
MASTER_KEY = "sk-rsd-ray-test-" + "0" * 24


def _litellm() -> str:
    exe = Path(sys.executable).with_name("litellm")
    if exe.exists():
        return str(exe)
    found = shutil.which("litellm")
    if not found:
        pytest.fail("the LiteLLM proxy (`litellm`) is not installed: pip install -e '.[test]' installs it")
    return found


@pytest.fixture(scope="module")
def proxied(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("litellm")
    ports = free_ports(4)
    rack = LiveServer(tmp, "--instance-ports", str(ports))
    config = tmp / "config.yaml"
    from rsd_ray.cli import main
    assert main(["litellm-config", "--base-url", rack.base, "--routing-strategy", "simple-shuffle",
                 "--out", str(config)]) == 0
    port = free_port()
    log = open(tmp / "proxy.log", "w+")
    env = {**os.environ, "LITELLM_MASTER_KEY": MASTER_KEY, "LITELLM_LOCAL_MODEL_COST_MAP": "True",
           "LITELLM_TELEMETRY": "False"}
    proxy = subprocess.Popen([_litellm(), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)],
                             stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + PROXY_START_S
    try:
        while True:
            if proxy.poll() is not None:
                log.seek(0)
                pytest.fail(f"the LiteLLM proxy exited {proxy.returncode} on our config:\n{log.read()[-3000:]}")
            try:
                if httpx.get(f"{base}/health/liveliness", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the LiteLLM proxy did not start"
            time.sleep(0.5)
        yield rack, base, yaml.safe_load(config.read_text())
    finally:
        os.killpg(proxy.pid, signal.SIGTERM)
        try:
            proxy.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proxy.pid, signal.SIGKILL)
            proxy.wait()
        rack.stop()


def test_the_config_names_every_instance_port_and_reads_the_key_from_the_environment(proxied):
    rack, _, config = proxied
    bases = sorted(d["litellm_params"]["api_base"] for d in config["model_list"])
    ports = sorted(int(b.rsplit(":", 1)[1].split("/")[0]) for b in bases)
    assert len(bases) == 4 and ports == list(range(ports[0], ports[0] + 4)) and ports[0] != rack.port
    assert config["general_settings"]["master_key"] == "os.environ/LITELLM_MASTER_KEY"


def test_completions_chat_and_streaming_through_the_proxy(proxied):
    _, base, _ = proxied
    client = openai_client(base)
    client.api_key = MASTER_KEY
    c = client.completions.create(model=MODEL, prompt="one two three", max_tokens=4, extra_body={"ignore_eos": True})
    assert c.usage.completion_tokens == 4 and len(c.choices[0].text.split()) == 4
    chat = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=3,
                                          extra_body={"ignore_eos": True})
    assert chat.choices[0].finish_reason == "length" and chat.usage.completion_tokens == 3
    stream = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=5,
                                            stream=True, extra_body={"ignore_eos": True})
    pieces = [ch.choices[0].delta.content for ch in stream if ch.choices and ch.choices[0].delta.content]
    assert len(pieces) == 5


def test_the_proxy_refuses_a_client_without_the_key_and_maps_the_rack_s_errors(proxied):
    from openai import APIStatusError, BadRequestError
    rack, base, _ = proxied
    served = rack.total("vllm:request_success_total")
    anonymous = openai_client(base)               # a key that is not the master key (and no key database)
    with pytest.raises(APIStatusError) as refused:
        anonymous.completions.create(model=MODEL, prompt="x", max_tokens=1)
    assert refused.value.status_code in (400, 401)
    assert rack.total("vllm:request_success_total") == served          # it never reached the rack
    client = openai_client(base)
    client.api_key = MASTER_KEY
    with pytest.raises(BadRequestError) as err:          # the rack's 400 (context too long) reaches the client
        client.completions.create(model=MODEL, prompt="w " * 9000, max_tokens=1)
    assert "context length" in str(err.value)


def test_the_proxy_spreads_load_over_the_instances(proxied):
    rack, base, _ = proxied
    client = openai_client(base)
    client.api_key = MASTER_KEY
    before = {e: rack.total("vllm:request_success_total", engine=e) for e in "0123"}
    for _ in range(16):
        client.completions.create(model=MODEL, prompt="x", max_tokens=1)
    served = {e: rack.total("vllm:request_success_total", engine=e) - before[e] for e in "0123"}
    assert sum(served.values()) == 16
    assert sum(1 for n in served.values() if n > 0) >= 2, served          # simple-shuffle uses several instances
