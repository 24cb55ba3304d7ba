"""Service classes: each new request drawn into one of the workload's classes (its share), carrying the
class's priority to the scheduler (``engine.scheduling_policy: priority``) and its name to the results.

The draw has its own seeded stream, so arrivals and lengths are those of the same run without classes;
a request sent again (a refused client's retry, a conversation's next turn is a new request) keeps its
class. Any source can be classed: synthetic, trace or functional.
"""
from __future__ import annotations

import numpy as np

CLASS_STREAM = 7          # the classes' random stream beside the workload's own (default_rng([seed, 7]))


def by_priority(priority: int | None) -> dict:
    """The priority and class of a request that names its own priority (a served request's, a trace row's):
    its class is ``priority N``; one that names none has priority 0 and no class."""
    return {"priority": priority or 0, "service_class": "" if priority is None else f"priority {priority}"}


class ClassedSource:
    def __init__(self, source, classes, seed: int):
        self.source, self.classes = source, list(classes)
        self.rng = np.random.default_rng([seed, CLASS_STREAM])
        self.shares = np.array([c.share for c in self.classes]) / sum(c.share for c in self.classes)

    def arrivals(self, t0: float, t1: float) -> list:
        subs = self.source.arrivals(t0, t1)
        new = [k for k, s in enumerate(subs) if not s.service_class]
        if new:
            for k, c in zip(new, self.rng.choice(len(self.classes), size=len(new), p=self.shares).tolist()):
                cls = self.classes[c]
                subs[k] = subs[k].replaced(priority=cls.priority, service_class=cls.name)
        return subs

    def __getattr__(self, name):
        return getattr(self.source, name)


__all__ = ["ClassedSource"]
