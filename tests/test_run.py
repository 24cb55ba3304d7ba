import dataclasses
import json
import subprocess
import sys

import pytest

from rsd_ray.config import LengthSpec, load_part, load_run
from rsd_ray.config.loader import presets
from rsd_ray.rack.controller import Controller
from rsd_ray.report.results import build, without_wall_clock
from tests.conftest import accounted, make_spec, run_doc, with_token_times


def test_same_config_and_seed_give_identical_results():
    spec = load_run(None, rack="mini", model="tiny-llama", tp=2, duration_s=3.0, workload="poisson",
                    router={"policy": "power_of_two"}, seed=7)
    a, b = (with_token_times(*run_doc(spec)) for _ in range(2))
    assert without_wall_clock(a) == without_wall_clock(b)
    c, _ = run_doc(load_run(None, rack="mini", model="tiny-llama", tp=2, duration_s=3.0, workload="poisson",
                            router={"policy": "power_of_two"}, seed=8))
    assert without_wall_clock(a)["summary"] != without_wall_clock(c)["summary"]


def test_a_run_paces_the_garbage_collector_and_gives_the_callers_pace_back():
    import gc

    from rsd_ray.rack.gc_pace import RUN_THRESHOLDS
    caller, before = (900, 11, 12), gc.get_threshold()
    gc.set_threshold(*caller)
    seen = []

    def sink(out, in_flight):
        seen.append(gc.get_threshold())
    try:
        Controller(make_spec(duration_s=0.2)).run([sink])
        assert seen and set(seen) == {RUN_THRESHOLDS} and gc.get_threshold() == caller
    finally:
        gc.set_threshold(*before)


def test_fourteen_servers_scale_linearly_under_proportional_load():
    one, _ = run_doc(make_spec(rack="atom-server", model="llama3-8b", tp=4, duration_s=10.0))
    rack, _ = run_doc(make_spec(rack="rsd-rack", model="llama3-8b", tp=4, duration_s=10.0))
    assert rack["emulator"]["cards"] == 224
    ratio = rack["summary"]["window_output_throughput"] / one["summary"]["window_output_throughput"]
    assert ratio >= 13.5


BOUND_TP = {"atom-server": 4, "rsd-rack": 4, "l40s-server": 1, "h100-single": 1}   # the others: TP 2
RACK_OF_DEVICE = {load_part("racks", r, "test").device: r for r in presets("racks")}


FORMATS = [(q, "auto") for q in ("w8a16", "w4a16", "w8a8", "fp8")] + [("none", "fp8")]


@pytest.mark.parametrize("rack,device,quant,kv", [(r, None, "none", "auto") for r in presets("racks")] +
                         [(RACK_OF_DEVICE.get(d, "atom-server"), d, "none", "auto") for d in presets("devices")
                          if d not in RACK_OF_DEVICE] +
                         [("atom-server", None, q, kv) for q, kv in FORMATS] + [("h100-single", None, "fp8", "fp8")])
def test_decode_never_beats_dram_bandwidth_or_peak_flops(rack, device, quant, kv):
    """Bounds from the architecture numbers and the device sheet alone, not the cost model: on every rack
    preset, every device preset no rack names (in an ATOM server), and every weight and KV format. A
    quantised weight is at least its format's bytes (scales not counted) and no product runs faster than
    the device's fastest units."""
    spec = make_spec(rack=rack, model="llama3-8b", tp=BOUND_TP.get(rack, 2), duration_s=4.0,
                     workload={"concurrency": 256, "per_server": False, "input": LengthSpec(mean=32),
                               "output": LengthSpec(mean=300)}, engine={"kv_cache_dtype": kv})
    spec = dataclasses.replace(spec, model=dataclasses.replace(spec.model, quantization=quant))
    if device:
        spec = dataclasses.replace(spec, device=load_part("devices", device, "test"))
    m, dev, tp = spec.model, spec.device, spec.tp
    h, inter, kv_dim = m.hidden_size, m.intermediate_size, m.num_kv_heads * m.hidden_size // m.num_heads
    layer_params = h * h * 2 + 2 * h * kv_dim + 3 * h * inter
    width = {"none": 2, "w8a16": 1, "w4a16": 0.5, "w8a8": 1, "fp8": 1}[quant]
    card_weight_bytes = (width * m.num_layers * layer_params + 2 * m.vocab_size * h) / tp
    kv_bytes_per_token = 2 * m.num_layers * kv_dim / tp * (2 if kv == "auto" else 1)
    bandwidth, peak = dev.dram_bandwidth_gbps * 1e9, max(dev.peak_tflops.values()) * 1e12
    from tests.test_engine import traced_run
    doc, _, steps = traced_run(spec)
    decode_steps = [(t1 - t0, x) for _, t0, t1, x in steps if x[1] == x[2]]   # every token samples: pure decode
    assert len(decode_steps) > 100
    for dt, x in decode_steps:
        tokens_per_s = x[2] / dt
        assert tokens_per_s <= x[2] * bandwidth / (card_weight_bytes + x[4] * kv_bytes_per_token)
        assert tokens_per_s <= peak / (2 * m.num_layers * layer_params / tp)
    for key in ("window_output_throughput", "output_throughput"):   # 256 clients: at most 256 tokens per weight pass
        assert doc["summary"][key] <= 256 * bandwidth / card_weight_bytes
    assert all(c["memory_used"] <= c["memory_total"] for c in doc["cards"])


