"""The README's `ray up` loop, end to end, with cluster_configs/ray/laptop.yaml.

tests/ray_up_loop.sh runs inside private PID, mount and network namespaces (loopback only, its own /tmp,
/run and home), so it can touch nothing else on the machine: sshd on 127.0.0.1, `ray up -y`, a run on
the head and a joined run (token authentication), `ray status`, `ray down -y`, and no raylet or
gcs_server left. The head installs the project from a wheelhouse made here, as the network is gone.
Needs root, `unshare`, sshd and rsync (.ci/run installs openssh-server and rsync).
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow          # the second tier: Ray, servers, installs, real clients

REPO = Path(__file__).resolve().parent.parent
LOOP = REPO / "tests" / "ray_up_loop.sh"
NEEDS = ("unshare", "rsync", "ssh", "ssh-keygen", "ip", "pgrep")


def _missing() -> str:
    if os.geteuid() != 0:
        return "needs root (private namespaces and sshd)"
    absent = [tool for tool in NEEDS if shutil.which(tool) is None] + [
        "sshd" for path in ["/usr/sbin/sshd"] if not os.path.exists(path)]
    return f"needs {', '.join(absent)} (.ci/run installs openssh-server and rsync)" if absent else ""


def _login_python() -> str:
    """The X.Y of `python3` in a login shell with an empty home: the head's venv is made with it."""
    out = subprocess.run(["env", "-i", "HOME=/nonexistent", "bash", "--login", "-c",
                          "python3 -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])'"],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


@pytest.mark.skipif(bool(_missing()), reason=_missing() or "ok")
def test_ray_up_run_and_ray_down_leave_nothing_running(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "-d", str(wheels), "--python-version",
                    _login_python(), "--only-binary=:all:", str(REPO), "setuptools>=69", "wheel"],
                   check=True, capture_output=True, text=True, timeout=600)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}   # this session's Ray sets some
    res = subprocess.run(["unshare", "--pid", "--mount", "--net", "--fork", "--mount-proc", "bash", str(LOOP),
                          str(REPO), str(Path(sys.executable).parent.parent), sys.base_prefix, str(wheels)],
                         capture_output=True, text=True, timeout=900, env=env)
    log = res.stdout + res.stderr
    assert res.returncode == 0, log[-6000:]
    assert "command not found" not in log                         # `ray` is on the login shell's PATH
    assert "rsync_exclude: no .venv, no .git on the head" in log
    assert "head run: completed ray" in log                       # rsd-ray run --address auto on the head
    assert "joined run: completed" in log                          # --address HOST:PORT with the token
    assert "/224.0 atom_card" in log                              # RAY_AUTH_MODE=token ray status
    assert "no raylet or gcs_server left" in log
