"""Where a run's requests come from, as the spec says: its synthetic workload, a production trace, and with a
checkpoint (functional mode) the split model writing each request's tokens. ``rsd-ray serve`` passes its
gateway instead."""
from __future__ import annotations

from rsd_ray.config import RunSpec


def request_source(spec: RunSpec):
    max_len = spec.engine.max_model_len or spec.model.max_seq_len
    if spec.workload.arrival == "trace":
        from rsd_ray.workload.trace_source import TraceSource
        source = TraceSource(spec.workload.trace, max_len, spec.seed + 1, spec.engine.hash_block_tokens)
    else:
        from rsd_ray.workload.synthetic import Workload
        source = Workload(spec.workload, spec.rack.servers, max_len, spec.seed + 1)
    if spec.model.checkpoint:                        # a checkpoint's weights write the requests' tokens
        from rsd_ray.functional.source import FunctionalSource
        from rsd_ray.functional.writer import FunctionalWriter
        writer = FunctionalWriter(spec.model.checkpoint, spec.tp, spec.device.usable_bytes)
        source = FunctionalSource(source, writer, spec.seed + 3)
    return source
