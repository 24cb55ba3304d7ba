"""The plain card: memory ledger, command engine, virtual clock, power and heat.

``CardActor`` wraps this class unchanged. A card knows nothing of its group:
it proposes its compute segments for one step or a span of k steps, the
instance resolves the collectives between and tells it which steps happened
and when (``accept``); only then do energy, heat and utilisation move.

Its clock (P2 or the throttled P10) is set by a governor that samples the
temperature once per epoch, when the first step of a new epoch starts — so a
step's timing depends only on its shape and the epoch, in a span or alone.
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
    lost: bool = False          # the card died; these are its last known figures


class Card:
    def __init__(self, card_id: int, device: DeviceSpec, dtype: str, epoch_s: float = 0.05):
        self.card_id, self.device, self.dtype, self.epoch_s = card_id, device, dtype, epoch_s
        self.ledger = MemoryLedger(f"card{card_id}", device.usable_bytes)
        self.thermal = ThermalState(device)
        self.cost: StepCost | None = None
        self.clock = 0.0          # virtual time up to which energy and heat are accounted
        self.busy_s = 0.0
        self.last_busy_end = 0.0
        self.host_link_bytes = 0.0
        self.governed_epoch, self.clock_factor = -1, 1.0
        self._proposal: tuple[np.ndarray, np.ndarray] | None = None

    def load(self, program: Program, memory: MemoryPlan, cost: StepCost | None = None) -> None:
        """Allocate the memory plan's regions (fails loudly over budget) and load the program.
        ``cost`` may be shared by cards whose programs cost the same (every rank of a group)."""
        for region, nbytes in memory.regions.items():
            self.ledger.allocate(region, nbytes)
        self.cost = cost or StepCost(program, self.device, self.dtype)
        self._hdma = self.cost.link.sum(axis=0)

    def propose(self, shapes: np.ndarray, start: float, memo: dict | None = None) -> np.ndarray:
        """Compute segments (k × syncs+1) of k consecutive steps, the first starting at ``start``.
        ``memo`` lets cards of one process that share a cost model and a clock compute them once."""
        epoch = int(start / self.epoch_s)
        if epoch != self.governed_epoch:
            self.advance_to(start)
            self.governed_epoch, self.clock_factor = epoch, self.thermal.clock
        key = (id(self.cost), self.clock_factor)
        if memo is not None and key in memo:
            segments = memo[key]
        else:
            segments = self.cost.segments(shapes, self.clock_factor)
            if memo is not None:
                memo[key] = segments
        self._proposal = (shapes, segments)
        return segments

    def accept(self, starts) -> None:
        """The first ``len(starts)`` proposed steps ran, from these start times: account them."""
        shapes, segments = self._proposal
        for j, start in enumerate(starts):
            self.advance_to(start)
            busy = float(segments[j].sum())
            self.thermal.run(busy, active=True)
            self.busy_s += busy
            self.clock = self.last_busy_end = start + busy
            self.host_link_bytes += float(self._hdma @ shapes[j])
        self._proposal = None

    def execute(self, x: np.ndarray, start: float) -> np.ndarray:
        """One step from ``start`` (propose and accept); returns its segments."""
        segments = self.propose(np.atleast_2d(x), start)
        self.accept([start])
        return segments[0]

    def advance_to(self, t: float) -> None:
        """Account idle time (or waiting at a sync) up to ``t``."""
        if t > self.clock:
            self.thermal.run(t - self.clock, active=False)
            self.clock = t

    def frame(self) -> CardFrame:
        """Telemetry; ``power_w`` is the mean since start (difference energies for a window)."""
        power = self.thermal.energy_j / self.clock if self.clock else self.device.power.idle_w
        p_state = self.thermal.p_state(self.clock - self.last_busy_end, throttled=self.clock_factor < 1.0)
        return CardFrame(self.card_id, self.clock, self.busy_s / self.clock if self.clock else 0.0,
                         self.ledger.used, self.ledger.budget, self.thermal.temp_c, self.thermal.energy_j, power,
                         p_state, self.thermal.throttled_s,
                         self.host_link_bytes)
