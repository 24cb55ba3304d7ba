"""Roofline time of every command of a program on one device profile.

time(command) = max(FLOPs / (peak of its compute type · COMPUTE_EFFICIENCY · clock),
                    DRAM bytes / (bandwidth · device.dram_efficiency))
              + host-link bytes / (PCIe bandwidth · LINK_EFFICIENCY) + latency
              + COMMAND_LAUNCH_S

Coefficients are stacked into matrices once, so a step of any batch shape costs
a handful of vectorised operations; commands between two Device Syncs are
summed into one compute segment. Every layer repeats the same commands, so
only the distinct ones are priced (14 of 296 for Llama 3 8B), and only the
distinct segments (runs of the same commands) are summed, then laid out in
program order; each figure is the same number either way.

Shapes come as rows (k steps × 5 terms) and every operation is elementwise, so
a step's figures are the same bit for bit whether it is evaluated alone, in a
span, or beside other instances' steps.
"""
from __future__ import annotations

import numpy as np

from rsd_ray.calibration import COMMAND_LAUNCH_S, COMPUTE_EFFICIENCY, FP32_SHARE_OF_FP16, LINK_EFFICIENCY
from rsd_ray.compiler.experts import active_fraction
from rsd_ray.compiler.program import DEVICE_SYNC, EXPERT_WEIGHTS, EXTERNAL_HDMA, HOST, Program
from rsd_ray.config import DeviceSpec

def linear(shapes: np.ndarray, coefficients: np.ndarray) -> np.ndarray:
    """(k × 5) shapes · (n × 5) coefficients → (k × n), summed term by term, elementwise (no BLAS),
    so a row never depends on how many shapes were evaluated with it. Coefficients held column-major
    (``np.asfortranarray``) are read a term at a time without a strided copy."""
    out = shapes[:, 0:1] * coefficients[:, 0]
    for j in range(1, shapes.shape[1]):
        out += shapes[:, j:j + 1] * coefficients[:, j]
    return out


def runs_in(device: DeviceSpec, dtype: str) -> str:
    """The type a device computes ``dtype`` in: its own when the device has a peak for it (or fp32, at
    ``FP32_SHARE_OF_FP16`` of fp16), else fp16 — fp8 on ATOM or an A100 is computed in fp16, as vLLM runs
    FP8 checkpoints weight-only on Ampere."""
    return dtype if dtype in device.peak_tflops or dtype == "fp32" else "fp16"


def peak_flops(device: DeviceSpec, dtype: str) -> float:
    """Peak FLOPS of a compute type on a device (``runs_in``). A spec always has an fp16 figure."""
    kind = runs_in(device, dtype)
    if kind in device.peak_tflops:
        return device.peak_tflops[kind] * 1e12
    return device.peak_tflops["fp16"] * FP32_SHARE_OF_FP16 * 1e12


