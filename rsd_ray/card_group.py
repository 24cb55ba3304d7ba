"""The cards of one instance, as the host sees them: one fan-out per step.

``LocalCardGroup`` holds plain ``Card`` objects (inline executor). The Ray
executor's group (``rsd_ray.actors.card_group``) answers the same calls with
card actors. Callers never branch on which.
"""
from __future__ import annotations

import numpy as np

from rsd_ray.card import Card, CardFrame
from rsd_ray.compiler import MemoryPlan, Program


class LocalCardGroup:
    def __init__(self, card_ids, device, dtype: str):
        self.cards = [Card(c, device, dtype) for c in card_ids]

    def load(self, programs: tuple[Program, ...], memory: MemoryPlan) -> None:
        for card, program in zip(self.cards, programs):
            card.load(program, memory)

    def execute(self, x: np.ndarray, start: float) -> np.ndarray:
        """Every card's compute segments for one step (cards × syncs+1)."""
        return np.vstack([card.execute(x, start) for card in self.cards])

    def frames(self, t: float) -> list[CardFrame]:
        for card in self.cards:
            card.advance_to(t)
        return [card.frame() for card in self.cards]

    def close(self) -> None:
        self.cards = []
