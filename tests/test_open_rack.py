"""The rack opened up (inline): epochs as values, failures as values, every request accounted for."""
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import msgpack
import pytest
import yaml

from rsd_ray.config import ConfigError, LengthSpec, load_run
from rsd_ray.config.loader import CONFIG_ROOT
from rsd_ray.engine.request import TokenTimes
from rsd_ray.rack.controller import NO_HEALTHY_INSTANCE, Controller
from rsd_ray.rack.epoch import Control, Kind, Needs
from rsd_ray.report.results import build
from tests.conftest import accounted, make_spec


def plain(value):
    """msgpack's fallback: a record's token times as the list they read as; anything else is refused."""
    if isinstance(value, TokenTimes):
        return list(value)
    raise TypeError(f"{type(value).__name__} crossed an epoch")


def test_an_epoch_is_plain_values_in_and_out():
    controller = Controller(make_spec(duration_s=0.5))
    outs = [controller.step(Needs(tokens=True)) for _ in range(10)]
    for out in outs:
        msgpack.packb(dataclasses.asdict(out), default=plain)       # no live object crosses an epoch
    streamed = {}
    for out in outs:
        for rid, times in out.tokens:
            streamed.setdefault(rid, []).extend(times)
    finished = [r for out in outs for r in out.finished]
    assert finished and all(list(r.token_times) == streamed[r.rid] for r in finished)   # every token, streamed
    controller.executor.shutdown()


def killed_at(spec, t_kill, card, executor="inline", **opts):
    """Run ``spec`` and kill ``card`` at the epoch boundary ``t_kill``."""
    controller = Controller(spec, executor=executor, **opts)

    def fault(out, _):
        if abs(out.t_end - t_kill) < 1e-9:
            controller.control(Control(Kind.CARD, card))
    outcome = controller.run([fault])
    return build(outcome), outcome


def test_a_killed_card_fails_its_instance_and_its_requests_move():
    spec = make_spec(duration_s=2.0, workload={"concurrency": 24, "per_server": False,
                                               "input": LengthSpec(mean=500), "output": LengthSpec(mean=1500)})
    doc, outcome = killed_at(spec, 0.5, card=1)                  # card 1 belongs to instance 0 (cards 0, 1)
    assert doc["status"] == "completed"
    (failure,) = doc["failures"]
    assert failure["kind"] == "card" and list(failure["instances"]) == [0] and list(failure["cards"]) == [1]
    assert failure["t"] == pytest.approx(0.5)
    assert doc["instances"][0]["failed"] and not any(i["failed"] for i in doc["instances"][1:])
    assert accounted(doc) and doc["requests"]["retried"] > 0
    moved = [r for r in outcome.records if r.retries]
    assert all(r.instance != 0 for r in moved) and any(r.finish for r in moved)
    assert not [r for r in outcome.records if r.arrival > 0.55 and r.instance == 0]   # no new traffic to it
    for r in moved:                                              # a retry keeps its tokens and goes on
        assert list(r.token_times) == sorted(r.token_times) and r.output_len <= r.max_tokens
    lost = [c for c in doc["cards"] if c["lost"]]
    assert [c["card"] for c in lost] == [1] and lost[0]["clock_s"] == pytest.approx(0.5, abs=0.01)   # frozen there
    msgpack.packb(json.loads(json.dumps(doc["failures"])))


def test_with_every_instance_lost_requests_end_in_an_explicit_error():
    spec = make_spec(tp=8, duration_s=1.0)                      # one instance over both servers
    errored = []
    controller = Controller(spec)
    controller.control(Control(Kind.CARD, 5))
    outcome = controller.run([lambda out, _: errored.extend(out.errored)])
    doc = build(outcome)
    assert doc["status"] == "completed" and accounted(doc)
    assert doc["requests"]["errored"] > 0
    assert all(r.error == NO_HEALTHY_INSTANCE for r in outcome.records if r.error)
    assert sorted(errored) == sorted((r.rid, r.error) for r in outcome.records if r.error)   # the sinks were told


