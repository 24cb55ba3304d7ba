"""CardActor: one ATOM card in its own process, wrapping the plain ``Card``.

Lean on purpose: it imports the card, its cost model and numpy/msgpack, never
rich, aiohttp or grpc. It is called when its governor samples (``epoch``: it
accounts the steps the host ran on it since the last call and returns its clock
factor for the new epoch and whether it is steady; one argument, so it can sit
in a compiled graph), when its telemetry is read (``frame``), and between those
to take a long run of steps (``account``) or answer that it is alive (``ping``).
"""
from __future__ import annotations

import os
import sys

import ray

from rsd_ray.hardware.card import Card
from rsd_ray.compiler.program import Program

HEAVY_MODULES = ("rich", "aiohttp", "grpc", "matplotlib")


@ray.remote(num_cpus=0)
class CardActor:
    def __init__(self, card_id: int, device, epoch_s: float):
        self.card = Card(card_id, device, epoch_s)

    def load(self, program: bytes, memory) -> int:
        """Load a msgpack program and allocate its memory plan; returns bytes held."""
        self.card.load(Program.from_msgpack(program), memory)
        return self.card.ledger.used

    def epoch(self, message) -> tuple[float, bool]:
        starts, shapes, t = message
        self.card.accept(starts, shapes)
        return self.card.sample(t), self.card.steady()

    def account(self, starts, shapes) -> None:
        self.card.accept(starts, shapes)

    def ping(self) -> bool:
        return True

    def state(self) -> tuple:
        return self.card.state()

    def restart(self, program: bytes, memory, t: float, state: tuple | None) -> int:
        """This process is the card's new one (``--recover``; Ray restarted the actor): load its program
        again and take up the state the card had when it was lost."""
        used = self.load(program, memory)
        if state is None:                  # the old process crashed: its figures went with it
            self.card.clock = self.card.last_busy_end = t
        self.card.restart(t, state)
        return used

    def set_ambient(self, delta_c: float) -> None:
        self.card.set_ambient(delta_c)

    def frame(self, t: float, starts, shapes):
        self.card.accept(starts, shapes)
        self.card.advance_to(t)
        return self.card.frame()

    def process(self) -> dict:
        """This card's process: pid, proportional memory (PSS), heavy modules loaded."""
        pss = 0
        try:
            with open("/proc/self/smaps_rollup") as fh:
                pss = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("Pss:"))
        except (OSError, StopIteration):
            pass
        return {"card": self.card.card_id, "pid": os.getpid(), "pss_bytes": pss,
                "heavy_modules": sorted(m for m in HEAVY_MODULES if m in sys.modules)}
