"""ControllerActor: the rack's controller as a named actor, so other processes can find a running rack.

Threaded (``max_concurrency``) so ``progress`` and ``stop`` answer while ``run`` works. The rack is started
by ``start``, not the constructor: what goes wrong while it starts (a card or host lost, a node gone)
reaches the driver as the error it is, not as the death of this actor.
"""
from __future__ import annotations

import ray

from rsd_ray.rack.controller import Controller
from rsd_ray.rack.epoch import Needs
from rsd_ray.report.telemetry import attach, controller_frame
from rsd_ray.report.timeline import TraceSink

NAMESPACE = "rsd-ray"
CONTROLLER_NAME = "rsd-ray-controller"


@ray.remote(num_cpus=0, max_concurrency=4)
class ControllerActor:
    def start(self, spec, fast: bool | None = None, telemetry: bool = False, faults=(), trace=None) -> None:
        """Place and start the rack. ``trace``: (t0, t1) of a Perfetto timeline drawn here from the run's step
        records."""
        self.controller = Controller(spec, executor="ray", fast=fast, report=self._report)
        self.controller.inject(faults)
        self.telemetry = attach(self.controller) if telemetry else None
        self.timeline = TraceSink(self.controller, *trace) if trace else None
        self.t, self.in_flight, self.done = 0.0, 0, False

    def _report(self, phase: str, done: int = 0, total: int = 0) -> None:
        self.phase = (phase, done, total)

    def startup(self) -> tuple[str, int, int]:
        """How start-up goes: (phase, done, total)."""
        return getattr(self, "phase", ("placing servers", 0, 0))

    def _on_epoch(self, out, in_flight: int) -> None:
        self.t, self.in_flight = out.t_end, in_flight
    _on_epoch.needs = Needs()                     # it only shows progress

    def run(self):
        try:
            sinks = [self._on_epoch, self.telemetry, self.timeline]
            return self.controller.run([s for s in sinks if s is not None])
        finally:
            self.done = True

    def frame(self) -> dict:
        """The dashboard's frame (``rsd_ray.report.telemetry``)."""
        return controller_frame(self.controller, self.telemetry)

    def trace_events(self) -> list[dict]:
        return self.timeline.timeline() if self.timeline else []

    def progress(self) -> tuple[float, int, bool]:
        return self.t, self.in_flight, self.done

    def stop(self, reason: str = "stopped") -> None:
        self.controller.stop(reason)

    def control(self, control) -> None:
        self.controller.control(control)

    def processes(self) -> list[dict]:
        return self.controller.executor.processes()


def find_controller():
    """The running rack's controller, from any process connected to the cluster."""
    return ray.get_actor(CONTROLLER_NAME, namespace=NAMESPACE)
