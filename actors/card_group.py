"""``RayCardGroup``: an instance's cards as actors, one fan-out per step or span.

The fast path is a Ray compiled graph (input → every card's ``step`` →
gather): the channels are set up once, so a step costs a fraction of the
plain-call round trip. ``fast=False`` keeps plain actor calls. ``accept`` is
not sent on its own: it rides on the next proposal or telemetry call.

A card actor that dies (killed, its node lost) surfaces as ``CardLost``, the
core's value for it; its last telemetry is kept and reported as lost.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import ray

from rsd_ray.card import CardFrame
from rsd_ray.card_group import CardLost

CARD_CALL_TIMEOUT_S = 60.0   # a card that does not answer one step in this long is declared lost


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


class RayCardGroup:
    def __init__(self, handles: dict, fast: bool = True):
        self.ids, self.handles = list(handles), list(handles.values())
        self.dag = None
        self.accepted = None
        self.lost: dict[int, CardFrame] = {}
        self.last: dict[int, CardFrame] = {}
        if fast and self.handles:
            from ray.dag import InputNode, MultiOutputNode
            with InputNode() as message:
                self.dag = MultiOutputNode([h.step.bind(message) for h in self.handles]).experimental_compile()

    def _mark_lost(self, card: int) -> None:
        """Keep the card's last telemetry (or, never heard from, zeros) as its lost frame."""
        frame = self.last.get(card) or CardFrame(card, 0.0, 0.0, 0, 0, 0.0, 0.0, 0.0, "P12", 0.0, 0.0)
        self.lost[card] = dataclasses.replace(frame, lost=True)

    def _lose(self, card: int, reason: str) -> None:
        self._mark_lost(card)
        raise CardLost([card], reason)

    def propose(self, shapes: np.ndarray, start: float) -> np.ndarray:
        if self.lost:
            raise CardLost(self.lost, f"card {min(self.lost)} is lost")
        message, self.accepted = (self.accepted, shapes, start), None
        if self.dag is not None:
            try:
                return np.stack(ray.get(self.dag.execute(message), timeout=CARD_CALL_TIMEOUT_S))
            except (ray.exceptions.RayError, TimeoutError) as err:
                self.dag = None                            # a broken graph cannot be torn down cleanly
                self._find_lost(_first_line(err))
                raise CardLost(self.ids, f"compiled graph failed: {_first_line(err)}") from None
        refs = [h.step.remote(message) for h in self.handles]
        out = []
        for card, ref in zip(self.ids, refs):
            try:
                out.append(ray.get(ref, timeout=CARD_CALL_TIMEOUT_S))
            except (ray.exceptions.RayError, TimeoutError) as err:
                self._lose(card, f"card {card} lost: {_first_line(err)}")
        return np.stack(out)

    def _find_lost(self, reason: str) -> None:
        """After a failed graph call: ask each card whether it is alive; the dead ones are lost."""
        for card, handle in zip(self.ids, self.handles):
            try:
                ray.get(handle.process.remote(), timeout=10.0)
            except (ray.exceptions.RayError, TimeoutError):
                self._lose(card, f"card {card} lost: {reason}")

    def accept(self, starts: list[float]) -> None:
        self.accepted = list(starts)

    def kill(self, card_id: int, t: float) -> None:
        """A fault: every card accounts up to ``t``, then this card's actor is killed."""
        self.frames(t)
        ray.kill(self.handles[self.ids.index(card_id)])
        self._mark_lost(card_id)

    def frames(self, t: float) -> list:
        accepted, self.accepted = self.accepted, None
        refs = {c: h.frame.remote(t, accepted) for c, h in zip(self.ids, self.handles) if c not in self.lost}
        for card, ref in refs.items():
            try:
                self.last[card] = ray.get(ref, timeout=CARD_CALL_TIMEOUT_S)
            except (ray.exceptions.RayError, TimeoutError):
                self._mark_lost(card)
        return [self.lost.get(c) or self.last[c] for c in self.ids]

    def close(self) -> None:
        if self.dag is not None:
            try:
                self.dag.teardown()
            except Exception:                  # noqa: BLE001  (a graph with a dead card may not tear down)
                pass
            self.dag = None
