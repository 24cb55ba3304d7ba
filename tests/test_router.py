from dataclasses import dataclass

import pytest

from rsd_ray.config import RouterSpec
from rsd_ray.router import Router, register


@dataclass
class Frame:
    instance: int
    running: int
    waiting: int


def test_round_robin_cycles():
    r = Router(RouterSpec(policy="round_robin"), 3, seed=0)
    assert [r.route() for _ in range(7)] == [0, 1, 2, 0, 1, 2, 0]


def test_least_loaded_uses_telemetry_plus_what_it_sent_since():
    r = Router(RouterSpec(policy="least_loaded"), 3, seed=0)
    r.observe([Frame(0, 5, 0), Frame(1, 2, 0), Frame(2, 3, 0)])
    assert [r.route() for _ in range(4)] == [1, 1, 2, 1]


def test_power_of_two_is_seeded():
    picks = []
    for _ in range(2):
        r = Router(RouterSpec(policy="power_of_two"), 8, seed=42)
        picks.append([r.route() for _ in range(50)])
    assert picks[0] == picks[1]
    assert len(set(picks[0])) > 4
    other = Router(RouterSpec(policy="power_of_two"), 8, seed=43)
    assert [other.route() for _ in range(50)] != picks[0]


def test_admission_is_bounded_and_refusals_are_counted():
    r = Router(RouterSpec(policy="least_loaded", max_pending_per_instance=2), 2, seed=0)
    got = [r.route() for _ in range(6)]
    assert got[:4].count(0) == 2 and got[:4].count(1) == 2
    assert got[4:] == [None, None] and r.refused == 2
    r.observe([Frame(0, 2, 0), Frame(1, 2, 1)])       # instance 0 started its queue
    assert r.route() == 0


def test_duplicate_policy_name_is_an_error():
    with pytest.raises(ValueError, match="registered twice"):
        register("round_robin")(type("Again", (), {}))
