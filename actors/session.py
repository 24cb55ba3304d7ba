"""Embedded or joined Ray for one command, and the controller actor's life inside it.

Without ``--address`` the run starts a private local Ray (``address="local"``),
even when another cluster is up on this machine, and stops it afterwards.
"""
from __future__ import annotations

import logging
import socket
import sys
import time
from contextlib import contextmanager

import ray

from rsd_ray import signals
from rsd_ray.actors.controller_actor import CONTROLLER_NAME, NAMESPACE, ControllerActor
from rsd_ray.actors.ray_executor import ray_reason, check_capacity
from rsd_ray.rack.executor import RackLost
from rsd_ray.config import ConfigError
from rsd_ray.rack.epoch import EpochOut
from rsd_ray.report.timeline import write_trace

POLL_S = 0.25
PROBE_TIMEOUT_S = 5.0
AUTH_HINT = ("a cluster started with RAY_AUTH_MODE=disabled needs it set here too (with ~/.ray/auth_token present, "
             "token authentication is used, as `ray start` does); its logs say more")
JOIN_HINT = ("start one with `ray start --head --resources='{\"atom_card\": 16}'` (or `ray up`), "
             "or drop --address to run on a private embedded Ray")


def use_ray_token() -> None:
    """Joining a cluster: use Ray's token authentication when a token is at hand (``~/.ray/auth_token``,
    which an embedded run creates, ``RAY_AUTH_TOKEN`` or ``RAY_AUTH_TOKEN_PATH``) and ``RAY_AUTH_MODE`` is
    unset -- what ``ray start --head`` does, and ``ray.init(address=...)`` and ``ray status`` do not
    (``RAY_AUTH_MODE=token ray status`` does). Rays without token authentication have nothing to do."""
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available as enable)
    except ImportError:
        return
    enable(warn_if_disabled=False)


def _probe(address: str) -> None:
    """Fail fast when nothing listens at HOST:PORT (``ray.init`` would retry for minutes)."""
    host, _, port = address.rpartition(":")
    if not (host and port.isdigit()):
        raise ConfigError("command line", "--address", address, "give auto or HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=PROBE_TIMEOUT_S).close()
    except OSError as err:
        raise ConfigError("command line", "--address", address, f"nothing answers there ({err.strerror or err}); "
                          + JOIN_HINT) from None


@contextmanager
def ray_session(address: str | None, cards: int):
    """No address: a private local Ray declaring ``cards`` atom_card resources, stopped after.
    ``auto`` or ``HOST:PORT``: join a cluster started by ``ray start`` / ``ray up``."""
    if ray.is_initialized():
        yield
        return
    # Ray's own warnings and its workers' output stay in its log folder, said once below, off the terminal
    common = {"namespace": NAMESPACE, "logging_level": logging.ERROR, "log_to_driver": False}
    if address:
        if address != "auto":
            _probe(address)
        use_ray_token()
        try:
            with signals.ray_starting():
                ray.init(address=address, **common)
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise ConfigError("command line", "--address", address,
                              f"cannot join ({str(err).strip().splitlines()[0]}); " + JOIN_HINT) from None
    else:
        with signals.ray_starting():
            ray.init(address="local", resources={"atom_card": cards}, include_dashboard=False, **common)
    node = getattr(ray._private.worker, "_global_node", None)
    if node is not None:
        print(f"rsd-ray: Ray's logs are in {node.get_logs_dir_path()}", file=sys.stderr)
    try:
        yield
    finally:
        ray.shutdown()


def run_on_ray(spec, sinks=(), fast: bool | None = None, show=None, faults=(), refresh_s: float = POLL_S,
               trace=None):
    """Run ``spec`` under a named ControllerActor; returns the Outcome. Ray must be initialised.
    The sinks here see each epoch's time only (``EpochOut(t_end)``): whole epochs stay in the cluster.
    A stop signal during start-up raises ``signals.Interrupted``; while it runs, it asks the controller to
    stop at its next epoch and still returns its Outcome. ``show``: a dashboard,
    handed the controller's telemetry frame at most every ``refresh_s``. ``trace``: (t0, t1, path) of a
    timeline the controller actor draws from its steps, written here."""
    check_capacity(spec.rack)
    controller = ControllerActor.options(name=CONTROLLER_NAME, namespace=NAMESPACE).remote()
    phases = [s.phase for s in sinks if hasattr(s, "phase")]
    try:                                        # start-up (every card placed and started): a signal ends it
        started = controller.start.remote(spec, fast, show is not None, tuple(faults), trace[:2] if trace else None)
        while not ray.wait([started], timeout=POLL_S)[0]:
            now = ray.get(controller.startup.remote())
            for phase in phases:
                phase(*now)
        ray.get(started)
        for phase in phases:
            phase("warming")                    # until the first epoch is back
        ref, shown, asked, told = controller.run.remote(), 0.0, [], None
        with signals.graceful(asked.append):     # running: a signal asks the controller to stop at its epoch
            while True:
                done = ray.wait([ref], timeout=POLL_S)[0]
                if asked:                       # told from here, not the handler: Ray is not re-entrant
                    controller.stop.remote(asked.pop())
                t, in_flight, _ = ray.get(controller.progress.remote())
                if t != told:                   # the last epoch too, which a quick run reaches before any poll
                    told = t
                    for sink in sinks:
                        sink(EpochOut(t), in_flight)
                if done:
                    break
                if show is not None and time.monotonic() - shown >= refresh_s:
                    shown = time.monotonic()
                    show(ray.get(controller.frame.remote()))
            outcome = ray.get(ref)
        if trace:
            write_trace(trace[2], ray.get(controller.trace_events.remote()), trace[:2])
        return outcome
    except ray.exceptions.RayTaskError as err:     # the error itself, in one line: not a remote traceback
        if isinstance(err.cause, (RackLost, ConfigError)):
            raise err.cause from None
        raise err.as_instanceof_cause() from None
    except ray.exceptions.RayActorError as err:
        raise RackLost(f"the controller actor died: {ray_reason(err)}" + (f"; {AUTH_HINT}" if "auth" in str(err).lower()
                                                                      else "")) from None
    finally:
        ray.kill(controller)
        time.sleep(0)   # let the kill be sent before a session shutdown


def serve_on_ray(spec, options, version: str, body, faults=()):
    """A ServeActor on this node (its URLs are this machine's); ``body(actor)`` serves until told to stop
    and returns the Outcome. The actor is killed in every case."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from rsd_ray.actors.serve_actor import SERVE_ACTOR_NAME, ServeActor
    check_capacity(spec.rack)
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    actor = ServeActor.options(name=SERVE_ACTOR_NAME, namespace=NAMESPACE, scheduling_strategy=here).remote(
        spec, options, version, tuple(faults))
    try:
        return body(actor)
    except ray.exceptions.RayTaskError as err:
        raise err.as_instanceof_cause() from None
    finally:
        ray.kill(actor)
        time.sleep(0)
