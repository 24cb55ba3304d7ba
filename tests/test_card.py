import dataclasses

import numpy as np
import pytest

from rsd_ray.hardware.card import Card
from rsd_ray.compiler import compile_program, plan_memory
from rsd_ray.config import load_run
from rsd_ray.hardware.ledger import MemoryBudgetError, MemoryLedger


def test_ledger_refuses_over_budget_with_numbers():
    ledger = MemoryLedger("card0", 10 * 1024 ** 3)
    ledger.allocate("weights", 8 * 1024 ** 3)
    assert not ledger.can_allocate(3 * 1024 ** 3)
    with pytest.raises(MemoryBudgetError, match=r"card0: allocating 3.00 GiB for kv_cache would use 11.00 GiB "
                                                 r"of a 10.00 GiB budget \(held: weights 8.00 GiB\)"):
        ledger.allocate("kv_cache", 3 * 1024 ** 3)
    assert ledger.used == 8 * 1024 ** 3


def loaded_card(device=None):
    spec = load_run(None)
    device = device or spec.device
    card = Card(0, device)
    card.load(compile_program(spec.model, 4, 0), plan_memory(spec.model, 4, device, spec.engine))
    return card, spec


def decode(batch, ctx=1024):
    return np.array([1.0, batch, batch, batch * ctx, batch * ctx])


def test_small_decode_is_bound_by_dram_bandwidth():
    card, spec = loaded_card()
    t = card.cost.segments(decode(1)).sum()
    weights = plan_memory(spec.model, 4, spec.device, spec.engine).weights
    floor = weights / (spec.device.dram_bandwidth_gbps * 1e9)
    assert floor < t < floor / spec.device.dram_efficiency * 1.1


def test_step_time_grows_with_batch_and_context():
    card, _ = loaded_card()
    times = [card.cost.segments(decode(b)).sum() for b in (1, 16, 64, 256)]
    assert times == sorted(times) and times[-1] > 2 * times[0]
    assert card.cost.segments(decode(64, 4096)).sum() > card.cost.segments(decode(64, 512)).sum()


def test_hot_card_throttles_to_p10_and_runs_slower():
    _, spec = loaded_card()
    hot_dev = dataclasses.replace(spec.device, thermal=dataclasses.replace(spec.device.thermal, ambient_c=50.0))
    hot, _ = loaded_card(hot_dev)                          # 50 + 0.25 °C/W x 130 W = 82.5 °C: throttles, no abort
    cool, _ = loaded_card()
    x = np.array([1.0, 2048, 1, 2048 * 1024, 2048])       # compute-bound prefill chunks
    t = 0.0
    for _ in range(400):
        t += max(hot.execute(x, t).sum(), cool.execute(x, t).sum())
    assert hot.frame().p_state == "P10" and hot.thermal.temp_c >= 75
    assert cool.frame().p_state == "P2" and cool.thermal.temp_c < 75
    assert hot.execute(x, t).sum() > 1.5 * cool.execute(x, t).sum()


def test_a_card_past_its_abort_temperature_reports_p12_and_runs_nothing():
    _, spec = loaded_card()
    card, _ = loaded_card()
    card.set_ambient(+55.0)                                # an ambient fault: 35 + 55 = 90 °C air
    card.thermal.temp_c = card.thermal.ambient_c           # ... that the card has sat in: past the 85 °C abort
    assert card.sample(0.0) == 0.0 and card.frame().p_state == "P12"
    with pytest.raises(RuntimeError, match="abort temperature"):
        card.execute(decode(8), 0.5)


def test_idle_card_reports_p14_and_idle_power():
    card, spec = loaded_card()
    card.execute(decode(8), 0.0)
    before = card.frame()
    card.advance_to(10.0)
    frame = card.frame()
    assert frame.p_state == "P14"
    idle_power = (frame.energy_j - before.energy_j) / (frame.clock_s - before.clock_s)
    assert idle_power == pytest.approx(spec.device.power.idle_w)
    assert frame.memory_used <= frame.memory_total


def test_an_epoch_boundary_belongs_to_the_epoch_it_starts_as_the_controller_computes_it():
    from rsd_ray.hardware.card_group import grid_epoch
    for epoch in (0.05, 0.1, 0.25, 1.0):
        for k in range(0, 200_000, 7):
            boundary = k * epoch                       # the controller's t_end: (epochs + 1) * epoch_s
            assert grid_epoch(boundary, epoch) == k
            assert grid_epoch(boundary + epoch / 2, epoch) == k
            if k:
                assert grid_epoch(np.nextafter(boundary, 0.0), epoch) == k - 1


def test_a_card_that_cannot_reach_its_throttle_temperature_is_sampled_once_until_its_air_warms():
    """ATOM at 35 °C: idle or flat out it settles at 35 + 0.25 °C/W × 130 W = 67.5 °C < 75 °C, so after its
    first sample the governor cannot answer anything but full clock and is asked no more. In 10 °C warmer air
    full power settles at 77.5 °C ≥ 75 °C: it is sampled again, once per epoch in which it runs."""
    from rsd_ray.hardware.card_group import LocalCardGroup
    spec = load_run(None)
    group = LocalCardGroup(range(4), spec.device, spec.epoch_s)
    group.load(tuple(compile_program(spec.model, 4, r) for r in range(4)), plan_memory(spec.model, 4, spec.device,
                                                                                        spec.engine))
    samples = []
    sync = group._sync
    group._sync = lambda t, *steps: samples.append(t) or sync(t, *steps)
    x = decode(8)[None, :]
    for i in range(20):                                # a step every 0.05 s: each in its own epoch
        group.propose(x, i * 0.05 + 0.01)
        group.accept([i * 0.05 + 0.01], x)
    assert samples == [0.0]
    group.set_ambient(0, 10.0)
    for i in range(20, 30):
        group.propose(x, i * 0.05 + 0.01)
        group.accept([i * 0.05 + 0.01], x)
    assert samples == [0.0] + [pytest.approx(i * 0.05) for i in range(20, 30)]
    frames = group.frames(1.5)
    assert frames[0].clock_s == 1.5 and frames[0].energy_j > 0
