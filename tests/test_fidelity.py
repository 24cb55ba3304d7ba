"""Fidelity (issue 13): offline runs, GPU presets with an NVLink fabric, and the validation suite."""
import json
import statistics
import subprocess
import sys

import pytest

from rsd_ray.calibration import COLLECTIVE_FIXED_S, LINK_EFFICIENCY
from rsd_ray.collectives import collective_cost
from rsd_ray.config import load_run
from rsd_ray.config.loader import CONFIG_ROOT, presets, read_yaml
from rsd_ray.controller import Controller
from rsd_ray.results import build
from rsd_ray.topology import Topology
from rsd_ray.validation.suite import compare, load_rows, row_spec, summary


# --- offline runs ----------------------------------------------------------------------------------

def offline_doc(n, rack="mini", tp=4, **kw):
    spec = load_run(None, rack=rack, model="llama3-8b", tp=tp, router={"policy": "least_loaded",
                    "max_pending_per_instance": 4}, workload={"arrival": "offline", "num_prompts": n,
                    "input": {"dist": "fixed", "mean": 64}, "output": {"dist": "fixed", "mean": 48}}, **kw)
    outcome = Controller(spec).run()
    return build(outcome), outcome


def test_offline_sends_every_prompt_at_zero_and_runs_until_the_last_finishes():
    doc, outcome = offline_doc(60)             # 60 prompts on 2 instances that admit 4 pending each
    assert doc["status"] == "completed" and doc["requests"]["refused"] == 0
    assert doc["requests"]["completed"] == 60 and {r.arrival for r in outcome.records} == {0.0}
    last = max(r.finish for r in outcome.records)
    o = doc["offline"]
    assert last > 1.0 and o["elapsed_time"] == pytest.approx(last)
    assert o["num_requests"] == 60 and o["total_num_tokens"] == 60 * (64 + 48)
    assert o["tokens_per_second"] == pytest.approx(60 * 112 / last)
    assert o["requests_per_second"] == pytest.approx(60 / last)
    assert o["output_tokens_per_second"] == pytest.approx(60 * 48 / last)
    s = doc["summary"]                                  # the window is the whole run: power over the makespan
    assert s["window_s"] == pytest.approx(outcome.end_s) and s["window_s"] > last - outcome.spec.epoch_s
    assert 0 < s["card_power_w"] <= outcome.spec.device.power.max_w


def test_offline_from_the_command_line_prints_throughput_over_the_makespan(tmp_path):
    out = tmp_path / "r.json"
    res = subprocess.run([sys.executable, "-m", "rsd_ray.cli", "run", "--executor", "inline", "--rack", "mini",
                          "--model", "tiny-llama", "--tp", "2", "--num-prompts", "300", "--input-len", "100",
                          "--output-len", "20", "--no-progress", "--out", str(out)],
                         capture_output=True, text=True, env={"COLUMNS": "200", "PATH": ""})
    assert res.returncode == 0, res.stderr
    doc = json.loads(out.read_text())
    assert doc["config"]["workload"]["arrival"] == "offline" and doc["requests"]["completed"] == 300
    s = doc["summary"]
    assert s["request_throughput"] == pytest.approx(300 / s["duration"]) and s["request_throughput"] > 0
    assert "Offline throughput" in res.stdout and "Request throughput (req/s)" in res.stdout
    bad = subprocess.run([sys.executable, "-m", "rsd_ray.cli", "run", "--num-prompts", "0"], capture_output=True,
                         text=True)
    assert bad.returncode == 2 and "--num-prompts" in bad.stderr and "Traceback" not in bad.stderr
    both = subprocess.run([sys.executable, "-m", "rsd_ray.cli", "run", "--num-prompts", "5", "--rate", "2"],
                          capture_output=True, text=True)
    assert both.returncode == 2 and "give one of" in both.stderr


# --- GPU presets and the NVLink fabric ---------------------------------------------------------------

def test_every_device_number_names_its_source():
    for name in presets("devices"):
        data = read_yaml(CONFIG_ROOT / "devices" / f"{name}.yaml")
        numbers = set(data) - {"name", "description", "sources", "estimated"}
        sourced = {k.split(".")[0] for k in data["sources"]}
        assert numbers <= sourced, (name, numbers - sourced)