def test_no_link_or_card_is_busier_than_the_time_it_ran():
    """Slow card links and layer pipelining: steps a second long, the last ones ending after the run's
    last epoch. Their bytes count, so the time they cover must too: utilisation never passes 1."""
    spec = load_run(None, rack="atom-server", duration_s=2.0, compiler={"pipeline_chunks": 4})
    slow = dataclasses.replace(spec.device.link, bandwidth_gbps=0.5)
    doc = build(Controller(dataclasses.replace(spec, device=dataclasses.replace(spec.device, link=slow))).run())
    busiest = max(link["utilisation"] for link in doc["links"])
    assert 0.9 < busiest <= 1.0
    assert all(0.0 <= c["utilisation"] <= 1.0 for c in doc["cards"])


def test_overload_is_refused_and_nothing_accepted_is_lost():
    doc, outcome = run_doc(make_spec(workload={"arrival": "poisson", "rate": 3000.0, "per_server": False},
                                     router={"policy": "round_robin", "max_pending_per_instance": 8},
                                     duration_s=1.0, drain_s=0.0))
    req = doc["requests"]
    assert req["refused"] > 0
    assert accounted(doc) and req["errored"] == 0
    assert req["unfinished"] > 0                      # no drain: in-flight ones; they are reported, not lost
    assert len({r.rid for r in outcome.records}) == req["accepted"]


def test_results_document_has_the_figures():
    doc, _ = run_doc(make_spec())
    s = doc["summary"]
    for key in ("request_throughput", "output_throughput", "total_token_throughput", "window_output_throughput",
                "mean_ttft_ms",
                "median_tpot_ms", "p90_itl_ms", "p99_e2el_ms", "rack_power_w", "server_power_w",
                "card_power_w", "energy_j", "output_tokens_per_s_per_watt"):
        assert key in s and s[key] > 0, key
    assert doc["schema"] == "rsd-ray/run/v1"
    assert len(doc["cards"]) == 8 and len(doc["servers"]) == 2
    assert {c["p_state"] for c in doc["cards"]} <= {"P2", "P14"}
    assert any(l["bytes"] > 0 for l in doc["links"] if l["link"].startswith("card"))
    assert s["card_power_w"] * 8 + 2 * 400 + 400 == pytest.approx(s["rack_power_w"])


def test_price_gives_tokens_per_dollar(tmp_path):
    import yaml
    from rsd_ray.config.loader import CONFIG_ROOT
    rack = yaml.safe_load(open(CONFIG_ROOT / "racks" / "mini.yaml"))
    rack["price"] = {"card_usd_per_hour": 1.0, "server_usd_per_hour": 2.0, "usd_per_kwh": 0.1}
    rack["sources"]["price"] = "test prices"
    path = tmp_path / "rack.yaml"
    path.write_text(yaml.safe_dump(rack))
    doc, _ = run_doc(make_spec(rack=str(path)))
    s = doc["summary"]
    assert s["usd_per_hour"] == pytest.approx(8 + 4 + s["rack_power_w"] / 1000 * 0.1)
    assert s["output_tokens_per_usd"] == pytest.approx(s["window_output_throughput"] * 3600 / s["usd_per_hour"])


def test_cli_runs_the_224_card_rack_inline():
    res = subprocess.run([sys.executable, "-m", "rsd_ray.cli", "run", "--executor", "inline", "--rack", "rsd-rack",
                          "--duration", "2", "--json", "--no-progress"], capture_output=True, text=True, check=True)
    doc = json.loads(res.stdout)
    assert len(doc["cards"]) == 224 and len(doc["servers"]) == 14
    assert doc["summary"]["output_throughput"] > 0 and doc["emulator"]["instances"] == 56


def test_cli_compile_prints_the_plan():
    res = subprocess.run([sys.executable, "-m", "rsd_ray.cli", "compile", "--model", "llama3-8b", "--tp", "4",
                          "--rack", "atom-server", "--json"], capture_output=True, text=True, check=True)
    d = json.loads(res.stdout)
    assert d["placement"]["instances"] == 4 and d["memory"]["weights"] < d["memory"]["budget"]
    assert {"neural_engine", "device_sync", "external_hdma", "task_dma", "host"} == set(d["commands"])
    assert all(s["link_bytes"] for s in d["steps"])