@pytest.mark.parametrize("rack,model,tp,cards", [("mini", "tiny-llama", 8, 8), ("rsd-rack", "llama3-70b", 32, 224)])
def test_tp_groups_across_servers_count_every_card_once(rack, model, tp, cards):
    doc = build(Controller(load_run(None, rack=rack, model=model, tp=tp, duration_s=0.5, drain_s=0)).run())
    assert doc["emulator"]["cards"] == cards and len(doc["cards"]) == cards
    assert sorted(c["card"] for c in doc["cards"]) == list(range(cards))
    assert sum(s["cards"] for s in doc["servers"]) == cards
    assert doc["requests"]["completed"] + doc["requests"]["unfinished"] > 0


@pytest.mark.slow
def test_a_huge_closed_loop_finishes_and_counts_each_refused_request_once():
    spec = make_spec(duration_s=1.0, workload={"concurrency": 1_000_000, "per_server": False},
                     router={"max_pending_per_instance": 8})
    doc = build(Controller(spec).run())
    r = doc["requests"]
    assert accounted(doc)
    assert r["offered"] >= 1_000_000 and r["refused"] <= 1_000_000 < r["refusals"]   # retries are not requests
    assert r["accepted"] > 0


def test_a_fatal_error_still_returns_the_results_so_far():
    def broken_dashboard(out, _):
        if out.t_end >= 0.5:
            raise ValueError("the dashboard broke")
    outcome = Controller(make_spec(duration_s=2.0)).run([broken_dashboard])
    doc = build(outcome)
    assert doc["status"] == "failed" and doc["reason"] == "ValueError: the dashboard broke"
    assert doc["requests"]["completed"] > 0 and accounted(doc)
    assert outcome.end_s == pytest.approx(0.5) and len(doc["cards"]) == 8


def test_too_few_kv_blocks_for_one_sequence_is_a_config_error():
    with pytest.raises(ConfigError, match="engine.num_blocks_override = 10 — 10 blocks of 16 tokens cannot hold"):
        load_run(None, rack="mini", model="tiny-llama", tp=2, engine={"num_blocks_override": 10})


# --- the command line: bad input refused before anything starts, and nothing thrown away ---------