def test_nvswitch_joins_the_cards_of_a_server_and_pcie_the_rest():
    spec = load_run(None, rack="dgx-h100", model="llama3-8b", tp=8)
    topo = Topology(spec.rack, spec.device)
    nvlink = 450e9 * LINK_EFFICIENCY
    assert [l.name for l in topo.card_path(0, 5)] == ["card0->fab0", "fab0->card5"]
    assert all(l.bandwidth == pytest.approx(nvlink) for l in topo.card_path(0, 5))
    assert [l.name for l in topo.host_path(0)] == ["card0->sw0.0", "sw0.0->host0"]       # DMA stays on PCIe
    # one-shot all-reduce of 8: every card sends the whole message to 7 peers through the switch chip
    cost = collective_cost(topo, "all_reduce", "one_shot", list(range(8)))
    assert cost.beta == pytest.approx(7 / nvlink)
    assert cost.alpha == pytest.approx(COLLECTIVE_FIXED_S + 2e-6)                      # two 1 µs hops
    pcie = Topology(*(lambda s: (s.rack, s.device))(load_run(None, rack="l40s-server", model="llama3-8b", tp=8)))
    assert [l.name for l in pcie.card_path(0, 5)] == ["card0->sw0.0", "sw0.0->host0", "host0->sw0.1",
                                                        "sw0.1->card5"]


def test_a_gpu_runs_llama_70b_faster_over_nvlink_than_over_pcie():
    """The same 8 GPUs with and without the fabric: TP 8 all-reduces are the only difference."""
    import dataclasses
    spec = load_run(None, rack="dgx-h100", model="llama3-70b", tp=8, duration_s=2.0,
                    workload={"concurrency": 32, "input": {"mean": 128}, "output": {"mean": 64}})
    pcie = dataclasses.replace(spec, rack=dataclasses.replace(spec.rack, fabric=None))
    fast, slow = (build(Controller(s).run())["summary"]["median_tpot_ms"] for s in (spec, pcie))
    assert fast < slow


# --- the validation suite ------------------------------------------------------------------------------

def test_every_row_is_consistent_with_its_published_totals():
    rows = load_rows()
    assert len(rows) >= 12 and len({r["id"] for r in rows}) == len(rows)
    for r in rows:
        m = r["measured"]
        assert sum(r["output_lens"]) / m["duration_s"] == pytest.approx(m["output_throughput"], rel=1e-6), r["id"]
        assert r["source"].startswith("LambdaLabsML/vllm-benchmark results/") and r["tp"] <= r["gpus"]
        spec = row_spec(r)
        assert spec.rack.cards_per_server == r["gpus"] and spec.engine.max_model_len == r["engine"]["max_model_len"]


def test_validate_prints_predicted_against_measured_and_the_median_error(tmp_path):
    out = tmp_path / "v.json"
    res = subprocess.run([sys.executable, "-m", "rsd_ray.cli", "validate", "--out", str(out)],
                         capture_output=True, text=True, env={"COLUMNS": "200", "PATH": ""}, timeout=600)
    assert res.returncode == 0, res.stderr
    doc = json.loads(out.read_text())
    results = doc["results"]
    assert len(results) == len(load_rows()) and "median absolute error" in res.stdout
    for r in results:
        p, m = r["predicted"]["output_throughput"], r["measured"]["output_throughput"]
        assert r["error"]["output_throughput"] == pytest.approx((p - m) / m)
        assert r["id"] in res.stdout
    errors = [abs(r["error"]["output_throughput"]) for r in results]
    assert doc["summary"]["median_abs_error"] == pytest.approx(statistics.median(errors))
    bad = subprocess.run([sys.executable, "-m", "rsd_ray.cli", "validate", "--only", "no-such-row"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "--only" in bad.stderr


def test_a_row_is_replayed_request_for_request():
    row = next(r for r in load_rows() if "h100-llama3-8b-tp1" in r["id"])
    [result] = compare([row])
    # the longest answer bounds the makespan: it needs one weight pass of the whole model per token
    weights = 2 * 8.03e9
    floor = max(row["output_lens"]) * weights / (3350e9)
    assert result["predicted"]["duration_s"] > floor
    s = summary([result])
    assert s["rows"] == 1 and s["by_pair"][0]["device"] == "h100-sxm"
