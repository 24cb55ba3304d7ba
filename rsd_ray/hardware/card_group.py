"""The cards of one instance, as the host sees them.

The host prices every step with each card's cost model at the card's clock
factor for this epoch (``propose``), so a step costs no call to a card. Once
per epoch (lazily, when the instance first runs a step in it) the group
``sync``s: it hands each card the steps it ran since the last sync and reads
its governor's clock factor for the new epoch. ``LocalCardGroup`` holds plain
``Card`` objects (inline executor); the Ray executor's group
(``rsd_ray.actors.card_group``) does the same sync with card actors. Callers
never branch on which.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from rsd_ray.hardware.card import ABORTED_CLOCK, Card, CardFrame
from rsd_ray.compiler import MemoryPlan, Program
from rsd_ray.hardware.costmodel import StepCost


def shared_cost(costs: dict, program: Program, device, dtype: str) -> StepCost:
    """One cost model per distinct program (held in ``costs``), so groups that run the same commands
    are priced together. Each program object's commands are compared once (hashing them is slow)."""
    seen = costs.get(id(program))
    if seen is None:
        if program.commands not in costs:
            costs[program.commands] = StepCost(program, device, dtype)
        seen = costs[id(program)] = (program, costs[program.commands])   # holding the program keeps its id
    return seen[1]


def slowest(pricing: tuple, shapes: np.ndarray) -> tuple[np.ndarray, dict]:
    """A group's k steps as its slowest card runs them: each step's segments (k × syncs+1, the largest of
    every card's, as a collective waits for its last participant) and each step's busy seconds per
    (cost model id, clock factor), for the cards' accounts. ``pricing``: the group's distinct
    (cost model, clock factor) pairs (``CardGroup.ready``)."""
    parts = [cost.segments(shapes, factor) for cost, factor in pricing]
    busy = {(id(cost), factor): part.sum(axis=1) for (cost, factor), part in zip(pricing, parts)}
    return np.max(parts, axis=0), busy


class CardLost(RuntimeError):
    """A card stopped answering (its actor died, or a fault killed it); raised by card groups,
    caught by the host, which turns it into a ``Failure`` and hands back the instance's requests."""

    def __init__(self, cards, reason: str):
        self.cards, self.reason = tuple(cards), reason
        super().__init__(reason)

    def __reduce__(self):
        return type(self), (self.cards, self.reason)


class CardGroup:
    """What both kinds of group share: pricing steps, buffering accepted ones, one sync per epoch.
    Subclasses give ``card_ids``, ``costs`` (one StepCost per card) and ``_sync``."""
    card_ids: list[int]
    costs: list[StepCost]

    def __init__(self):
        self.card_ids: list[int] = []           # in rank order (set by each kind of group)
        self.factors: list[float] = []          # each card's clock factor this epoch
        self.epoch_start: float | None = None   # the epoch to sync for before the next step
        self.starts: list[float] = []           # steps run since the last sync
        self.shapes: list[np.ndarray] = []
        self.busy: list[dict | None] = []       # per accepted batch: (cost model id, clock) → each step's busy s
        self.lost: dict[int, CardFrame] = {}    # card id → its last frame, once it died
        self.pricing: tuple = ()                # distinct (cost model, clock factor) of the cards, this epoch

    def begin_epoch(self, t: float) -> None:
        self.epoch_start = t

    def _take_steps(self) -> tuple[list[float], np.ndarray, dict | None]:
        """The steps run since the last sync: starts, shapes, and (when every batch came with it) each
        step's busy seconds per (cost model id, clock factor), so the cards need not price them again."""
        starts, parts, busy = self.starts, self.shapes, None
        shapes = parts[0] if len(parts) == 1 else np.vstack(parts) if parts else np.zeros((0, 5))
        if len(self.busy) == 1:
            busy = self.busy[0]
        elif self.busy and all(b is not None for b in self.busy):
            busy = {key: np.concatenate([b[key] for b in self.busy]) for key in self.busy[0]}
        self.starts, self.shapes, self.busy = [], [], []
        return starts, shapes, busy

    def ready(self, start: float) -> tuple:
        """Sync if this epoch has not yet; the distinct (cost model, clock factor) pairs of the cards,
        which price a step from ``start`` (a group's step waits for the slowest of them)."""
        if self.lost:
            raise CardLost(self.lost, f"card {min(self.lost)} is lost")
        if self.epoch_start is None and not self.factors:     # never synced: the epoch starts here
            self.epoch_start = start
        if self.epoch_start is not None:
            t, self.epoch_start = self.epoch_start, None
            self.factors = self._sync(t, *self._take_steps())
            hot = [c for c, factor in zip(self.card_ids, self.factors) if factor == ABORTED_CLOCK]
            if hot:                                    # thermal runaway: the card aborts, its group fails
                for card in hot:
                    self.kill(card, t)
                raise CardLost(hot, f"card {hot[0]} reached its abort temperature")
            self.pricing = tuple(dict.fromkeys(zip(self.costs, self.factors)))
        return self.pricing

    def propose(self, shapes: np.ndarray, start: float) -> np.ndarray:
        """The slowest card's segments for k steps from ``start`` (k × syncs+1)."""
        return slowest(self.ready(start), shapes)[0]

    def accept(self, starts: list[float], shapes: np.ndarray, busy: dict | None = None) -> None:
        """The first ``len(starts)`` proposed steps ran, from these times (told to the cards at the next sync);
        ``busy``: their busy seconds per (cost model id, clock factor), when the caller priced them."""
        self.starts += list(starts)
        self.shapes.append(shapes[:len(starts)])
        self.busy.append(busy)


