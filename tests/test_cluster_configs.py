"""The `ray up` launcher files pass Ray's own schema and declare the rack's atom_card resources."""
from pathlib import Path

import pytest
import yaml

from rsd_ray.config import load_part

LAUNCHERS = sorted((Path(__file__).resolve().parents[1] / "cluster_configs" / "ray").glob("*.yaml"))


@pytest.mark.parametrize("path", LAUNCHERS, ids=lambda p: p.stem)
def test_launcher_passes_rays_schema_and_holds_the_rack(path):
    from ray.autoscaler._private.util import prepare_config, validate_config
    config = prepare_config(yaml.safe_load(path.read_text()))
    validate_config(config)
    rack = load_part("racks", "rsd-rack", "test")
    need = rack.servers * rack.cards_per_server
    if config["provider"]["type"] == "local":
        assert any(f'"atom_card": {need}' in cmd for cmd in config["head_start_ray_commands"])
        return
    workers = [t for name, t in config["available_node_types"].items() if name != config["head_node_type"]]
    assert all(t["resources"]["atom_card"] == rack.cards_per_server for t in workers)   # one server per node
    assert sum(t["min_workers"] * t["resources"]["atom_card"] for t in workers) == need


def test_there_is_a_laptop_and_two_clouds():
    assert {p.stem for p in LAUNCHERS} == {"laptop", "aws", "gcp"}
