"""The cards of one instance, as the host sees them: one fan-out per step.

``LocalCardGroup`` holds plain ``Card`` objects (inline executor). The Ray
executor's group (``rsd_ray.actors.card_group``) answers the same calls with
card actors. Callers never branch on which.
"""
from __future__ import annotations

import numpy as np

from rsd_ray.card import Card, CardFrame
from rsd_ray.compiler import MemoryPlan, Program
from rsd_ray.costmodel import StepCost


class LocalCardGroup:
    def __init__(self, card_ids, device, dtype: str, epoch_s: float):
        self.cards = [Card(c, device, dtype, epoch_s) for c in card_ids]

    def load(self, programs: tuple[Program, ...], memory: MemoryPlan) -> None:
        """Load each rank's program; ranks whose commands cost the same share one cost model."""
        costs: dict = {}
        for card, program in zip(self.cards, programs):
            cost = costs.setdefault(program.commands, StepCost(program, card.device, card.dtype))
            card.load(program, memory, cost)

    def propose(self, shapes: np.ndarray, start: float) -> np.ndarray:
        """Every card's segments for k steps from ``start`` (cards × k × syncs+1)."""
        memo: dict = {}
        return np.stack([card.propose(shapes, start, memo) for card in self.cards])

    def accept(self, starts: list[float]) -> None:
        """The first ``len(starts)`` proposed steps ran, from these times."""
        for card in self.cards:
            card.accept(starts)

    def frames(self, t: float) -> list[CardFrame]:
        for card in self.cards:
            card.advance_to(t)
        return [card.frame() for card in self.cards]

    def close(self) -> None:
        self.cards = []
