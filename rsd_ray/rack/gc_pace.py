"""The cyclic garbage collector's pace while a rack runs.

A run makes millions of small objects that live as long as it does (requests, records, frames) and none
that need the cyclic collector (reference counting frees them). At Python's default pace — a collection
every 700 allocations, each older generation every 10 of the one below — the collector walks them over
and over: 7 % of the 224-card rack's whole process at its default load (``benchmarks/speed.py``). During
a run it runs at a slower pace; it still runs, so a cycle made by a plugin or a sink is still freed.
"""
from __future__ import annotations

import gc
from contextlib import contextmanager

RUN_THRESHOLDS = (50_000, 20, 10)
"""gc.set_threshold during a run: about 70 times fewer young collections, half as many older ones."""


def pace_for_runs() -> None:
    """Set the run's pace for the rest of this process (a Ray actor that only runs the rack)."""
    gc.set_threshold(*RUN_THRESHOLDS)


@contextmanager
def rarer_collections():
    """The run's pace inside the block; the caller's pace again after it."""
    before = gc.get_threshold()
    gc.set_threshold(*RUN_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*before)
