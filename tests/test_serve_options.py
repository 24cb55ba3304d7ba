"""`rsd-ray serve` options: a tokenizer counts prompts, instances on their own ports, the served model name."""
from __future__ import annotations

import httpx
import pytest

from tests.serve_helpers import LiveServer, free_ports, openai_client

pytestmark = pytest.mark.slow          # the second tier: Ray, servers, installs, real clients


def _tokenizer(path) -> None:
    """A word-level tokenizer that splits punctuation off words: "hello, world" is 3 tokens (2 by the word rule)."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    tok = Tokenizer(WordLevel({"[UNK]": 0, "hello": 1, ",": 2, "world": 3}, unk_token="[UNK]"))
    tok.pre_tokenizer = Whitespace()
    tok.save(str(path))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("options")
    _tokenizer(tmp / "tokenizer.json")
    base = free_ports(2)                                      # mini at TP 4: two instances
    live = LiveServer(tmp, "--rack", "mini", "--model", "tiny-llama", "--tp", "4", "--tokenizer",
                      str(tmp / "tokenizer.json"), "--instance-ports", str(base), "--served-model-name", "my-rack")
    live.instance_base = base
    yield live
    live.stop()


def test_the_tokenizer_counts_the_prompt(server):
    c = openai_client(server.base).completions.create(model="my-rack", prompt="hello, world", max_tokens=1)
    assert c.usage.prompt_tokens == 3


def test_each_instance_answers_on_its_own_port(server):
    for i in (0, 1):
        before = server.total("vllm:request_success_total", engine=str(i))
        client = openai_client(f"http://127.0.0.1:{server.instance_base + i}")
        c = client.completions.create(model="my-rack", prompt="x", max_tokens=2, extra_body={"ignore_eos": True})
        assert c.usage.completion_tokens == 2
        assert server.total("vllm:request_success_total", engine=str(i)) == before + 1
    assert httpx.get(f"http://127.0.0.1:{server.instance_base + 1}/health").status_code == 200
    assert httpx.get(f"http://127.0.0.1:{server.instance_base + 1}/v1/models").json()["data"][0]["id"] == "my-rack"


def test_the_served_model_name_is_the_only_one(server):
    r = httpx.post(f"{server.base}/v1/completions", json={"model": "tiny-llama", "prompt": "x"})
    assert r.status_code == 404 and "tiny-llama" in r.json()["error"]["message"]


def test_a_rack_that_cannot_keep_up_shows_its_lag_and_a_new_pace_starts_from_where_it_is(server):
    import time

    from rsd_ray.serve.client import RackClient
    import threading
    busy = threading.Event()

    def load():                                          # a busy rack (an idle one keeps any pace: it skips)
        with httpx.Client(timeout=60) as http:
            while not busy.is_set():
                http.post(f"{server.base}/v1/completions", json={"model": "my-rack", "prompt": "x",
                                                                  "max_tokens": 200, "ignore_eos": True})
    clients = [threading.Thread(target=load) for _ in range(8)]
    for c in clients:
        c.start()
    try:
        with RackClient(f"127.0.0.1:{server.grpc_port}") as rack:
            rack.control("pace", value=1e5)              # far faster than one process can emulate
            time.sleep(1.5)
            status = rack.status()           # behind, and re-anchored each time it fell MAX_LAG_S behind
            assert status["pace_resets"] > 0 and status["rack_lag_s"] > 0
            assert server.total("rsd_ray_pace_resets") > 0 and server.total("rsd_ray_pace") == 1e5
    finally:
        busy.set()
        for c in clients:
            c.join()
    with RackClient(f"127.0.0.1:{server.grpc_port}") as rack:
        rack.control("pace", value=1.0)
        time.sleep(0.5)
        status = rack.status()
        assert status["pace"] == 1.0 and status["rack_lag_s"] < 0.1
