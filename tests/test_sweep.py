import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from rsd_ray.config import ConfigError, load_run
from rsd_ray.sweep import apply, grid, parse_axis, search
from rsd_ray.workload.synthetic import Workload
from tests.processes import marked


def test_a_small_sweep_writes_csv_json_and_png_that_agree(tmp_path):
    res = subprocess.run([sys.executable, "-m", "rsd_ray.cli", "sweep", "--rack", "mini", "--model", "tiny-llama",
                          "--tp", "2", "--duration", "1", "--grid", "rack.servers=1,2",
                          "--grid", "router.policy=round_robin,least_loaded", "--workers", "2",
                          "--out-dir", str(tmp_path)], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "COLUMNS": "200"})
    assert res.returncode == 0, res.stderr
    with open(tmp_path / "sweep.csv") as fh:
        rows = list(csv.DictReader(fh))
    doc = json.loads((tmp_path / "sweep.json").read_text())
    assert doc["schema"] == "rsd-ray/sweep/v1" and len(rows) == len(doc["rows"]) == 4
    for row, jrow, result in zip(rows, doc["rows"], doc["results"]):
        assert float(row["output_throughput"]) == pytest.approx(jrow["output_throughput"])
        assert jrow["output_throughput"] == result["summary"]["output_throughput"]
        assert int(row["cards"]) == 4 * int(row["rack.servers"])
    assert [(r["rack.servers"], r["router.policy"]) for r in doc["rows"]] == \
        [(1, "round_robin"), (1, "least_loaded"), (2, "round_robin"), (2, "least_loaded")]
    assert (tmp_path / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "efficiency" in res.stdout


def test_points_change_one_field_and_refuse_bad_ones():
    spec = load_run(None)
    changed = apply(spec, {"engine.max_num_seqs": 32, "device.link.bandwidth_gbps": 32, "tp": 8})
    assert changed.engine.max_num_seqs == 32 and changed.device.link.bandwidth_gbps == 32 and changed.tp == 8
    assert changed.engine.block_size == spec.engine.block_size
    with pytest.raises(ConfigError, match="max_num_seqs = 0 — must be ≥ 1"):
        apply(spec, {"engine.max_num_seqs": 0})
    with pytest.raises(ConfigError, match="engine.max_num_sequences"):
        apply(spec, {"engine.max_num_sequences": 3})
    assert grid([parse_axis("tp=2,4"), parse_axis("router.policy=a,b")])[1] == {"tp": 2, "router.policy": "b"}


@pytest.mark.slow
def test_capacity_search_brackets_the_slo():
    spec = load_run(None, rack="mini", model="tiny-llama", tp=2, duration_s=1.0)
    slos = {"p99_ttft_ms": 40.0}
    found = search(spec, slos, iterations=3)
    assert found["capacity_rate"] > 0 and found["first_failing_rate"] > found["capacity_rate"]
    by_rate = {t["rate"]: t for t in found["trials"]}
    assert by_rate[found["capacity_rate"]]["pass"] and by_rate[found["capacity_rate"]]["p99_ttft_ms"] <= 40
    assert not by_rate[found["first_failing_rate"]]["pass"]


def test_gamma_arrivals_are_burstier_than_poisson():
    def gaps(arrival):
        spec = load_run(None, workload={"arrival": arrival, "rate": 100.0, "burstiness": 0.25})
        w = Workload(spec.workload, 1, 8192, seed=3)
        return np.diff([r.arrival for r in w.arrivals(0.0, 50.0)])
    poisson, gamma = gaps("poisson"), gaps("gamma")
    assert abs(len(gamma) / 5000 - 1) < 0.1 and abs(len(poisson) / 5000 - 1) < 0.1     # same mean rate
    cv = lambda g: g.std() / g.mean()   # noqa: E731
    assert cv(poisson) == pytest.approx(1.0, abs=0.1) and cv(gamma) == pytest.approx(2.0, abs=0.2)


@pytest.mark.parametrize("output, prompt", [({"dist": "fixed", "mean": 900}, {"dist": "fixed", "mean": 700}),
                                            ({"dist": "uniform", "mean": 300}, {"dist": "lognormal", "mean": 600})])
def test_a_closed_loops_clients_together_send_what_each_would_alone(output, prompt):
    """A closed loop's idle clients' requests are made together (``Workload._new_many``): with two fixed
    lengths the first one's copies, with drawn ones a draw each, output then prompt; either way the very
    requests made one at a time, their clipping to ``max_model_len`` (1,024 here) counted alike."""
    spec = load_run(None, workload={"arrival": "closed", "concurrency": 40, "output": output, "input": prompt})
    together, alone = (Workload(spec.workload, 1, 1024, seed=3) for _ in range(2))
    many = together.arrivals(0.0, 0.05)
    one_by_one = [alone._new(0.0) for _ in range(40)]
    assert len(many) == 40 and many == one_by_one and len({r.rid for r in many}) == 40
    assert together.clipped == alone.clipped > 0


@pytest.mark.slow
def test_a_stop_signal_keeps_the_points_that_ran_and_ends_the_workers(tmp_path):
    """Two 1-s points finish in ~2 s; two 600-s points would run for minutes: SIGTERM at 8 s keeps the first,
    says the others did not run, and ends their worker processes."""
    mark = f"rsd-ray-test-sweep-{os.getpid()}"
    proc = subprocess.Popen([sys.executable, "-m", "rsd_ray.cli", "sweep", "--rack", "mini", "--model", "tiny-llama",
                             "--tp", "2", "--grid", "duration_s=1,1,600,600", "--workers", "2", "--out-dir",
                             str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "RSD_RAY_TEST_MARK": mark})
    try:
        time.sleep(8)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 143 and time.monotonic() - t0 < 10, err[-2000:]
        doc = json.loads((tmp_path / "sweep.json").read_text())
        assert doc["status"] == "interrupted" and "SIGTERM" in doc["reason"]
        assert [r.get("error", "ran") for r in doc["rows"]] == ["ran", "ran"] + ["not run: interrupted (SIGTERM)"] * 2
        assert "Traceback" not in err and not marked(mark)
    finally:
        for pid in marked(mark) | ({proc.pid} if proc.poll() is None else set()):
            os.kill(pid, signal.SIGKILL)
