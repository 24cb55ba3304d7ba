"""Where a run's requests come from (``Source``), and the source a spec names: its synthetic workload, a
production trace, and with a checkpoint (functional mode) the split model writing each request's tokens.
``rsd-ray serve`` passes its gateway instead."""
from __future__ import annotations

from typing import Protocol

from rsd_ray.config import RunSpec
from rsd_ray.engine.request import RequestRecord, Submit


class Source(Protocol):
    """A request source, as the controller asks it at each epoch boundary (in the controller's thread).
    ``Workload``, ``TraceSource``, ``FunctionalSource`` and the serving ``Gateway`` are sources."""
    next_id: int                    # requests offered so far (each counted once, however often it is sent)
    offline: bool                   # optional: every request at t = 0, run until the last one ends

    def arrivals(self, t0: float, t1: float) -> list[Submit]:
        """The requests that arrive in [t0, t1), each with its arrival time (and ``instance`` ≥ 0 if it names
        one)."""

    def refused(self, subs: list[Submit], t: float) -> int:
        """These were refused at ``t`` (full rack, no healthy instance); returns how many will never come back
        (a closed-loop client backs off and sends the same request again)."""

    def done(self, records: list[RequestRecord]) -> None:
        """These ended (finished or errored): closed-loop clients may send their next request."""

    def waiting_to_retry(self) -> int:
        """Refused requests whose clients will send them again."""

    def next_arrival(self, t: float) -> float:
        """Optional: the earliest time from ``t`` at which a request may arrive that no answer brings (inf:
        none). A source that has it lets the controller run the rack over epochs in which nothing arrives;
        one without it (a served rack's gateway) is asked every epoch."""

    follows_answers: bool           # with ``next_arrival``: a finished request may bring a new one (closed loop)


def request_source(spec: RunSpec, executor=None):
    """The spec's requests; ``executor`` (its class): where a checkpoint's card shards run."""
    max_len = spec.engine.max_model_len or spec.model.max_seq_len
    if spec.workload.arrival == "trace":
        from rsd_ray.workload.trace_source import TraceSource
        source = TraceSource(spec.workload.trace, max_len, spec.seed + 1, spec.engine.hash_block_tokens)
    else:
        from rsd_ray.workload.synthetic import Workload
        source = Workload(spec.workload, spec.rack.servers, max_len, spec.seed + 1)
    if spec.workload.classes:                        # each new request drawn into a service class
        from rsd_ray.workload.classes import ClassedSource
        source = ClassedSource(source, spec.workload.classes, spec.seed + 4)
    if spec.model.checkpoint:                        # a checkpoint's weights write the requests' tokens
        from rsd_ray.functional.source import FunctionalSource
        from rsd_ray.functional.writer import FunctionalWriter
        writer = FunctionalWriter(spec, executor)
        source = FunctionalSource(source, writer, spec.seed + 3)
    return source
