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


def test_routing_many_in_one_go_picks_what_routing_one_at_a_time_picks():
    """The water-filling form of least loaded (``Router.route_many``) against ``route`` called once a request,
    from the same telemetry, admission bound and failures, with and without ``force``: the same instances in
    the same order, the same queues, and the same refusal counted (the first: a full rack stays full)."""
    import numpy as np
    draw = np.random.default_rng(7)
    for case in range(400):
        n, count, force = int(draw.integers(1, 7)), int(draw.integers(0, 30)), bool(case % 4 == 0)
        frames = [Frame(i, int(draw.integers(0, 6)), int(draw.integers(0, 4))) for i in range(n)]
        failed = [i for i in range(n) if draw.random() < 0.2]
        one, many = (Router(RouterSpec(policy="least_loaded", max_pending_per_instance=5), n, seed=0) for _ in "ab")
        for r in (one, many):
            r.observe(frames)
            if failed:
                r.fail(failed)
        picks = []
        while len(picks) < count and (i := one.route(force)) is not None:
            picks.append(i)
        assert many.route_many(count, force) == picks, case
        for name in ("queued", "loads", "open", "sent"):
            assert getattr(many, name).tolist() == getattr(one, name).tolist(), (case, name)
        assert many.refused == one.refused, case


def test_least_loaded_fills_to_a_level_then_takes_ties_by_id():
    from rsd_ray.router.least_loaded import least_loaded_in_turn
    import numpy as np
    loads, room = np.array([3, 1, 1, 0]), np.array([9, 9, 1, 9])
    eligible = np.array([True, True, True, False])       # instance 3 is failed: never picked
    # by hand: 1@1, 2@1 (tie, by id), 1@2 (2 is full), 0@3, 1@3, then 0@4, 1@4
    assert least_loaded_in_turn(loads, eligible, room, 7).tolist() == [1, 2, 1, 0, 1, 0, 1]
    assert least_loaded_in_turn(loads, eligible, np.array([1, 0, 0, 9]), 5).tolist() == [0]   # out of room


def test_duplicate_policy_name_is_an_error():
    with pytest.raises(ValueError, match="registered twice"):
        register("round_robin")(type("Again", (), {}))
