"""A disaggregated rack's figures by pool: where each request's time to first token went, how busy each
pool was, and the KV bytes moved between them (``rack/handoff.py``).

TTFT splits into five parts that add up to it, per completed request::

    arrival ─queue─▶ prefill starts ─prefill─▶ prompt's KV complete ─transfer─▶ KV on the decode cards
            ─wait─▶ the decode instance schedules it (its queue; a short prefill's epoch boundary)
            ─step─▶ first token
"""
from __future__ import annotations

import numpy as np

from rsd_ray.report.metrics import latency_stats

PARTS = ("queue", "prefill", "transfer", "wait", "step")


def pools(outcome) -> dict | None:
    """The ``disaggregation`` section of a run's results (None for an aggregated rack)."""
    split = outcome.spec.router.prefill_instances
    if not split:
        return None
    handed = [r for r in outcome.records if r.handoff is not None and r.finish is not None and r.token_times]
    h = np.array([(r.arrival, r.handoff.scheduled, r.handoff.prefilled, r.handoff.ready, r.scheduled, r.token_times[0])
                  for r in handed], dtype=float).reshape(-1, len(PARTS) + 1)
    parts = np.diff(h, axis=1)
    ttft = {}
    for k, name in enumerate(PARTS):
        ttft.update(latency_stats(f"ttft_{name}", parts[:, k]))
    kv = np.array([r.handoff.kv_bytes for r in handed], dtype=float)
    window = outcome.window_s or outcome.spec.duration_s
    return {"prefill_instances": split, "decode_instances": len(outcome.plan.placement.groups) - split,
            "kv_transfer": outcome.spec.router.kv_transfer, "handed_off": len(handed),
            "kv_bytes": float(kv.sum()), "mean_kv_bytes": float(kv.mean()) if kv.size else 0.0,
            "ttft_parts": ttft,
            "pools": {"prefill": _pool(outcome, range(split), window),
                      "decode": _pool(outcome, range(split, len(outcome.plan.placement.groups)), window)}}


def _pool(outcome, instances, window: float) -> dict:
    """One pool's instances: their TP degree, how busy (the share of the run their engines stepped), their
    steps and tokens."""
    frames = [f for f in outcome.instances if f.instance in set(instances)]
    span = max([outcome.end_s, window] + [f.clock_s for f in frames])
    groups = outcome.plan.placement.groups
    return {"instances": len(frames), "tp": outcome.plan.pool_of(instances[0]).tp,
            "cards": sum(len(groups[f.instance]) for f in frames),
            "utilisation": float(np.mean([f.busy_s / span for f in frames])) if frames and span else 0.0,
            "steps": sum(f.steps for f in frames), "computed_tokens": sum(f.computed_tokens for f in frames),
            "output_tokens": sum(f.output_tokens for f in frames), "preemptions": sum(f.preemptions for f in frames)}
