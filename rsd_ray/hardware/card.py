"""The plain card: memory ledger, command engine, virtual clock, power and heat.

``CardActor`` wraps this class unchanged. A card knows nothing of its group.
Its clock (P2 or the throttled P10) is set by a governor that samples the
temperature once per epoch, at the epoch's start (``sample``), so a step's
timing is a pure function of its shape and that clock factor: the host prices
its steps with the card's cost model (``segments``) and tells the card which
steps ran and when (``accept``) at the next sample or telemetry; only then do
energy, heat and utilisation move. A card that is ``steady`` (it cannot reach
its throttle temperature in its air) needs no sample, so on Ray a busy card is
called when its telemetry is read, not once per step or per epoch.
"""
from __future__ import annotations

import dataclasses


from dataclasses import dataclass

import numpy as np

from rsd_ray.compiler import MemoryPlan, Program
from rsd_ray.config import DeviceSpec
from rsd_ray.hardware.costmodel import StepCost, linear
from rsd_ray.hardware.ledger import MemoryLedger
from rsd_ray.hardware.power import ThermalState


ABORTED_CLOCK = 0.0
"""The governor's answer for a card at or past its abort temperature: it stops (P12); its group loses it."""


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
    since_s: float = 0.0        # utilisation and power are means over [since_s, clock_s] (0: since the start)


def windowed(before: CardFrame | None, now: CardFrame) -> CardFrame:
    """``now`` with its utilisation and power over the interval since ``before`` (the card's previous frame;
    both as the card gives them, means since the start): what the card does now, as rbln-smi shows it. The
    results keep the means."""
    span = now.clock_s - before.clock_s if before is not None else 0.0
    if span <= 0:
        return now
    busy = now.utilisation * now.clock_s - before.utilisation * before.clock_s
    return dataclasses.replace(now, utilisation=min(1.0, max(0.0, busy / span)),
                               power_w=max(0.0, (now.energy_j - before.energy_j) / span), since_s=before.clock_s)


