"""Card power, a first-order thermal model, and rbln-smi P-states.

Power is ``max_w`` while the card executes commands and ``idle_w`` otherwise
(waiting at a Device Sync counts as idle). Temperature relaxes towards
``ambient + R·P`` with time constant ``tau``; at ``throttle_c`` the card drops
to P10 and runs at ``throttle_clock`` until it cools below the threshold.
"""
from __future__ import annotations

import math

import numpy as np

from rsd_ray.config import DeviceSpec

P_STATES = {"P2": "nominal clock, PCIe Gen5", "P4": "nominal clock, PCIe Gen4", "P6": "half clock, PCIe Gen4",
            "P10": "thermal throttle", "P12": "hang", "P14": "idle"}
IDLE_AFTER_S = 1.0  # no command for this long: the card reports P14


class ThermalState:
    """Energy and temperature of one card, advanced interval by interval."""

    def __init__(self, device: DeviceSpec):
        self.power, self.thermal = device.power, device.thermal
        self.active_state = "P2" if device.pcie_gen >= 5 else "P4"
        self.ambient_c = device.thermal.ambient_c     # the inlet air as it is now (an ambient fault moves it)
        self.temp_c = self.ambient_c
        self.energy_j = 0.0
        self.throttled_s = 0.0

    @property
    def throttled(self) -> bool:
        return self.temp_c >= self.thermal.throttle_c

    @property
    def clock(self) -> float:
        return self.thermal.throttle_clock if self.throttled else 1.0

    def run(self, seconds: float, active: bool) -> None:
        if seconds <= 0:
            return
        watts = self.power.max_w if active else self.power.idle_w
        if self.throttled:
            self.throttled_s += seconds
        self.energy_j += watts * seconds
        steady = self.ambient_c + self.thermal.resistance_c_per_w * watts
        self.temp_c = steady + (self.temp_c - steady) * math.exp(-seconds / self.thermal.tau_s)

    def run_steps(self, idle: np.ndarray, busy: np.ndarray) -> None:
        """``run`` for k (idle, then busy) interval pairs at once, for a card that cannot throttle (its
        ``throttled_s`` cannot grow): the same sums and the same relaxation, interval after interval, so the
        figures are those of ``run`` one by one, however the steps are handed over."""
        seconds = np.column_stack([idle, busy]).reshape(-1)
        watts = np.tile([self.power.idle_w, self.power.max_w], len(idle))
        ran = seconds > 0
        seconds, watts = seconds[ran], watts[ran]
        self.energy_j = float(np.cumsum(np.concatenate(([self.energy_j], watts * seconds)))[-1])
        temp, tau, exp = self.temp_c, self.thermal.tau_s, math.exp
        for steady, s in zip((self.ambient_c + self.thermal.resistance_c_per_w * watts).tolist(), (-seconds).tolist()):
            temp = steady + (temp - steady) * exp(s / tau)     # a scalar loop: np.exp rounds otherwise than math.exp
        self.temp_c = temp

    def p_state(self, idle_for: float, throttled: bool) -> str:
        if throttled:
            return "P10"
        return "P14" if idle_for >= IDLE_AFTER_S else self.active_state
