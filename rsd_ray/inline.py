"""The inline executor: every host and card a plain object in this process, the whole rack one host.

It answers the same calls as the Ray executor (``rsd_ray.rack.executor.Executor``): the controller drives
``run_epoch``; a command starts ``run_session``, ``serve_session`` or functional mode's split model through
it — here nothing needs starting. Registered by name in ``rsd_ray.plugins`` (like the Ray executor), it sits
above the rack, the reports and the server it starts.
"""
from __future__ import annotations

from contextlib import nullcontext

from rsd_ray.compiler import Plan
from rsd_ray.config import RunSpec
from rsd_ray.engine.request import RequestRecord
from rsd_ray.interconnect.topology import Topology
from rsd_ray.rack.epoch import EpochIn, EpochOut, merge
from rsd_ray.rack.host import Host, HostSetup


class InlineExecutor:
    name = "inline"
    one_host = True          # the controller may run it over quiet epochs in one call (``Controller._horizon``)

    def __init__(self, spec: RunSpec, plan: Plan, setups: list[HostSetup], topology=None):
        """One host drives every server, so the engine steps the whole rack together."""
        topology = topology or Topology(spec.rack, spec.device)
        self.hosts = [Host.local(spec, plan, setups, topology)]

    def run_epoch(self, epoch: EpochIn) -> EpochOut:
        return merge(epoch.t_end, [h.run_epoch(epoch) for h in self.hosts], epoch.quiet)

    def unfinished(self) -> list[RequestRecord]:
        return [r for h in self.hosts for r in h.unfinished()]

    def shutdown(self) -> None:
        for h in self.hosts:
            h.close()
        self.hosts = []

    @staticmethod
    def session(address, cards: int):
        return nullcontext()

    @staticmethod
    def run_session(spec, sinks, address=None, show=None, faults=(), refresh_s: float = 1.0, trace=None):
        from rsd_ray.rack.controller import Controller
        from rsd_ray.report.telemetry import dashboard_sink
        from rsd_ray.report.timeline import TraceSink
        controller = Controller(spec)
        controller.inject(faults)
        sinks = list(sinks) + ([dashboard_sink(controller, show, refresh_s)] if show else [])
        timeline = TraceSink(controller, *trace[:2]) if trace else None
        outcome = controller.run(sinks + ([timeline] if timeline else []))
        if timeline:
            timeline.write(trace[2])
        return outcome

    @staticmethod
    def serve_session(spec, options, address, version: str, body, faults=()):
        from rsd_ray.serve.server import RackServer
        return body(RackServer(spec, "inline", options, version, faults))

    @staticmethod
    def split_model(path, tp: int, budget: int, timer=None, beside_rack: bool = False):
        from rsd_ray.config.checkpoint import read_config
        from rsd_ray.functional.split import SplitModel, card_shards
        return SplitModel(read_config(path), card_shards(path, tp, budget), timer=timer)

    @staticmethod
    def card_memory(model) -> list[dict]:
        return [c.memory() for c in model.cards]
