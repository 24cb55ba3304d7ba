"""Property-based tests: generated command lines, run files and OpenAI request bodies, valid and invalid.

Two properties hold for every example:
- invalid input ends in exit 2 with a message (command line, run file) or a 4xx with OpenAI's error body
  (a request), never a traceback, a 5xx or a hang;
- valid input finishes, and its ledger balances: offered = accepted + refused and
  accepted = completed + errored + unfinished.

The fast tier tries ``RSD_FUZZ_EXAMPLES`` examples of each (default 25, about a minute in all); set it
higher for a long run. Values are drawn from pools of the edges a new user hits (0, negative, NaN,
infinity, huge, text, missing files) mixed with valid ones, and kept small enough that a valid run is
short (a valid but huge duration would be a long run, not a bug).
"""
from __future__ import annotations

import contextlib
import io
import json
import os

import httpx
import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from rsd_ray.cli import main
from tests.conftest import accounted
from tests.serve_helpers import LiveServer

EXAMPLES = int(os.environ.get("RSD_FUZZ_EXAMPLES", "25"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

EDGES = ["0", "-1", "nan", "inf", "-inf", "1e300", "abc", "", "1e12", "3.5"]
FLAGS = {   # flag → (values valid here, values at the edges); each draw takes either kind half the time
    "--tp": (["1", "2", "4"], EDGES + ["3", "8"]),
    "--duration": (["0.2", "0.5", "1"], EDGES[:8]),
    "--epoch": (["0.01", "0.05", "0.1"], EDGES[:8] + ["2"]),
    "--rate": (["5", "50", "500"], EDGES),
    "--concurrency": (["1", "8", "64"], EDGES),
    "--num-prompts": (["1", "20", "100"], EDGES),
    "--input-len": (["1", "100", "1024"], EDGES + ["2047", "5000"]),
    "--output-len": (["1", "16", "128"], EDGES + ["3000"]),
    "--seed": (["0", "7"], EDGES),
    "--pipeline-chunks": (["1", "2"], EDGES + ["17"]),
    "--rack": (["mini"], ["nope", "", "/tmp", "atom-server"]),
    "--model": (["tiny-llama"], ["nope", "/tmp", ""]),
    "--router": (["default"], ["nope", "/dev/null"]),
    "--engine": (["default"], ["nope", "/dev/null"]),
    "--workload": (["default", "poisson"], ["trace:azure:/nope.csv", "trace:csv:/x", "nope"]),
    "--fault": (["card:1@0.1s", "server:0@0.1s"], ["card:99@0.1s", "card:1@100s", "x", "link:a->b=5%@0.1s"]),
    "--chaos": (["0", "3"], EDGES),
}
BASE = ["run", "--executor", "inline", "--no-progress", "--rack", "mini", "--model", "tiny-llama", "--tp", "2",
        "--duration", "0.3"]


def cli(argv: list[str]) -> tuple[int, str]:
    """``rsd-ray ARGV`` in this process: (exit status, what it wrote to stderr). Any exception that escapes
    ``main`` fails the test (it would be a traceback on the user's terminal)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exit_:                 # argparse's own refusals
            code = exit_.code
    return code, err.getvalue()


def holds(code: int, said: str, out) -> None:
    event(f"exit {code}")                           # --hypothesis-show-statistics: how many ran, how many refused
    assert code in (0, 2), f"exit {code}: {said[-2000:]}"
    assert "Traceback" not in said, said[-2000:]
    if code == 2:
        assert said.strip(), "refused without a word"
        assert not out.exists(), "a refused run wrote results"
    else:
        doc = json.loads(out.read_text())
        assert doc["status"] == "completed" and accounted(doc), doc["requests"]


@FUZZ
@given(st.dictionaries(st.sampled_from(sorted(FLAGS)), st.data(), max_size=4))
def test_any_command_line_is_refused_with_a_message_or_runs_and_balances(tmp_path, picks):
    out = tmp_path / "r.json"
    out.unlink(missing_ok=True)
    argv = list(BASE)
    for flag, data in sorted(picks.items()):
        valid, edges = FLAGS[flag]
        argv += [flag, data.draw(st.sampled_from(valid) | st.sampled_from(edges), label=flag)]
    holds(*cli(argv + ["--out", str(out)]), out)


NUMBER = st.one_of(st.integers(-3, 5000), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=3),
                   st.booleans(), st.none())
RUN_FILE = st.fixed_dictionaries({}, optional={
    "tp": st.one_of(NUMBER, st.sampled_from([1, 2, 4])),
    "duration_s": st.one_of(st.sampled_from([0, -1, float("nan"), float("inf"), "1", None, True]),
                            st.floats(0.05, 0.5)),          # a valid but long run is long, not a bug
    "drain_s": st.one_of(st.sampled_from([-1, float("nan"), float("inf"), "x"]), st.floats(0, 5)),
    "seed": NUMBER,
    "engine": st.one_of(st.text(max_size=4), st.dictionaries(
        st.sampled_from(["max_num_seqs", "block_size", "kv_cache_fraction", "max_model_len", "admission",
                         "enable_prefix_caching", "max_num_seqs_typo"]), NUMBER, max_size=3)),
    "workload": st.one_of(st.sampled_from(["default", "poisson", "nope"]), st.dictionaries(
        st.sampled_from(["arrival", "rate", "concurrency", "num_prompts", "input", "output", "burstiness"]),
        st.one_of(NUMBER, st.sampled_from(["closed", "poisson", "offline", "gamma"]),
                  st.fixed_dictionaries({"mean": st.integers(-1, 3000)})), max_size=4)),
    "compiler": st.dictionaries(st.sampled_from(["pipeline_chunks", "collective"]),
                                st.one_of(NUMBER, st.sampled_from(["ring", "auto", "nope"])), max_size=2),
    "unknown_field": NUMBER,
})


@FUZZ
@given(RUN_FILE)
def test_any_run_file_is_refused_with_its_field_or_runs_and_balances(tmp_path, data):
    out, path = tmp_path / "r.json", tmp_path / "run.yaml"
    out.unlink(missing_ok=True)
    path.write_text(yaml.safe_dump({"rack": "mini", "model": "tiny-llama", "tp": 2, "duration_s": 0.3, **data}))
    holds(*cli(["run", "--executor", "inline", "--no-progress", "--config", str(path), "--out", str(out)]), out)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    live = LiveServer(tmp_path_factory.mktemp("fuzz-serve"), "--rack", "mini", "--model", "tiny-llama", "--tp",
                      "2", "--pace", "1000")
    yield live
    live.stop()


JSON = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-10, 10**12), st.floats(),
                              st.text(max_size=8)),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                  max_size=3), max_leaves=6)
FIELDS = {"model": st.one_of(st.just("tiny-llama"), JSON), "prompt": st.one_of(st.text(max_size=30), JSON),
          "messages": st.one_of(st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "x"]),
                                                                "content": st.text(max_size=20)}), max_size=3), JSON),
          "max_tokens": st.one_of(st.integers(-2, 8), st.integers(10**5, 10**9), JSON),
          "min_tokens": st.one_of(st.integers(-1, 4), JSON), "temperature": st.one_of(st.floats(-1, 3), JSON),
          "stream": st.one_of(st.booleans(), JSON), "n": st.one_of(st.integers(-1, 3), JSON),
          "stop": st.one_of(st.text(max_size=3), st.lists(st.text(max_size=3), max_size=5), JSON),
          "ignore_eos": st.one_of(st.booleans(), JSON), "user": st.one_of(st.text(max_size=5), JSON),
          "stream_options": st.one_of(st.fixed_dictionaries({"include_usage": st.booleans()}), JSON)}


@FUZZ
@given(st.sampled_from(["/v1/completions", "/v1/chat/completions"]),
       st.fixed_dictionaries({}, optional=FIELDS) | JSON)
def test_any_request_body_gets_an_answer_or_an_openai_error(server, route, body):
    r = httpx.post(f"{server.base}{route}", content=json.dumps(body), timeout=30,   # NaN as JSON can't say it
                   headers={"content-type": "application/json"})
    assert r.status_code < 500, (r.status_code, r.text[:500])
    if r.status_code >= 400:
        error = r.json()["error"]
        assert isinstance(error["message"], str) and error["message"] and "type" in error, r.text[:500]
    elif r.headers.get("content-type", "").startswith("text/event-stream"):
        assert r.text.rstrip().endswith("data: [DONE]"), r.text[-300:]
    else:
        assert r.json()["choices"], r.text[:500]
