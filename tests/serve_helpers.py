"""A live `rsd-ray serve` in a subprocess, for the serving tests."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

START_TIMEOUT_S = 120.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(n: int) -> int:
    """The first of ``n`` consecutive free ports (``--instance-ports`` takes BASE..BASE+n-1)."""
    for _ in range(100):
        base, socks = free_port(), []
        try:
            for port in range(base, base + n):
                socks.append(socket.socket())
                socks[-1].bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError(f"no {n} consecutive free ports")


class LiveServer:
    """``rsd-ray serve`` with the given arguments; ``stop()`` sends SIGTERM and returns (exit code, results)."""

    def __init__(self, tmp: Path, *args: str, executor: str = "inline"):
        self.port, self.grpc_port = free_port(), free_port()
        self.out = tmp / "served.json"
        self.log = open(tmp / "serve.log", "w+")
        cmd = [sys.executable, "-m", "rsd_ray.cli", "serve", "--executor", executor, "--port", str(self.port),
               "--grpc-port", str(self.grpc_port), "--out", str(self.out), "--no-progress", "--drain", "20", *args]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT,
                                     preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rsd-ray serve exited {self.proc.returncode}: {self.output()}")
            try:
                if httpx.get(f"{self.base}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.proc.kill()
        raise RuntimeError(f"rsd-ray serve did not answer in {START_TIMEOUT_S} s: {self.output()}")

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def metrics(self) -> dict:
        """Every sample of /metrics, parsed by prometheus_client: {(name, labels...): value}."""
        from prometheus_client.parser import text_string_to_metric_families
        text = httpx.get(f"{self.base}/metrics", timeout=10).text
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    def total(self, name: str, **labels) -> float:
        return sum(v for (n, lab), v in self.metrics().items()
                   if n == name and all(dict(lab).get(k) == w for k, w in labels.items()))

    def stop(self, sig=signal.SIGTERM) -> tuple[int, dict | None]:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        doc = json.loads(self.out.read_text()) if self.out.exists() else None
        return self.proc.returncode, doc


def openai_client(base: str):
    from openai import OpenAI
    return OpenAI(base_url=f"{base}/v1", api_key="none", max_retries=0)


os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")     # LiteLLM must not fetch anything at import
