import subprocess
import sys

import pytest
import yaml

from rsd_ray.config import ConfigError, load_part, load_run, presets
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