class StepCost:
    """One card's program as arrays: compute segments for any batch shape."""

    def __init__(self, program: Program, device: DeviceSpec):
        work = [c for c in program.commands if c.kind != DEVICE_SYNC]
        peaks = {t: peak_flops(device, t) * COMPUTE_EFFICIENCY for t in {c.compute for c in work}}
        inv_flops = np.array([1.0 / peaks[c.compute] for c in work])
        self.flops = np.array([c.flops for c in work])
        self.dram = np.array([c.dram for c in work])
        self.link = np.array([c.link for c in work])
        on_card = np.array([c.kind != HOST for c in work], dtype=float)
        hdma = np.array([c.kind == EXTERNAL_HDMA for c in work], dtype=float)
        launch = on_card * COMMAND_LAUNCH_S + hdma * device.link.latency_us * 1e-6
        # A mixture of experts reads only the experts some token picked: their weights leave the linear
        # terms and are charged by the step's tokens (``experts.active_fraction``)
        expert = np.array([c.name in EXPERT_WEIGHTS for c in work], dtype=float) * self.dram[:, 0]
        linear_dram = self.dram.copy()
        linear_dram[:, 0] -= expert
        rows = np.hstack([self.flops, linear_dram, self.link, launch[:, None], inv_flops[:, None], expert[:, None]])
        distinct, self.order = np.unique(rows, axis=0, return_inverse=True)   # command k is distinct[order[k]]
        self.order = self.order.reshape(-1)
        self.n = len(distinct)
        stacked = np.vstack([distinct[:, 0:5], distinct[:, 5:10], distinct[:, 10:15]])    # one pass for all three
        self.stacked = np.asfortranarray(stacked)
        self.launch = distinct[:, 15]
        per_type = distinct[:, 16]                     # per distinct command: its compute type's peak
        self.inv_flops = per_type[0] if (per_type == per_type[0]).all() else per_type   # one type: a scalar
        self.expert_bytes = distinct[:, 17]
        self.shares = np.array(program.expert_shares) if expert.any() else None
        self.chunks = program.chunks
        self.inv_dram = 1.0 / (device.dram_bandwidth_gbps * 1e9 * device.dram_efficiency)
        self.inv_link = 1.0 / (device.link.bandwidth_gbps * 1e9 * LINK_EFFICIENCY)
        starts, i = [0], 0
        for c in program.commands:
            if c.kind == DEVICE_SYNC:
                starts.append(i)
            else:
                i += 1
        self.segment_starts = np.array(starts)
        # Every layer's segments hold the same commands: sum each distinct run of commands once (the same
        # values in the same order, so the same sums) and lay the sums out over the program's segments.
        bounds = starts + [len(self.order)]
        runs = [tuple(self.order[a:max(b, a + 1)].tolist()) for a, b in zip(bounds[:-1], bounds[1:])]
        distinct_runs = list(dict.fromkeys(runs))
        self.run_of = np.array([distinct_runs.index(r) for r in runs])
        self.run_commands = np.array([c for r in distinct_runs for c in r])
        self.run_starts = np.cumsum([0] + [len(r) for r in distinct_runs[:-1]])

    def distinct_times(self, shapes: np.ndarray, clock: float = 1.0) -> np.ndarray:
        """(k × distinct commands) seconds for k batch shapes."""
        n, terms = self.n, linear(shapes, self.stacked)
        compute = terms[:, :n] * (self.inv_flops / clock)
        memory = terms[:, n:2 * n] * self.inv_dram
        if self.shares is not None:
            memory += self.expert_bytes * (self.active(shapes) * self.inv_dram)[:, None]
        return np.maximum(compute, memory) + terms[:, 2 * n:] * self.inv_link + self.launch

    def active(self, shapes: np.ndarray) -> np.ndarray:
        """(k,) share of this card's expert weights a step reads: each chunk's tokens pick their experts."""
        return active_fraction(self.shares, shapes[:, 1] / self.chunks)

    def command_times(self, shapes: np.ndarray, clock: float = 1.0) -> np.ndarray:
        """(k × commands) seconds for k batch shapes, in program order."""
        return self.distinct_times(shapes, clock)[:, self.order]

    def segments(self, shapes: np.ndarray, clock: float = 1.0) -> np.ndarray:
        """(k × syncs+1) compute time between consecutive Device Syncs, for k batch shapes: each distinct
        run of commands summed once, in program order (as summing every segment would)."""
        # np.take lays each row out in place, C-contiguous (so a step's segments sum as they always have);
        # a[:, idx] builds the result column-major, and its copy costs ten times more over a span's steps
        times = np.take(self.distinct_times(np.atleast_2d(shapes), clock), self.run_commands, axis=1)
        return np.take(np.add.reduceat(times, self.run_starts, axis=1), self.run_of, axis=1)

    def totals(self, x: np.ndarray) -> dict[str, float]:
        dram = self.dram.dot(x).sum()
        if self.shares is not None:                       # the experts no token picked are not read
            unread = (1.0 - self.active(np.atleast_2d(x))[0]) * x[0]
            dram -= unread * self.expert_bytes[self.order].sum()
        return {"flops": float(self.flops.dot(x).sum()), "dram_bytes": float(dram),
                "host_link_bytes": float(self.link.dot(x).sum())}
