"""Trace readers (issue 14, part 1): each public format parsed from a sample made here, malformed rows refused
with their line number, streamed rather than loaded, and replayed as a run's workload."""
import json
import subprocess
import sys

import pytest

from rsd_ray.config import ConfigError, load_run
from rsd_ray.config.specs import TraceSpec
from rsd_ray.workload.trace_readers import _json_array, read
from rsd_ray.workload.trace_source import TraceSource


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_azure_rows_with_date_times_or_seconds(tmp_path):
    path = write(tmp_path, "az.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n"
                 "2023-11-16 18:15:46.6805900,374,44\n2023-11-16 18:15:47.1805900,396,109\n"
                 "2023-11-16 18:15:49.0000000,879,0\n")
    rows = list(read("azure", path))
    assert [(round(r.t, 6), r.prompt, r.output, r.line) for r in rows] == \
        [(0.0, 374, 44, 2), (0.5, 396, 109, 3), (2.31941, 879, 0, 4)]
    seconds = write(tmp_path, "s.csv", "TIMESTAMP, ContextTokens, GeneratedTokens\n10,5,6\n12.5,7,8\n")
    assert [(r.t, r.prompt, r.output) for r in read("azure", seconds)] == [(0.0, 5, 6), (2.5, 7, 8)]


def test_mooncake_rows_carry_their_block_hashes(tmp_path):
    lines = [{"timestamp": 27482, "input_length": 6955, "output_length": 52, "hash_ids": [46, 47, 48]},
             {"timestamp": 30535, "input_length": 6472, "output_length": 26, "hash_ids": [46, 47, 49]}]
    path = write(tmp_path, "m.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n")
    rows = list(read("mooncake", path))
    assert [(round(r.t, 3), r.prompt, r.output, r.hash_ids) for r in rows] == \
        [(0.0, 6955, 52, (46, 47, 48)), (3.053, 6472, 26, (46, 47, 49))]


def test_burstgpt_rows_and_a_model_filter(tmp_path):
    path = write(tmp_path, "b.csv", "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
                 "5,ChatGPT,472,18,490,Conversation log\n45,GPT-4,1087,0,1087,API log\n"
                 "118,ChatGPT,417,276,693,Conversation log\n")
    assert [(r.t, r.prompt, r.output) for r in read("burstgpt", path)] == [(0, 472, 18), (40, 1087, 0), (113, 417, 276)]
    assert [(r.t, r.prompt) for r in read("burstgpt", path, "ChatGPT")] == [(0, 472), (113, 417)]


def test_sharegpt_first_exchange_counted_at_four_characters_a_token(tmp_path):
    convs = [{"id": "a", "conversations": [{"from": "human", "value": "x" * 40}, {"from": "gpt", "value": "y" * 400}]},
             {"id": "b", "conversations": [{"from": "gpt", "value": "hello"}]},           # no exchange: skipped
             {"id": "c", "conversations": [{"from": "system", "value": "s"}, {"from": "human", "value": "q" * 8},
                                           {"from": "gpt", "value": "a"}]}]
    path = write(tmp_path, "sg.json", json.dumps(convs, indent=2))
    assert [(r.prompt, r.output) for r in read("sharegpt", path)] == [(10, 100), (2, 1)]
    assert [item["id"] for _, item in _json_array(path, chunk=7)] == ["a", "b", "c"]    # items across chunks


def test_sharegpt_later_exchanges_prompt_with_the_conversation_so_far(tmp_path):
    turns = [("human", 40), ("gpt", 400), ("human", 8), ("gpt", 4), ("gpt", 4), ("human", 12), ("gpt", 20)]
    convs = [{"id": "a", "conversations": [{"from": f, "value": "x" * n} for f, n in turns]}]
    [row] = read("sharegpt", write(tmp_path, "sg.json", json.dumps(convs)))
    assert (row.prompt, row.output, row.session) == (10, 100, "a")
    assert row.later == ((112, 1), (117, 5))      # (40 + 400 + 8) / 4, 4 / 4; (448 + 4 + 4 + 12) / 4, 20 / 4


