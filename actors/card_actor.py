"""CardActor: one ATOM card in its own process, wrapping the plain ``Card``.

Lean on purpose: it imports the card, its cost model and numpy/msgpack, never
rich, aiohttp or grpc. ``step`` takes one argument so it can sit in a
compiled graph; it first accepts the steps of the previous proposal that ran
(piggybacked, so a step or span costs one round trip), then proposes anew.
"""
from __future__ import annotations

import os
import sys

import ray

from rsd_ray.card import Card
from rsd_ray.compiler.program import Program

HEAVY_MODULES = ("rich", "aiohttp", "grpc", "matplotlib")


@ray.remote(num_cpus=0)
class CardActor:
    def __init__(self, card_id: int, device, dtype: str, epoch_s: float):
        self.card = Card(card_id, device, dtype, epoch_s)

    def load(self, program: bytes, memory) -> int:
        """Load a msgpack program and allocate its memory plan; returns bytes held."""
        self.card.load(Program.from_msgpack(program), memory)
        return self.card.ledger.used

    def step(self, message):
        accepted, shapes, start = message
        if accepted is not None:
            self.card.accept(accepted)
        return self.card.propose(shapes, start)

    def frame(self, t: float, accepted=None):
        if accepted is not None:
            self.card.accept(accepted)
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
