"""The package installs with actors/, dashboards/ and cluster_configs/ under rsd_ray, in both install modes."""
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow          # the second tier: Ray, servers, installs, real clients

ROOT = Path(__file__).resolve().parents[1]
CHECK = ("import rsd_ray, rsd_ray.actors, rsd_ray.dashboards.run_report; from rsd_ray.config import presets; "
         "assert 'rsd-rack' in presets('racks'); print(rsd_ray.__file__)")


def test_the_installed_environment_finds_every_part(tmp_path):
    out = subprocess.run([sys.executable, "-c", CHECK], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.strip()


def test_a_normal_install_runs_the_command_line(tmp_path):
    """``pip install .`` (not editable): actors/, dashboards/, cluster_configs/ land under rsd_ray, every
    subpackage is in the wheel, and the CLI starts from it."""
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(ROOT)],
                   check=True, capture_output=True)
    assert not (target / "actors").exists() and not (target / "dashboards").exists()
    assert (target / "rsd_ray" / "cluster_configs" / "racks" / "rsd-rack.yaml").exists()
    # every module of the source tree is in the wheel (an editable install in this venv would otherwise
    # supply a missing one to the checks below)
    source = {p.relative_to(ROOT / "rsd_ray") for p in (ROOT / "rsd_ray").rglob("*.py")}
    installed = {p.relative_to(target / "rsd_ray") for p in (target / "rsd_ray").rglob("*.py")}
    assert not source - installed, sorted(map(str, source - installed))
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", CHECK], cwd=tmp_path, env=env, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip().startswith(str(target))
    for args in (["presets"], ["sweep", "--help"], ["run", "--help"], ["compile", "--rack", "mini", "--model",
                                                                         "tiny-llama", "--tp", "2"]):
        res = subprocess.run([sys.executable, "-m", "rsd_ray.cli", *args], cwd=tmp_path, env=env,
                             capture_output=True, text=True)
        assert res.returncode == 0, (args, res.stderr[-2000:])
    assert "rsd-rack" in subprocess.run([sys.executable, "-m", "rsd_ray.cli", "presets"], cwd=tmp_path, env=env,
                                        capture_output=True, text=True).stdout
