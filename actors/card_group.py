"""``RayCardGroup``: an instance's cards as actors, called when their governor samples.

The host prices steps with replicas of the cards' cost models (the same
programs on the same device profile), so steps cost no call; when the governor
samples (``hardware.card_group``: once per epoch in which the instance runs,
until its cards are steady) each card is told the steps it ran and answers its
clock factor. The fast path is a Ray compiled graph (input → every card's
``epoch`` → gather); ``fast=False`` keeps plain actor calls.

A card actor that dies (killed, its node lost) surfaces as ``CardLost``, the
core's value for it; its last telemetry is kept and reported as lost. A steady
group's cards are not called every epoch, so it asks them whether they are
alive at most every ``LIVENESS_S`` of wall time.
"""
from __future__ import annotations

import dataclasses
import time

import ray

from rsd_ray.hardware.card import CardFrame
from rsd_ray.hardware.card_group import CardGroup, CardLost, shared_cost

CARD_CALL_TIMEOUT_S = 60.0   # a card that does not answer in this long is declared lost
RESTART_POLL_S = 0.05        # --recover: how often to ask whether a restarting card actor is up
LIVENESS_S = 0.5             # a steady group asks its card actors whether they are alive this often (wall s)


def first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


class RayCardGroup(CardGroup):
    def __init__(self, handles: dict, epoch_s: float, programs=(), device=None,
                 fast: bool = True, costs: dict | None = None, memory=None):
        """``costs``: cost models shared with the host's other groups (one per distinct program);
        ``programs`` and ``memory`` are loaded again into a restarted card."""
        super().__init__(epoch_s)
        self.pinged = time.monotonic()
        self.card_ids, self.handles = list(handles), list(handles.values())
        self.programs, self.memory = programs, memory
        self.saved: dict[int, tuple] = {}        # a killed card's state, handed to its restarted process
        costs = {} if costs is None else costs
        self.costs = [shared_cost(costs, p, device) for p in programs]
        self.last: dict[int, CardFrame] = {}
        self.dag = None
        if fast and self.handles:
            from ray.dag import InputNode, MultiOutputNode
            with InputNode() as message:
                self.dag = MultiOutputNode([h.epoch.bind(message) for h in self.handles]).experimental_compile()

    def _sync(self, t: float, starts, shapes, busy=None) -> list[tuple[float, bool]]:
        """Each card prices its own steps (``busy`` is not sent) and samples its governor at ``t``."""
        self.pinged = time.monotonic()
        message = (starts, shapes, t)
        if self.dag is not None:
            try:
                return ray.get(self.dag.execute(message), timeout=CARD_CALL_TIMEOUT_S)
            except (ray.exceptions.RayError, TimeoutError) as err:
                self.dag = None                            # a broken graph cannot be torn down cleanly
                self._find_lost(first_line(err))
                raise CardLost(self.card_ids, f"compiled graph failed: {first_line(err)}") from None
        return self._call_each([h.epoch.remote(message) for h in self.handles])

    def _call_each(self, refs: list) -> list:
        """Each card's answer, in rank order; the first card that does not answer is lost."""
        answers = []
        for card, ref in zip(self.card_ids, refs):
            try:
                answers.append(ray.get(ref, timeout=CARD_CALL_TIMEOUT_S))
            except (ray.exceptions.RayError, TimeoutError) as err:
                self._mark_lost(card)
                raise CardLost([card], f"card {card} lost: {first_line(err)}") from None
        return answers

    def _flush(self, starts, shapes, busy=None) -> None:
        if not self.lost:                          # a group with a lost card steps no more
            self._call_each([h.account.remote(starts, shapes) for h in self.handles])

    def _alive(self) -> None:
        if time.monotonic() - self.pinged > LIVENESS_S:
            self.pinged = time.monotonic()
            self._call_each([h.ping.remote() for h in self.handles])

    def _mark_lost(self, card: int) -> None:
        """Keep the card's last telemetry (or, never heard from, zeros) as its lost frame."""
        frame = self.last.get(card) or CardFrame(card, 0.0, 0.0, 0, 0, 0.0, 0.0, 0.0, "P12", 0.0, 0.0)
        self.lost[card] = dataclasses.replace(frame, lost=True)

    def _find_lost(self, reason: str) -> None:
        """After a failed graph call: ask each card whether it is alive; the dead ones are lost."""
        for card, handle in zip(self.card_ids, self.handles):
            try:
                ray.get(handle.process.remote(), timeout=10.0)
            except (ray.exceptions.RayError, TimeoutError):
                self._mark_lost(card)
                raise CardLost([card], f"card {card} lost: {reason}") from None

    def kill(self, card_id: int, t: float) -> None:
        """A fault: every card accounts up to ``t``, then this card's actor is killed (with ``--recover``
        the actor may restart: Ray starts a new process for it, which ``restart`` loads)."""
        self.frames(t)
        handle = self.handles[self.card_ids.index(card_id)]
        try:
            self.saved[card_id] = ray.get(handle.state.remote(), timeout=CARD_CALL_TIMEOUT_S)
        except (ray.exceptions.RayError, TimeoutError):
            pass
        ray.kill(handle, no_restart=False)
        self._mark_lost(card_id)

    def restart(self, card_ids, t: float) -> None:
        """``--recover``: each lost card's new process loads its rank's program and the state it had."""
        for card in card_ids:
            rank = self.card_ids.index(card)
            handle, deadline = self.handles[rank], time.monotonic() + CARD_CALL_TIMEOUT_S
            message = (self.programs[rank].to_msgpack(), self.memory, t, self.saved.pop(card, None))
            while True:
                try:
                    ray.get(handle.restart.remote(*message), timeout=CARD_CALL_TIMEOUT_S)
                    break
                except (ray.exceptions.RayError, TimeoutError) as err:
                    starting = isinstance(err, ray.exceptions.ActorUnavailableError)   # Ray is starting its process
                    if not starting or time.monotonic() > deadline:
                        raise CardLost([card], f"card {card} did not come back: {first_line(err)}") from None
                    time.sleep(RESTART_POLL_S)
            self.lost.pop(card, None)
            self.last.pop(card, None)
        self.forget_sample()

    def set_ambient(self, card_id: int, delta_c: float) -> None:
        if card_id not in self.lost:
            ray.get(self.handles[self.card_ids.index(card_id)].set_ambient.remote(delta_c))
        self.forget_sample()

    def frames(self, t: float) -> list:
        starts, shapes, _ = self._take_steps()
        refs = {c: h.frame.remote(t, starts, shapes) for c, h in zip(self.card_ids, self.handles) if c not in self.lost}
        for card, ref in refs.items():
            try:
                self.last[card] = ray.get(ref, timeout=CARD_CALL_TIMEOUT_S)
            except (ray.exceptions.RayError, TimeoutError):
                self._mark_lost(card)
        return [self.lost.get(c) or self.last[c] for c in self.card_ids]

    def close(self) -> None:
        if self.dag is not None:
            try:
                self.dag.teardown()
            except Exception:                  # noqa: BLE001  (a graph with a dead card may not tear down)
                pass
            self.dag = None
