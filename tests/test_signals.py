"""Stop signals: one handler for SIGINT, SIGTERM and SIGHUP, whose first signal does what the phase says."""
import os
import signal

import pytest

from rsd_ray import signals
from rsd_ray.rack.controller import Controller
from rsd_ray.report.results import build
from tests.conftest import accounted, make_spec


def _send(signum):
    os.kill(os.getpid(), signum)        # delivered to this (main) thread before the next bytecode runs


@pytest.mark.parametrize("signum", signals.STOP_SIGNALS, ids=lambda s: s.name)
def test_outside_a_graceful_phase_the_first_signal_raises_and_names_itself(signum):
    with signals.handled(), pytest.raises(signals.Interrupted) as err:
        _send(signum)
    assert err.value.exit_code == 128 + signum and signum.name in str(err.value)
    assert signal.getsignal(signum) is not signals._on_signal         # the earlier handler is back


def test_in_a_graceful_phase_the_first_signal_calls_the_hook_and_the_second_raises():
    asked = []
    with signals.handled():
        with signals.graceful(asked.append):
            _send(signal.SIGTERM)
            assert asked == ["interrupted (SIGTERM)"]
            with pytest.raises(signals.Interrupted):
                _send(signal.SIGHUP)                                  # a second signal exits at once
        assert signals.exit_code(0) == 143                            # the first signal's status
    with signals.handled(), signals.graceful(signals.RECORD):         # results being written: only recorded
        _send(signal.SIGINT)
        assert signals.first_received() == signal.SIGINT and signals.exit_code(0) == 130


def test_a_signal_mid_run_ends_it_at_the_next_epoch_with_everything_accounted():
    spec = make_spec(duration_s=600.0)
    controller = Controller(spec)
    epochs = []

    def at_epoch(out, in_flight):
        epochs.append(out.t_end)
        if len(epochs) == 20:
            _send(signal.SIGHUP)

    outcome = controller.run([at_epoch])
    assert outcome.status == "interrupted" and outcome.reason == "interrupted (SIGHUP)"
    assert len(epochs) == 20                                          # not one epoch more
    doc = build(outcome)
    assert doc["requests"]["completed"] > 0 and accounted(doc)


def test_validate_stops_after_the_row_a_signal_came_in_and_keeps_the_rows_done():
    from rsd_ray.validation.suite import compare, load_rows
    rows, sent = load_rows(None)[:3], []

    def first_row_done(result):
        if not sent:                                                          # one signal, after row 1
            sent.append(_send(signal.SIGTERM))
    with signals.handled(), signals.graceful(signals.RECORD):
        done = compare(rows, on_row=first_row_done)
        assert [r["id"] for r in done] == [rows[0]["id"]] and signals.exit_code(0) == 143
