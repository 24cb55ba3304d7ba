"""The cards of one instance, as the host sees them: one fan-out per step.

``LocalCardGroup`` holds plain ``Card`` objects (inline executor). The Ray
executor's group (``rsd_ray.actors.card_group``) answers the same calls with
card actors. Callers never branch on which.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from rsd_ray.card import Card, CardFrame
from rsd_ray.compiler import MemoryPlan, Program
from rsd_ray.costmodel import StepCost


class CardLost(RuntimeError):
    """A card stopped answering (its actor died, or a fault killed it); raised by card groups,
    caught by the host, which turns it into a ``Failure`` and hands back the instance's requests."""

    def __init__(self, cards, reason: str):
        self.cards, self.reason = tuple(cards), reason
        super().__init__(reason)

    def __reduce__(self):
        return type(self), (self.cards, self.reason)


class LocalCardGroup:
    def __init__(self, card_ids, device, dtype: str, epoch_s: float):
        self.cards = [Card(c, device, dtype, epoch_s) for c in card_ids]
        self.lost: dict[int, CardFrame] = {}      # card id → its last frame, once it died

    def load(self, programs: tuple[Program, ...], memory: MemoryPlan) -> None:
        """Load each rank's program; ranks whose commands cost the same share one cost model."""
        costs: dict = {}
        for card, program in zip(self.cards, programs):
            cost = costs.setdefault(program.commands, StepCost(program, card.device, card.dtype))
            card.load(program, memory, cost)

    def propose(self, shapes: np.ndarray, start: float) -> np.ndarray:
        """Every card's segments for k steps from ``start`` (cards × k × syncs+1)."""
        if self.lost:
            raise CardLost(self.lost, f"card {min(self.lost)} was killed")
        memo: dict = {}
        return np.stack([card.propose(shapes, start, memo) for card in self.cards])

    def kill(self, card_id: int, t: float) -> None:
        """A fault: every card accounts up to ``t``, then this one dies; its figures freeze there
        and every later step of the group fails."""
        frames = {f.card: f for f in self.frames(t)}
        self.lost[card_id] = dataclasses.replace(frames[card_id], lost=True)

    def accept(self, starts: list[float]) -> None:
        """The first ``len(starts)`` proposed steps ran, from these times."""
        for card in self.cards:
            card.accept(starts)

    def frames(self, t: float) -> list[CardFrame]:
        for card in self.cards:
            if card.card_id not in self.lost:
                card.advance_to(t)
        return [self.lost.get(card.card_id) or card.frame() for card in self.cards]

    def close(self) -> None:
        self.cards = []
