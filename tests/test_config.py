import dataclasses
import subprocess
import sys

import pydantic
import pytest
import yaml

from rsd_ray.config import ConfigError, load_part, load_run, presets, replace
from rsd_ray.sweep import apply
from rsd_ray.config.loader import CONFIG_ROOT


def write(tmp_path, name, data):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_every_shipped_preset_loads():
    for kind in ("devices", "racks", "models", "engines", "routers", "workloads"):
        assert presets(kind), kind
        for name in presets(kind):
            load_part(kind, name, "test")


def test_atom_profile_carries_design_numbers():
    atom = load_part("devices", "atom", "test")
    assert atom.peak_tflops["fp16"] == 32 and atom.peak_tflops["int8"] == 128 and atom.peak_tflops["int4"] == 256
    assert atom.usable_bytes == 16 * 1024 ** 3 - 288 * 1024 ** 2
    assert atom.link.bandwidth_gbps == 64 and atom.thermal.throttle_c == 75 and atom.thermal.abort_c == 85
    assert load_part("devices", "atom-max", "test").estimated


def test_rsd_rack_is_224_cards():
    rack = load_part("racks", "rsd-rack", "test")
    assert rack.servers * rack.cards_per_server == 224


def test_unknown_field_names_file_field_and_suggestion(tmp_path):
    path = write(tmp_path, "engine.yaml", {"max_num_seq": 4})
    with pytest.raises(ConfigError) as err:
        load_part("engines", str(path), "test")
    msg = str(err.value)
    assert str(path) in msg and "max_num_seq" in msg and "did you mean 'max_num_seqs'" in msg


def test_out_of_range_value_says_the_bound(tmp_path):
    path = write(tmp_path, "engine.yaml", {"max_num_seqs": 0})
    with pytest.raises(ConfigError, match=r"max_num_seqs = 0 — must be ≥ 1"):
        load_part("engines", str(path), "test")


def test_a_token_budget_below_the_batch_is_refused_as_vllm_refuses_it(tmp_path):
    """vLLM's SchedulerConfig: max_num_batched_tokens must be ≥ max_num_seqs (a step has a token for each
    sequence it runs); on the command line the error names the flag. Equal is fine."""
    path = write(tmp_path, "engine.yaml", {"max_num_seqs": 64, "max_num_batched_tokens": 63})
    with pytest.raises(ConfigError, match=r"engine\.yaml: max_num_batched_tokens = 63 — .*max_num_seqs \(64\)"):
        load_part("engines", str(path), "test")
    equal = write(tmp_path, "ok.yaml", {"max_num_seqs": 64, "max_num_batched_tokens": 64})
    assert load_part("engines", str(equal), "test").max_num_batched_tokens == 64
    from rsd_ray.cli import _spec, parser

    def spec(*flags):
        return _spec(parser("run").parse_args(["run", *flags]))
    with pytest.raises(ConfigError, match=r"--max-num-batched-tokens: max_num_batched_tokens = 1 — .*\(256\)"):
        spec("--max-num-batched-tokens", "1")
    both = spec("--max-num-seqs", "4096", "--max-num-batched-tokens", "4096").engine     # checked together
    assert (both.max_num_seqs, both.max_num_batched_tokens) == (4096, 4096)
    with pytest.raises(ConfigError, match=r"<defaults> and the command line: max_num_batched_tokens = 2048 — "
                                          r".*or lower max_num_seqs"):
        spec("--max-num-seqs", "4096")


def test_a_workspace_no_card_holds_blames_the_engine_not_the_tp():
    """10^8 sequences' logits and tokens a step need a workspace larger than any card at any TP: the
    refusal says so and names the engine fields, not a TP or the context length."""
    from rsd_ray.compiler.memory import plan_memory
    spec = load_run(None, rack="mini", model="tiny-llama", tp=2,
                    engine={"max_num_seqs": 10 ** 8, "max_num_batched_tokens": 10 ** 8})
    with pytest.raises(ConfigError, match=r"the workspace alone takes [0-9.]+ GiB a card; lower engine\.max_num_seqs "
                                          r"\(100,000,000\) or engine\.max_num_batched_tokens"):
        plan_memory(spec.model, spec.tp, spec.device, spec.engine)


def test_hardware_numbers_need_a_source(tmp_path):
    data = yaml.safe_load(open(CONFIG_ROOT / "devices" / "atom.yaml"))
    del data["sources"]["dram_bandwidth_gbps"]
    path = write(tmp_path, "dev.yaml", data)
    with pytest.raises(ConfigError, match="dram_bandwidth_gbps = 256 — add a 'sources"):
        load_part("devices", str(path), "test")


def test_tp_must_divide_heads():
    with pytest.raises(ConfigError, match=r"tp = 3 — .*tp must divide both: \[1, 2, 4, 8"):
        load_run(None, rack="atom-server", tp=3)


def test_unknown_preset_lists_the_presets():
    with pytest.raises(ConfigError, match="presets: .*llama3-8b"):
        load_run(None, model="llama-9000")