class Card:
    def __init__(self, card_id: int, device: DeviceSpec, epoch_s: float = 0.05):
        self.card_id, self.device, self.epoch_s = card_id, device, epoch_s
        self.ledger = MemoryLedger(f"card{card_id}", device.usable_bytes)
        self.thermal = ThermalState(device)
        self.cost: StepCost | None = None
        self.clock = 0.0          # virtual time up to which energy and heat are accounted
        self.busy_s = 0.0
        self.last_busy_end = 0.0
        self.host_link_bytes = 0.0
        self.clock_factor = 1.0
        self.sampled_at = -1.0

    def load(self, program: Program, memory: MemoryPlan, cost: StepCost | None = None) -> None:
        """Allocate the memory plan's regions (fails loudly over budget) and load the program.
        ``cost`` may be shared by cards whose programs cost the same (every rank of a group)."""
        for region, nbytes in memory.regions.items():
            self.ledger.allocate(region, nbytes)
        self.cost = cost or StepCost(program, self.device)
        self._hdma = self.cost.link.sum(axis=0)

    def sample(self, t: float) -> float:
        """The governor: the clock factor for the epoch starting at ``t``, from the temperature once
        every step that started before ``t`` is accounted (and the idle time up to ``t``)."""
        self.advance_to(t)
        aborted = self.thermal.temp_c >= self.thermal.thermal.abort_c
        self.clock_factor, self.sampled_at = ABORTED_CLOCK if aborted else self.thermal.clock, t
        return self.clock_factor

    def steady(self) -> bool:
        """Below its throttle temperature and unable to reach it even at full power in its air: its
        temperature only moves towards the steady states of idle and full power, both below, so its
        governor answers full clock until its air changes."""
        th, limits = self.thermal, self.thermal.thermal
        hottest = th.ambient_c + limits.resistance_c_per_w * self.device.power.max_w
        return th.temp_c < limits.throttle_c and hottest < limits.throttle_c

    def busy(self, shapes: np.ndarray) -> np.ndarray:
        """Seconds of compute of each step at this epoch's clock."""
        if self.clock_factor == ABORTED_CLOCK:
            raise RuntimeError(f"card {self.card_id} has aborted at its abort temperature; it runs nothing more")
        return self.cost.segments(shapes, self.clock_factor).sum(axis=1)

    def accept(self, starts, shapes: np.ndarray, busy: np.ndarray | None = None) -> None:
        """These steps ran on this card from these start times, at this epoch's clock: account them, each
        after the idle time before it. A steady card (it cannot throttle) takes them as arrays
        (``ThermalState.run_steps``); one that may throttle, interval by interval, as its P-state may
        change between any two. Either way the figures do not depend on how the steps were handed over.
        ``busy``: each step's busy seconds, as ``Card.busy`` prices them, from a caller that priced them
        already."""
        if not len(starts):
            return
        busy = self.busy(shapes) if busy is None else busy
        hdma = linear(shapes, self._hdma[None, :])[:, 0]
        if not self.steady():
            for start, b, nbytes in zip(starts, busy.tolist(), hdma.tolist()):
                self.advance_to(start)
                self.thermal.run(b, active=True)
                self.busy_s += b
                self.clock = self.last_busy_end = start + b
                self.host_link_bytes += nbytes
            return
        starts = np.asarray(starts, dtype=float)
        ends = starts + busy
        self.thermal.run_steps(starts - np.concatenate(([self.clock], ends[:-1])), busy)
        self.busy_s = float(np.cumsum(np.concatenate(([self.busy_s], busy)))[-1])     # in order, as one by one
        self.host_link_bytes = float(np.cumsum(np.concatenate(([self.host_link_bytes], hdma)))[-1])
        self.clock = self.last_busy_end = float(ends[-1])

    def execute(self, x: np.ndarray, start: float) -> np.ndarray:
        """One step from ``start`` (sampling the governor when a new epoch begins); returns its segments."""
        if int(start / self.epoch_s) != int(self.sampled_at / self.epoch_s) or self.sampled_at < 0:
            self.sample(start)
        shapes = np.atleast_2d(x)
        self.accept([start], shapes)
        return self.cost.segments(shapes, self.clock_factor)[0]

    def advance_to(self, t: float) -> None:
        """Account idle time (or waiting at a sync) up to ``t``."""
        if t > self.clock:
            self.thermal.run(t - self.clock, active=False)
            self.clock = t

    def state(self) -> tuple:
        """Everything ``accept``, ``sample`` and ``advance_to`` read or change: two cards in the same state,
        on the same cost model, given the same steps, end in the same state."""
        th = self.thermal
        return (self.clock, self.busy_s, self.last_busy_end, self.host_link_bytes, self.clock_factor,
                self.sampled_at, th.temp_c, th.energy_j, th.throttled_s, th.ambient_c)

    def set_state(self, state: tuple) -> None:
        th = self.thermal
        (self.clock, self.busy_s, self.last_busy_end, self.host_link_bytes, self.clock_factor,
         self.sampled_at, th.temp_c, th.energy_j, th.throttled_s, th.ambient_c) = state

    def restart(self, t: float, state: tuple | None = None) -> None:
        """Back at ``t`` after a loss (``--recover``), from its own state or ``state``, the one it had at its
        loss (handed to a new card process). It idled in between; its governor starts again at full clock."""
        if state is not None:
            self.set_state(state)
        self.clock_factor, self.sampled_at = 1.0, -1.0
        self.advance_to(t)

    def set_ambient(self, delta_c: float) -> None:
        """A fault: the card's inlet air changes by ``delta_c`` °C from now on."""
        self.thermal.ambient_c += delta_c

    def frame(self) -> CardFrame:
        """Telemetry; ``power_w`` is the mean since start (difference energies for a window)."""
        power = self.thermal.energy_j / self.clock if self.clock else self.device.power.idle_w
        p_state = "P12" if self.clock_factor == ABORTED_CLOCK else \
            self.thermal.p_state(self.clock - self.last_busy_end, throttled=self.clock_factor < 1.0)
        return CardFrame(self.card_id, self.clock, self.busy_s / self.clock if self.clock else 0.0,
                         self.ledger.used, self.ledger.budget, self.thermal.temp_c, self.thermal.energy_j, power,
                         p_state, self.thermal.throttled_s,
                         self.host_link_bytes)
