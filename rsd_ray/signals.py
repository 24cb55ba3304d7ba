"""SIGINT, SIGTERM and SIGHUP, handled alike by every command in every phase.

A stop signal means "save what ran and stop". What that takes depends on the
phase, so the phase says it: while a run can end at its next epoch boundary (the
controller's loop, a sweep between points, a server draining), the phase is
``graceful(hook)`` and the first signal calls the hook; while nothing can be
saved yet (Ray starting, actors being placed) or nothing needs to be (results
being written: ``graceful(None)`` lets the writing finish), the first signal
raises ``Interrupted`` or is only recorded. A second signal in the same phase
raises ``Interrupted`` at once (a phase entered after the first signal, such as a
server's drain, has its own hook for the next one). The command's exit status is ``128 + signal number``
(130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP), as a shell reports a process
the signal ended.

Handlers can only be installed in the main thread; elsewhere (a controller
inside a Ray actor) these contexts do nothing, and the driver's phase decides.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Callable

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
RECORD = "record"           # a hook that only records the signal (results are being written: let them finish)


class Interrupted(KeyboardInterrupt):
    """A stop signal where the work could not stop gracefully; names the signal and gives the exit status."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(reason(signum))

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def reason(signum: int) -> str:
    """How a signal is named in results and messages: ``interrupted (SIGTERM)``; Ctrl-C is SIGINT."""
    name = signal.Signals(signum).name
    return f"interrupted ({name}{', Ctrl-C' if signum == signal.SIGINT else ''})"


class _State:
    installed = 0                       # nesting depth of ``handled()``
    previous: dict = {}
    received: list[int] = []
    hooks: list = []                    # the innermost phase's hook is last


def _on_signal(signum, frame) -> None:
    _State.received.append(signum)
    phase = _State.hooks[-1] if _State.hooks else None
    if phase is None or phase[0] is None or phase[1]:        # no graceful phase, or its hook already called
        raise Interrupted(signum)
    phase[1] = True
    if phase[0] is not RECORD:
        phase[0](reason(signum))


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def handled():
    """The three stop signals handled as this module says, for the block; earlier handlers restored after.
    Re-entrant: the outermost block (the CLI's ``main``) installs, inner ones share it."""
    if not _main_thread():
        yield
        return
    if not _State.installed:
        _State.received = []
        _State.previous = {s: signal.signal(s, _on_signal) for s in STOP_SIGNALS}
    _State.installed += 1
    try:
        yield
    finally:
        _State.installed -= 1
        if not _State.installed:
            for s, handler in _State.previous.items():
                signal.signal(s, handler)
            _State.received = []            # a signal belongs to the command it came to


@contextmanager
def graceful(hook: Callable[[str], None] | str | None):
    """A phase that stops gracefully: the first signal calls ``hook(reason)`` (``RECORD``: only recorded;
    None: raise ``Interrupted``, as outside any phase)."""
    with handled():
        on_main = _main_thread()
        if on_main:
            _State.hooks.append([hook, False])          # the hook, and whether a signal has called it
        try:
            yield
        finally:
            if on_main:
                _State.hooks.pop()


@contextmanager
def ray_starting():
    """Around ``ray.init``: a stop signal is recorded, not raised, so Ray is never left half-started (its
    agents outlive a raylet killed mid-start); once Ray is up, the signal stops it again and raises
    ``Interrupted``. ``ray.init`` and the head node it starts set their own SIGTERM handlers (``sys.exit``);
    they are kept from replacing this module's, or this module's is put back after."""
    import ray
    import ray._private.utils as ray_utils
    keep = getattr(ray_utils, "set_sigterm_handler", None)
    if keep is not None:
        ray_utils.set_sigterm_handler = lambda handler: None
    try:
        with graceful(RECORD):
            yield
    except BaseException:               # a second signal, or Ray could not start
        ray.shutdown()
        raise
    finally:
        if keep is not None:
            ray_utils.set_sigterm_handler = keep
        if _State.installed and _main_thread():
            signal.signal(signal.SIGTERM, _on_signal)
    signum = first_received()
    if signum is not None:
        ray.shutdown()
        raise Interrupted(signum)


def first_received() -> int | None:
    """The first stop signal of this process's command, or None."""
    return _State.received[0] if _State.received else None


def status() -> dict:
    """A command's ``status`` and ``reason`` for its results: interrupted by the first stop signal, or
    completed."""
    signum = first_received()
    return {"status": "interrupted", "reason": reason(signum)} if signum else {"status": "completed", "reason": None}


def exit_code(default: int) -> int:
    """``default``, or the first stop signal's status when one came (130, 143, 129)."""
    signum = first_received()
    return 128 + signum if signum is not None else default