def test_user_device_profile_for_another_accelerator(tmp_path, spec_factory):
    """A user's own accelerator: twice the bandwidth and FLOPS of ATOM runs faster."""
    data = yaml.safe_load(open(CONFIG_ROOT / "devices" / "atom.yaml"))
    data.update(name="fast", peak_tflops={"fp16": 64}, dram_bandwidth_gbps=512)
    dev = write(tmp_path, "fast.yaml", data)
    rack = yaml.safe_load(open(CONFIG_ROOT / "racks" / "mini.yaml"))
    rack["device"] = str(dev)
    rack_path = write(tmp_path, "rack.yaml", rack)
    from tests.conftest import run_doc
    fast, _ = run_doc(spec_factory(rack=str(rack_path)))
    slow, _ = run_doc(spec_factory())
    assert fast["config"]["device"]["name"] == "fast"
    assert fast["summary"]["mean_tpot_ms"] < slow["summary"]["mean_tpot_ms"]


def test_cli_config_error_exits_2_with_the_field():
    res = subprocess.run([sys.executable, "-m", "rsd_ray.cli", "run", "--tp", "3", "--no-progress"],
                         capture_output=True, text=True)
    assert res.returncode == 2
    assert "tp = 3" in res.stderr and "must divide" in res.stderr


# --- the specs are pydantic v2 models: frozen, strict, checked whenever built --------------------------

def test_a_spec_is_frozen_and_a_changed_copy_is_checked_again():
    spec = load_run(None, rack="mini", model="tiny-llama", tp=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.engine.max_num_seqs = 0
    with pytest.raises(pydantic.ValidationError):
        dataclasses.replace(spec.engine, max_num_seqs=0)             # the validating __init__ runs again
    with pytest.raises(ConfigError, match=r"^sweep: tp = 3 — tiny-llama has 8 heads"):
        replace(spec, "sweep", tp=3)                                 # a rule across parts, on a copy
    with pytest.raises(ConfigError, match=r"^here: epoch_s = 0.05 — must not exceed duration_s \(0.01\)"):
        replace(spec, "here", duration_s=0.01)
    assert replace(spec, "here", tp=4).tp == 4 and spec.tp == 2


@pytest.mark.parametrize("field,value,says", [
    ("max_num_seqs", "64", "max_num_seqs = '64' — expected an integer"),       # YAML text is not a number
    ("max_num_seqs", True, "max_num_seqs = True — expected an integer"),       # nor is a YAML boolean
    ("max_num_seqs", 4.5, "max_num_seqs = 4.5 — expected an integer"),
    ("kv_cache_fraction", float("inf"), "kv_cache_fraction = inf — must be a finite number"),
    ("kv_cache_fraction", 1.5, "kv_cache_fraction = 1.5 — must be ≤ 1.0"),
    ("enable_chunked_prefill", 1, "enable_chunked_prefill = 1 — expected true or false"),
    ("admission", "evict", "admission = 'evict' — choose one of: preempt, reserve"),
    ("max_num_seq", 4, "max_num_seq = 4 — unknown field; did you mean 'max_num_seqs'?"),
])
def test_each_kind_of_bad_value_keeps_the_file_field_value_fix_form(field, value, says, tmp_path):
    path = write(tmp_path, "engine.yaml", {field: value})
    with pytest.raises(ConfigError) as err:
        load_part("engines", str(path), "test")
    assert str(err.value).startswith(f"{path}: {says}"), str(err.value)


def test_a_cross_field_rule_names_the_nested_field_it_blames(tmp_path):
    rack = yaml.safe_load(open(CONFIG_ROOT / "racks" / "mini.yaml"))
    rack["switches_per_server"] = 3                                  # 4 cards cannot hang off 3 switches evenly
    with pytest.raises(ConfigError, match=r"switches_per_server = 3 — must divide cards_per_server \(4\)"):
        load_part("racks", str(write(tmp_path, "rack.yaml", rack)), "test")
    run = {"rack": "mini", "model": "tiny-llama", "tp": 2, "workload": {"input": {"dist": "normal"}}}
    with pytest.raises(ConfigError, match=r"workload.input.dist = 'normal' — choose one of: fixed, uniform"):
        load_run(run)
    run["workload"] = {"arrival": "trace", "trace": {"format": "azure", "path": "x.csv", "start_s": 5, "end_s": 2}}
    with pytest.raises(ConfigError, match=r"workload.trace.end_s = 2.0 — must be after start_s \(5.0\)"):
        load_run(run)


def test_a_sweep_point_is_checked_once_whole_not_field_by_field():
    closed = load_run(None, rack="mini", model="tiny-llama", tp=2)
    spec = apply(closed, {"workload.arrival": "poisson", "workload.rate": 5.0})   # poisson without its rate
    assert (spec.workload.arrival, spec.workload.rate) == ("poisson", 5.0)         # ... is never checked alone
    spec = apply(closed, {"tp": 8, "rack": "atom-server"})          # tp 8 on the 4-card mini: never checked
    assert (spec.tp, spec.rack.name, spec.device.name) == (8, "atom-server", "atom")
    link = apply(closed, {"device.link.bandwidth_gbps": 32.0}).device.link
    assert (link.name, link.latency_us, link.bandwidth_gbps) == (closed.device.link.name,
                                                                 closed.device.link.latency_us, 32.0)
