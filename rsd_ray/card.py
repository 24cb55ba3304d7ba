"""The plain card: memory ledger, command engine, virtual clock, power and heat.

The actor of a later issue wraps this class unchanged. A card knows nothing of
its group: it executes its program for a batch shape from a start time and
returns its compute segments; the instance resolves the collectives between.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rsd_ray.compiler import MemoryPlan, Program
from rsd_ray.config import DeviceSpec
from rsd_ray.costmodel import StepCost
from rsd_ray.ledger import MemoryLedger
from rsd_ray.power import ThermalState


@dataclass(frozen=True)
class CardFrame:
    """A card's telemetry, as rbln-smi would show it."""
    card: int
    clock_s: float
    utilisation: float
    memory_used: int
    memory_total: int
    temperature_c: float
    energy_j: float
    power_w: float
    p_state: str
    throttled_s: float
    host_link_bytes: float


class Card:
    def __init__(self, card_id: int, device: DeviceSpec, dtype: str):
        self.card_id, self.device, self.dtype = card_id, device, dtype
        self.ledger = MemoryLedger(f"card{card_id}", device.usable_bytes)
        self.thermal = ThermalState(device)
        self.cost: StepCost | None = None
        self.clock = 0.0          # virtual time up to which energy and heat are accounted
        self.busy_s = 0.0
        self.last_busy_end = 0.0
        self.host_link_bytes = 0.0

    def load(self, program: Program, memory: MemoryPlan) -> None:
        """Allocate the memory plan's regions (fails loudly over budget) and load the program."""
        for region, nbytes in memory.regions.items():
            self.ledger.allocate(region, nbytes)
        self.cost = StepCost(program, self.device, self.dtype)
        self._hdma = self.cost.link.sum(axis=0)

    def execute(self, x: np.ndarray, start: float) -> np.ndarray:
        """Run one step from ``start``; returns compute segments between Device Syncs."""
        self.advance_to(start)
        segments = self.cost.segments(x, self.thermal.clock)
        busy = float(segments.sum())
        self.thermal.run(busy, active=True)
        self.busy_s += busy
        self.clock = self.last_busy_end = start + busy
        self.host_link_bytes += float(self._hdma @ x)
        return segments

    def advance_to(self, t: float) -> None:
        """Account idle time (or waiting at a sync) up to ``t``."""
        if t > self.clock:
            self.thermal.run(t - self.clock, active=False)
            self.clock = t

    def frame(self) -> CardFrame:
        """Telemetry; ``power_w`` is the mean since start (difference energies for a window)."""
        power = self.thermal.energy_j / self.clock if self.clock else self.device.power.idle_w
        return CardFrame(self.card_id, self.clock, self.busy_s / self.clock if self.clock else 0.0,
                         self.ledger.used, self.ledger.budget, self.thermal.temp_c, self.thermal.energy_j, power,
                         self.thermal.p_state(self.clock - self.last_busy_end), self.thermal.throttled_s,
                         self.host_link_bytes)