def cli(*args, cwd=None, env=None, timeout=60):
    return subprocess.run([sys.executable, "-m", "rsd_ray.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env=env)


def _yaml(tmp_path, name, data):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return str(path)


def _device_rack(tmp_path, **device):
    data = yaml.safe_load(open(CONFIG_ROOT / "devices" / "atom.yaml"))
    data.update(device)
    rack = yaml.safe_load(open(CONFIG_ROOT / "racks" / "mini.yaml"))
    rack["device"] = _yaml(tmp_path, "dev.yaml", data)
    return _yaml(tmp_path, "rack.yaml", rack)


BAD = {
    "duration nan": (["--duration", "nan"], "finite"),
    "duration inf": (["--duration", "inf"], "finite"),
    "rate nan": (["--rate", "nan"], "finite"),
    "rate 0": (["--rate", "0"], "--rate = 0.0"),
    "concurrency 0": (["--concurrency", "0"], "--concurrency = 0"),
    "pipeline chunks 0": (["--pipeline-chunks", "0"], "compiler.pipeline_chunks = 0"),
    "rate with concurrency": (["--rate", "10", "--concurrency", "5"], "give one of"),
    "missing config": (["--config", "missing.yaml"], "--config = 'missing.yaml'"),
    "bad out path": (["--out", "/nonexistent/x.json"], "--out = '/nonexistent/x.json'"),
    "tp across servers not whole": (["--rack", "mini", "--tp", "6"], "tp = 6"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_command_lines_are_refused_with_the_field(case, tmp_path):
    args, says = BAD[case]
    res = cli("run", "--executor", "inline", "--no-progress", *args, cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert says in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize("what,data,says", [
    ("yaml rate inf", {"workload": {"arrival": "poisson", "rate": float("inf")}}, "workload.rate = inf"),
    ("peak negative", "peak_tflops", "peak_tflops.fp16 = -32.0 — must be ≥ 0.001"),
    ("bandwidth nan", "dram_bandwidth_gbps", "dram_bandwidth_gbps = nan — must be a finite number"),
    ("idle above max", "power", "power.idle_w = 200.0"),
    ("abort below throttle", "thermal", "thermal.abort_c = 70.0"),
])
def test_bad_yaml_numbers_are_refused_with_the_field(what, data, says, tmp_path):
    device = {"peak_tflops": {"peak_tflops": {"fp16": -32.0}}, "dram_bandwidth_gbps": {"dram_bandwidth_gbps": float("nan")},
              "power": {"power": {"idle_w": 200.0, "max_w": 130.0}},
              "thermal": {"thermal": {"ambient_c": 35, "resistance_c_per_w": 0.25, "tau_s": 30, "throttle_c": 75,
                                      "abort_c": 70.0}}}
    run = data if isinstance(data, dict) else {"rack": _device_rack(tmp_path, **device[data]), "tp": 2,
                                                "model": "tiny-llama"}
    res = cli("run", "--executor", "inline", "--no-progress", "--config", _yaml(tmp_path, "run.yaml", run))
    assert res.returncode == 2 and says in res.stderr and "Traceback" not in res.stderr, res.stderr


@pytest.mark.parametrize("axis,says", [("tp=nan", "tp = 'nan'"), ("tp=.inf", "tp = inf"), ("seed=-1", "seed = -1"),
                                       ("workload.rate=.nan", "workload.rate")])
def test_bad_sweep_values_are_refused_before_any_point_runs(axis, says, tmp_path):
    res = cli("sweep", "--grid", axis, "--duration", "1", "--out-dir", str(tmp_path))
    assert res.returncode == 2 and says in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert not (tmp_path / "sweep.json").exists()


def test_a_sweep_keeps_every_point_and_names_the_one_that_failed(tmp_path):
    res = cli("sweep", "--grid", "tp=1,4", "--duration", "2", "--workers", "2", "--out-dir", str(tmp_path),
              timeout=300)
    assert res.returncode == 0, res.stderr
    rows = json.loads((tmp_path / "sweep.json").read_text())["rows"]
    assert [r["tp"] for r in rows] == [1, 4]
    assert "use tp ≥ 2" in rows[0]["error"] and rows[1]["output_throughput"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_a_stop_signal_saves_the_results_so_far(tmp_path, signum):
    out = tmp_path / "r.json"
    proc = subprocess.Popen([sys.executable, "-m", "rsd_ray.cli", "run", "--executor", "inline", "--rack", "mini",
                             "--model", "tiny-llama", "--tp", "2", "--duration", "6000", "--no-progress", "--out",
                             str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(6)                                   # well into the run (start-up ~1 s; requests finish in ~0.1 s)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, err                  # 130, 143, 129: as a shell reports the signal
    doc = json.loads(out.read_text())
    assert doc["status"] == "interrupted" and signum.name in doc["reason"]
    assert doc["requests"]["completed"] > 0 and accounted(doc)
    assert "Traceback" not in err and "interrupted" in err


@pytest.mark.parametrize("address,says", [("127.0.0.1:1", "nothing answers there"),
                                          ("auto", "cannot join"), ("no-port", "give auto or HOST:PORT")])
def test_an_address_with_no_cluster_fails_fast_and_says_what_to_do(address, says, tmp_path):
    env = {**os.environ, "RAY_TMPDIR": str(tmp_path)}          # no cluster to find here, whatever runs elsewhere
    t0 = time.monotonic()
    res = cli("run", "--address", address, "--no-progress", "--rack", "mini", "--model", "tiny-llama", "--tp", "2",
              env=env, cwd=tmp_path)
    assert res.returncode == 2 and says in res.stderr, res.stderr
    assert "Traceback" not in res.stderr and time.monotonic() - t0 < 30


def test_a_request_sent_again_differs_only_in_its_arrival():
    import dataclasses
    from rsd_ray.engine.request import Submit
    first = Submit(7, 1.0, 100, 20, 3, (1.5, 1.6), 2, 1, (11, 12), "user-9")
    again = first.sent_again(4.0)
    assert again == dataclasses.replace(first, arrival=4.0) and first.arrival == 1.0
