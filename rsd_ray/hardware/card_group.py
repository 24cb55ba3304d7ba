"""The cards of one instance, as the host sees them.

The host prices every step with each card's cost model at the card's clock
factor for this epoch (``propose``), so a step costs no call to a card. The
governor samples once per epoch of the controller's grid (boundaries at
k · epoch_s), at the start of the first epoch in which the group runs a step:
the group ``sync``s there, handing each card the steps it ran since the last
sync and reading its clock factor. A group whose cards are all ``steady``
(below their throttle temperature and unable to reach it even at full power)
needs no sample — the answer cannot change until their air does — so it syncs
no more: its steps are handed over with the next telemetry (or every
``FLUSH_STEPS``). A card accounts its steps in order whenever it is told them,
so when that happens changes no figure; only a sample or a frame splits its
idle time. ``LocalCardGroup`` holds plain ``Card`` objects (inline executor);
the Ray executor's group (``rsd_ray.actors.card_group``) does the same with card
actors. Callers never branch on which.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from rsd_ray.hardware.card import ABORTED_CLOCK, Card, CardFrame
from rsd_ray.compiler import MemoryPlan, Program
from rsd_ray.hardware.costmodel import StepCost

FLUSH_STEPS = 4096
"""Steps a group buffers before handing them to its cards between syncs (bounds a steady group's memory
and, on Ray, the size of one message); when changes no figure."""


def grid_epoch(t: float, epoch_s: float) -> int:
    """The epoch of the controller's grid that holds ``t``: its boundaries are k · epoch_s, computed as the
    controller computes them, so a time on a boundary belongs to the epoch it starts."""
    k = int(t // epoch_s)
    if (k + 1) * epoch_s <= t:
        return k + 1
    return k - 1 if k * epoch_s > t else k


def shared_cost(costs: dict, program: Program, device) -> StepCost:
    """One cost model per distinct program (held in ``costs``), so groups that run the same commands (and
    hold experts picked alike) are priced together. Each program object's commands are compared once
    (hashing them is slow)."""
    seen = costs.get(id(program))
    if seen is None:
        key = (program.commands, program.expert_shares)
        if key not in costs:
            costs[key] = StepCost(program, device)
        seen = costs[id(program)] = (program, costs[key])   # holding the program keeps its id
    return seen[1]


def slowest(pricing: tuple, shapes: np.ndarray) -> np.ndarray:
    """A group's k steps as its slowest card runs them: each step's segments (k × syncs+1, the largest of
    every card's, as a collective waits for its last participant). ``pricing``: the group's distinct
    (cost model, clock factor) pairs (``CardGroup.ready``)."""
    if len(pricing) == 1:
        cost, factor = pricing[0]
        return cost.segments(shapes, factor)
    return np.max([cost.segments(shapes, factor) for cost, factor in pricing], axis=0)


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

    def __init__(self, epoch_s: float):
        self.card_ids: list[int] = []           # in rank order (set by each kind of group)
        self.epoch_s = epoch_s
        self.factors: list[float] = []          # each card's clock factor this epoch
        self.sampled: int | None = None         # the grid epoch of the governor's last sample (None: never)
        self.steady = False                     # every card steady: the governor's answer cannot change
        self.starts: list[float] = []           # steps run since the last sync
        self.shapes: list[np.ndarray] = []
        self.busy: list[np.ndarray | None] = []  # each batch's busy seconds a card, when the host priced them
        self.lost: dict[int, CardFrame] = {}    # card id → its last frame, once it died
        self.pricing: tuple = ()                # distinct (cost model, clock factor) of the cards, this epoch

    def _take_steps(self) -> tuple[list[float], np.ndarray, np.ndarray | None]:
        """The steps run since the last sync: their starts, shapes and (when the host priced every batch)
        each step's busy seconds a card, so the cards need not price them again."""
        starts, parts, busy = self.starts, self.shapes, None
        shapes = parts[0] if len(parts) == 1 else np.vstack(parts) if parts else np.zeros((0, 5))
        if self.busy and all(b is not None for b in self.busy):
            busy = np.concatenate(self.busy)
        self.starts, self.shapes, self.busy = [], [], []
        return starts, shapes, busy

    def ready(self, start: float) -> tuple:
        """Sample the governor if the grid epoch holding ``start`` has not been (and the cards are not
        steady); the distinct (cost model, clock factor) pairs of the cards, which price a step from
        ``start`` (a group's step waits for the slowest of them)."""
        if self.lost:
            raise CardLost(self.lost, f"card {min(self.lost)} is lost")
        if self.steady:
            self._alive()
            return self.pricing
        epoch = grid_epoch(start, self.epoch_s)
        if epoch != self.sampled:
            t, self.sampled = epoch * self.epoch_s, epoch
            answers = self._sync(t, *self._take_steps())
            self.factors = [factor for factor, _ in answers]
            self.steady = all(steady for _, steady in answers)
            hot = [c for c, factor in zip(self.card_ids, self.factors) if factor == ABORTED_CLOCK]
            if hot:                                    # thermal runaway: the card aborts, its group fails
                for card in hot:
                    self.kill(card, t)
                raise CardLost(hot, f"card {hot[0]} reached its abort temperature")
            self.pricing = tuple(dict.fromkeys(zip(self.costs, self.factors)))
        return self.pricing

    def _alive(self) -> None:
        """A steady group's cards are not called each epoch; a group whose cards may die unseen checks here."""

    def propose(self, shapes: np.ndarray, start: float) -> np.ndarray:
        """The slowest card's segments for k steps from ``start`` (k × syncs+1)."""
        return slowest(self.ready(start), shapes)

    def accept(self, starts: list[float], shapes: np.ndarray, busy: np.ndarray | None = None) -> None:
        """The first ``len(starts)`` proposed steps ran, from these times (told to the cards at the next sync).
        ``busy``: each step's busy seconds, when every card of the group runs it alike (one cost model and
        clock) and the caller priced it."""
        self.starts += starts
        self.shapes.append(shapes[:len(starts)])
        self.busy.append(None if busy is None else busy[:len(starts)])
        if len(self.starts) >= FLUSH_STEPS:
            self._flush(*self._take_steps())

    def forget_sample(self) -> None:
        """The cards' state changed under the governor (their air, a restart): sample before the next step."""
        self.steady, self.sampled = False, None


class LocalCardGroup(CardGroup):
    def __init__(self, card_ids, device, epoch_s: float):
        super().__init__(epoch_s)
        self.cards = [Card(c, device, epoch_s) for c in card_ids]
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
            card.load(program, memory, shared_cost(costs, program, card.device))

    def _account(self, starts, shapes, busy, cards, t: float | None, sample: bool = False) -> None:
        """Hand the steps to the cards, then bring each to ``t`` (sampling its governor there, for a
        sync; ``None``: leave them at their last step). The cards of a group usually share a state and a
        cost model, so they end in the same state: it is worked out once and copied."""
        done: dict = {}
        for card in cards:
            key = (id(card.cost), card.state())
            if key in done:
                card.set_state(done[key])
                continue
            card.accept(starts, shapes, busy)
            if sample:
                card.sample(t)
            elif t is not None:
                card.advance_to(t)
            done[key] = card.state()

    def _sync(self, t: float, starts, shapes, busy) -> list[tuple[float, bool]]:
        self._account(starts, shapes, busy, self.cards, t, sample=True)
        return [(card.clock_factor, card.steady()) for card in self.cards]

    def _flush(self, starts, shapes, busy) -> None:
        self._account(starts, shapes, busy, [c for c in self.cards if c.card_id not in self.lost], None)

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
        self.forget_sample()

    def set_ambient(self, card_id: int, delta_c: float) -> None:
        next(card for card in self.cards if card.card_id == card_id).set_ambient(delta_c)
        self.forget_sample()

    def frames(self, t: float) -> list[CardFrame]:
        alive = [card for card in self.cards if card.card_id not in self.lost]
        self._account(*self._take_steps(), alive, t, sample=False)
        return [self.lost.get(card.card_id) or card.frame() for card in self.cards]

    def close(self) -> None:
        self.cards = []