@pytest.mark.parametrize("fmt,text,line,words", [
    ("azure", "TIMESTAMP,ContextTokens,GeneratedTokens\n1,2,3\n2,x,3\n", 3, "ContextTokens"),
    ("azure", "TIMESTAMP,ContextTokens,GeneratedTokens\n1,2,3\n2,4\n", 3, "every row needs"),
    ("azure", "TIME,ContextTokens\n1,2\n", 1, "missing TIMESTAMP"),
    ("azure", "TIMESTAMP,ContextTokens,GeneratedTokens\n5,2,3\n4,2,3\n", 3, "time order"),
    ("azure", "TIMESTAMP,ContextTokens,GeneratedTokens\nyesterday,2,3\n", 2, "timestamp"),
    ("mooncake", '{"timestamp": 1, "input_length": 2, "output_length": 3}\n{"timestamp": 2,\n', 2, "JSON"),
    ("mooncake", '{"timestamp": 1, "input_length": 2}\n', 1, "output_length"),
    ("mooncake", '{"timestamp": 1, "input_length": 2, "output_length": 3, "hash_ids": "a"}\n', 1, "hash_ids"),
    ("burstgpt", "Timestamp,Model,Request tokens,Response tokens\n1,ChatGPT,-4,3\n", 2, "≥ 1"),
    ("sharegpt", '{"conversations": []}', 1, "array"),
    ("sharegpt", '[\n{"conversations": 3}\n]', 2, "conversations list"),
    ("sharegpt", '[\n{"conversations": []},\n{"conv', 3, "JSON object"),
])
def test_a_malformed_row_is_refused_with_its_line(tmp_path, fmt, text, line, words):
    path = write(tmp_path, f"bad.{fmt}", text)
    with pytest.raises(ConfigError) as err:
        list(read(fmt, path))
    assert f"line {line}" in str(err.value) and words in str(err.value) and str(path) in str(err.value)


def test_rows_are_streamed_not_loaded(tmp_path):
    """The first rows come out before a bad row further down is read."""
    path = write(tmp_path, "az.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n" + "1,2,3\n" * 3 + "oops\n")
    rows = read("azure", path)
    assert next(rows).prompt == 2 and next(rows).line == 3
    with pytest.raises(ConfigError, match="line 5"):
        list(rows)


def test_a_window_and_a_time_scale(tmp_path):
    path = write(tmp_path, "az.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n"
                 + "".join(f"{t},{100 + t},{t + 1}\n" for t in range(10)) + "10,9000,9000\n")
    src = TraceSource(TraceSpec(format="azure", path=str(path), start_s=2, end_s=5, time_scale=0.5), 8192, 0)
    subs = src.arrivals(0.0, 100.0)
    assert [(s.arrival, s.prompt_len, s.max_tokens) for s in subs] == [(0.0, 102, 3), (0.5, 103, 4), (1.0, 104, 5)]
    whole = TraceSource(TraceSpec(format="azure", path=str(path)), 2048, 0).arrivals(0.0, 100.0)
    assert len(whole) == 11 and (whole[-1].prompt_len, whole[-1].max_tokens) == (1, 2047)  # clipped to the model
    assert whole[0].max_tokens == 1                          # ...and an empty answer samples once


def test_sharegpt_arrivals_are_poisson_at_the_rate_and_seeded(tmp_path):
    convs = [{"conversations": [{"from": "human", "value": "q" * 40}, {"from": "gpt", "value": "a" * 80}]}] * 2000
    path = write(tmp_path, "sg.json", json.dumps(convs))
    spec = TraceSpec(format="sharegpt", path=str(path), rate=20.0)
    times = [s.arrival for s in TraceSource(spec, 4096, 3).arrivals(0.0, 1e9)]
    assert len(times) == 2000 and times == [s.arrival for s in TraceSource(spec, 4096, 3).arrivals(0.0, 1e9)]
    assert 1 / 20.0 * 0.9 < times[-1] / 2000 < 1 / 20.0 * 1.1


def test_a_trace_is_a_run_workload(tmp_path):
    path = write(tmp_path, "az.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n"
                 + "".join(f"{t / 10},{200},{20}\n" for t in range(60)))
    out = tmp_path / "r.json"
    res = subprocess.run([sys.executable, "-m", "rsd_ray.cli", "run", "--executor", "inline", "--rack", "mini",
                          "--model", "tiny-llama", "--tp", "2", "--workload", f"trace:azure:{path}", "--duration", "10",
                          "--no-progress", "--out", str(out)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    doc = json.loads(out.read_text())
    assert doc["config"]["workload"]["arrival"] == "trace" and doc["requests"]["completed"] == 60
    assert doc["summary"]["total_input_tokens"] == 60 * 200 and doc["summary"]["total_output_tokens"] == 60 * 20
    for bad, words in ((f"trace:azure:{tmp_path}/nope.csv", "trace file"), (f"trace:csv:{path}", "choose one of")):
        res = subprocess.run([sys.executable, "-m", "rsd_ray.cli", "run", "--workload", bad], capture_output=True,
                             text=True)
        assert res.returncode == 2 and words in res.stderr and "Traceback" not in res.stderr
    with pytest.raises(ConfigError, match="rate"):
        load_run(None, workload={"arrival": "trace", "trace": {"format": "sharegpt", "path": str(path)}})
