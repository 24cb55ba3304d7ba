"""What a run produced (``Outcome``), and the passive log of the rack's epochs it is built from (``RunLog``)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from rsd_ray.compiler import Plan
from rsd_ray.config import RunSpec
from rsd_ray.engine.frames import InstanceFrame
from rsd_ray.engine.request import RequestRecord
from rsd_ray.hardware.card import CardFrame
from rsd_ray.rack.epoch import EpochOut, Failure, Recovery

EXIT_CODES = {"completed": 0, "failed": 1, "interrupted": 130}   # an Outcome's status as a command's exit code


@dataclass(frozen=True)
class Outcome:
    """Everything a run produced, before it is turned into a results document."""
    spec: RunSpec
    plan: Plan
    records: tuple[RequestRecord, ...]       # one per accepted request
    offered: int                             # distinct requests the source sent
    refused: int                             # requests never accepted (each counted once)
    refusals: int                            # refusal events (a closed-loop client may retry several times)
    instances: tuple[InstanceFrame, ...]
    window_cards: tuple[CardFrame, ...]      # at the end of the measurement window
    window_s: float                          # its length: duration_s, or less when the run ended early
    final_cards: tuple[CardFrame, ...]
    link_bytes: dict[str, float]
    links: dict[str, tuple[str, float]]      # name -> (kind, payload bandwidth)
    failures: tuple[Failure, ...]
    end_s: float
    epochs: int
    wall_s: float
    executor: str
    status: str = "completed"                # completed | interrupted | failed
    reason: str | None = None
    recoveries: tuple[Recovery, ...] = ()
    faults: tuple = ()                        # the rsd_ray.rack.faults.Fault injected, by time
    functional: dict | None = None            # --model DIR: tokens computed and a few requests' text
    clipped: int = 0                          # requests the source shortened to fit max_model_len
    closed_loop: bool = False                 # the source's clients wait for their answers (never backlogged)
    frontend: dict | None = None              # router.gateway_cores: the gateway's load and waits


class RunLog:
    """What the rack reported, kept for the outcome: failures and recoveries in order, each instance's last
    frame (a lost host sends none: its instances are marked failed here), the cards and links at the last
    telemetry, and the cards at the end of the measurement window."""

    def __init__(self):
        self.failures: list[Failure] = []
        self.recoveries: list[Recovery] = []
        self.frames: dict[int, InstanceFrame] = {}
        self.cards: tuple[CardFrame, ...] = ()
        self.link_bytes: dict[str, float] = {}
        self.window_cards: tuple[CardFrame, ...] = ()
        self.window_s = 0.0

    @property
    def last_frames(self) -> tuple:
        """Every instance's last frame, as the router and the sinks last saw them."""
        return tuple(self.frames[i] for i in sorted(self.frames))

    def book(self, out: EpochOut, window: bool = False) -> None:
        self.recoveries += out.recoveries
        self.failures += out.failures
        self.frames.update((f.instance, f) for f in out.instances)
        for f in out.failures:
            for i in f.instances:
                if i in self.frames:
                    self.frames[i] = dataclasses.replace(self.frames[i], failed=True)
        if out.cards:
            self.cards, self.link_bytes = out.cards, dict(out.link_bytes)
        if window:
            self.window_cards, self.window_s = out.cards, out.t_end

    def outcome(self, driver, records, status: str, reason: str | None, wall_s: float) -> Outcome:
        """The run's Outcome: this log, the ``records`` of the request ledger, and the ``driver`` (the
        controller) for the spec as it ran, the plan, the links, the time, the source and the faults."""
        spec, ledger = driver.spec, driver.ledger
        if driver.duration_s != spec.duration_s and driver.duration_s > 0:   # a served rack's window, as it ran
            spec = dataclasses.replace(spec, duration_s=driver.duration_s, drain_s=driver.drain_s)
        return Outcome(
            spec=spec, plan=driver.plan, records=records, offered=ledger.offered, refused=ledger.never_accepted,
            refusals=ledger.refusals, instances=tuple(self.frames[i] for i in sorted(self.frames)),
            window_cards=self.window_cards or self.cards, window_s=self.window_s if self.window_cards else driver.t,
            final_cards=self.cards, link_bytes=self.link_bytes, links=driver.links, failures=tuple(self.failures),
            end_s=driver.t, epochs=driver.epochs, wall_s=wall_s, executor=driver.executor.name, status=status,
            reason=reason, recoveries=tuple(self.recoveries), faults=tuple(driver.faults.injected),
            functional=getattr(driver.source, "functional", lambda: None)(),
            clipped=getattr(driver.source, "clipped", 0), closed_loop=getattr(driver.source, "closed_loop", False),
            frontend=driver.frontend.summary(driver.t) if driver.frontend else None)