class LocalCardGroup(CardGroup):
    def __init__(self, card_ids, device, dtype: str, epoch_s: float):
        super().__init__()
        self.cards = [Card(c, device, dtype, epoch_s) for c in card_ids]
        self.card_ids = list(card_ids)

    @property
    def costs(self) -> list[StepCost]:
        """Each card's own cost model: inline, the cards themselves price the steps."""
        return [card.cost for card in self.cards]

    def load(self, programs: tuple[Program, ...], memory: MemoryPlan, costs: dict | None = None) -> None:
        """Load each rank's program; ranks (and, given one ``costs`` dict, groups) whose commands cost
        the same share one cost model."""
        costs = {} if costs is None else costs
        for card, program in zip(self.cards, programs):
            card.load(program, memory, shared_cost(costs, program, card.device, card.dtype))

    def _account(self, starts, shapes, busy, cards, t: float, sample: bool) -> None:
        """Hand the steps to the cards, then bring each to ``t`` (sampling its governor there, for a
        sync). The cards of a group usually share a state and a cost model, so they end in the same
        state: it is worked out once and copied."""
        done: dict = {}
        for card in cards:
            key = (id(card.cost), card.state())
            if key in done:
                card.set_state(done[key])
                continue
            card.accept(starts, shapes, busy.get((id(card.cost), card.clock_factor)) if busy else None)
            if sample:
                card.sample(t)
            else:
                card.advance_to(t)
            done[key] = card.state()

    def _sync(self, t: float, starts, shapes, busy) -> list[float]:
        self._account(starts, shapes, busy, self.cards, t, sample=True)
        return [card.clock_factor for card in self.cards]

    def kill(self, card_id: int, t: float) -> None:
        """A fault: every card accounts up to ``t``, then this one dies; its figures freeze there
        and every later step of the group fails."""
        frames = {f.card: f for f in self.frames(t)}
        self.lost[card_id] = dataclasses.replace(frames[card_id], lost=True)

    def restart(self, card_ids, t: float) -> None:
        """The lost cards are back at ``t`` (``--recover``), their programs still loaded."""
        for card in self.cards:
            if card.card_id in card_ids:
                card.restart(t)
                self.lost.pop(card.card_id, None)
        self.factors = []

    def set_ambient(self, card_id: int, delta_c: float) -> None:
        next(card for card in self.cards if card.card_id == card_id).set_ambient(delta_c)

    def frames(self, t: float) -> list[CardFrame]:
        alive = [card for card in self.cards if card.card_id not in self.lost]
        self._account(*self._take_steps(), alive, t, sample=False)
        return [self.lost.get(card.card_id) or card.frame() for card in self.cards]

    def close(self) -> None:
        self.cards = []
