"""Shared helpers: small specs and runs on the inline executor."""
from __future__ import annotations

import dataclasses

import pytest

from rsd_ray.config import load_run
from rsd_ray.rack.controller import Controller
from rsd_ray.rack.ledger import balanced
from rsd_ray.report.results import build


def make_spec(workload=None, engine=None, **overrides):
    """A run on the mini rack with the tiny model unless told otherwise."""
    base = {"rack": "mini", "model": "tiny-llama", "tp": 2, "duration_s": 2.0, "epoch_s": 0.05}
    base.update(overrides)
    spec = load_run(None, **base)
    if workload:
        spec = dataclasses.replace(spec, workload=dataclasses.replace(spec.workload, **workload))
    if engine:
        spec = dataclasses.replace(spec, engine=dataclasses.replace(spec.engine, **engine))
    return spec


def run_doc(spec, executor="inline"):
    controller = Controller(spec, executor=executor)
    outcome = controller.run()
    assert balanced(outcome.offered, outcome.refused, outcome.records)      # the ledger's arithmetic holds
    return build(outcome), outcome


def accounted(doc) -> bool:
    """Every request in exactly one state: offered = accepted + refused, accepted = completed + errored + unfinished."""
    r = doc["requests"]
    return r["accepted"] == r["completed"] + r["errored"] + r["unfinished"] and \
        r["offered"] == r["accepted"] + r["refused"]


def with_token_times(doc, outcome):
    """The document plus every request's token timestamps, for equality tests."""
    return doc | {"token_times": [list(r.token_times) for r in outcome.records]}


@pytest.fixture
def spec_factory():
    return make_spec


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole test session: 16 atom_card resources, as one ATOM server."""
    import ray
    ray.init(address="local", resources={"atom_card": 16}, include_dashboard=False, namespace="rsd-ray-tests",
             logging_level="WARNING")
    yield ray
    ray.shutdown()
