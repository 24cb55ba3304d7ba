"""``rsd-ray serve`` and ``rsd-ray litellm-config``: the command-line side of a served rack."""
from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import threading
from pathlib import Path

import yaml

from rsd_ray import signals
from rsd_ray.config import ConfigError

SERVE_EPOCH_S = 0.01       # a served rack's default epoch: the most a request waits for the rack to see it
STATUS_EVERY_S = 10.0      # how often the serving process prints the rack's state
BEHIND_WARN_S = 0.1        # the status line warns when clients are served this far (wall s) behind the pace
LITELLM_STRATEGIES = ("simple-shuffle", "least-busy", "usage-based-routing", "usage-based-routing-v2",
                      "latency-based-routing", "cost-based-routing")     # LiteLLM's router, as it names them
MASTER_KEY_ENV = "LITELLM_MASTER_KEY"      # where LiteLLM's proxy reads its master key
PUBLIC_MASTER_KEYS = ("sk-1234",)          # LiteLLM's documentation example: the proxy refuses it


def add_arguments(p: argparse.ArgumentParser) -> None:
    from rsd_ray.config.arguments import finite
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=finite(int, 1), default=8000, help="OpenAI-compatible HTTP port (default 8000)")
    p.add_argument("--grpc-port", type=finite(int, 0), default=50051, help="gRPC port (default 50051; 0: none)")
    p.add_argument("--pace", type=finite(float), default=1.0,
                   help="virtual seconds per wall second (1 = real time; 2 = twice as fast)")
    p.add_argument("--instance-ports", type=finite(int, 1),
                   help="also serve instance i's own API on this port + i (always at /instances/i/v1)")
    p.add_argument("--served-model-name", help="the model name clients send (default: the model preset's name)")
    p.add_argument("--tokenizer", help="a tokenizer.json to count prompt tokens (default: one per word)")
    p.add_argument("--drain", type=finite(float, 0), default=30.0,
                   help="after Ctrl-C or SIGTERM: wall seconds the accepted requests may take to finish")


def _check(args) -> None:
    for flag, value in (("--rate", args.rate), ("--concurrency", args.concurrency), ("--duration", args.duration_s)):
        if value is not None:
            raise ConfigError("command line", flag, value, "serve takes its requests from clients until it is "
                              "stopped; use `rsd-ray bench` against it, or `rsd-ray run` for a synthetic load")
    if args.pace <= 0:
        raise ConfigError("command line", "--pace", args.pace, "virtual seconds per wall second must be > 0")
    for flag, port in (("--port", args.port), ("--grpc-port", args.grpc_port)):
        if port > 65535:
            raise ConfigError("command line", flag, port, "a port is at most 65535")
    if args.instance_ports and args.instance_ports > 65535:
        raise ConfigError("command line", "--instance-ports", args.instance_ports, "a port is at most 65535")


def status_line(s: dict) -> str:
    """The periodic status of a served rack; it says so when clients are served behind the paced clock."""
    line = (f"t={s['t']:.1f} s virtual · pace {s['pace']:g} · lag {s['lag_s']:.3f} s · in flight {s['in_flight']} · "
            f"completed {s['completed']} · refused {s['refused']} · healthy instances {s['healthy']}/{s['instances']}")
    server_lag = max(s["delivery_lag_s"], s["loop_lag_s"])
    if server_lag > BEHIND_WARN_S:
        line += (f"\n[yellow]delivery behind[/]: tokens reach clients up to {s['delivery_lag_s']:.3f} s late and new "
                 f"requests wait up to {s['loop_lag_s']:.3f} s to be read — the server process cannot write as "
                 "fast as the rack makes tokens (fewer concurrent streams keep it up)")
    if s["rack_lag_s"] > BEHIND_WARN_S:
        line += (f"\n[yellow]rack behind[/]: the emulation runs {s['rack_lag_s']:.3f} s behind its paced clock; "
                 "a lower --pace keeps up")
    return line


def serve_spec(spec, args):
    """``serve`` defaults to ``SERVE_EPOCH_S`` epochs unless --epoch or the config file says otherwise."""
    from rsd_ray.config import replace
    from rsd_ray.config.loader import read_yaml
    if args.epoch_s is None:
        config = read_yaml(Path(args.config)) if args.config else {}
        if not (isinstance(config, dict) and "epoch_s" in config):
            spec = replace(spec, "command line", epoch_s=SERVE_EPOCH_S)
    return spec


def _serve(server, args, console) -> object:
    """Serve until a stop signal (or the rack stops), then drain; a second signal ends the drain now, a third
    exits at once (``rsd_ray.signals``). Returns the Outcome."""
    stop = threading.Event()
    with signals.graceful(lambda reason: stop.set()):
        urls = server.start()
        console.print(f"[bold]rsd-ray serve[/]: OpenAI API at {urls['openai']}  ·  metrics {urls['metrics']}"
                      + (f"  ·  gRPC {urls['grpc']}" if "grpc" in urls else ""))
        console.print(f"{len(urls['instances'])} instances, each at its own base URL "
                      f"({urls['instances'][0]} …); Ctrl-C or SIGTERM drains and stops")
        while not stop.wait(STATUS_EVERY_S if not args.no_progress else 1.0):
            if not server.running:
                break
            if not args.no_progress:
                console.print(status_line(server.status()))
    if stop.is_set():
        console.print(f"stopping: no new requests; draining for at most {args.drain:g} s (Ctrl-C again: now)")
    now = threading.Event()
    with signals.graceful(lambda reason: (now.set(), server.stop_now())):
        return server.shutdown(args.drain, now=now.is_set())


def run(spec, args) -> int:
    from rich.console import Console

    from rsd_ray import __version__
    from rsd_ray.config.arguments import writable
    from rsd_ray.compiler import check_plan
    from rsd_ray.rack.faults import from_args as faults_from_args

    _check(args)
    writable(args.out, "--out")
    spec = serve_spec(spec, args)
    check_plan(spec)
    faults = faults_from_args(args, spec, horizon_s=math.inf)     # a server runs until it is stopped
    from rsd_ray.serve.server import ServeOptions
    options = ServeOptions(args.host, args.port, args.grpc_port, args.pace, args.instance_ports,
                           args.served_model_name, args.tokenizer)
    if args.tokenizer and not Path(args.tokenizer).is_file():
        raise ConfigError("command line", "--tokenizer", args.tokenizer, "no such file; give a tokenizer.json")
    console = Console(stderr=True)
    from rsd_ray.plugins import get_executor
    outcome = get_executor(args.executor).serve_session(spec, options, args.address, __version__,
                                                         lambda server: _serve(server, args, console), faults)
    if signals.first_received():                                       # stopped by a signal (drained or not)
        outcome = dataclasses.replace(outcome, status="interrupted", reason=signals.reason(signals.first_received()))
    with signals.graceful(signals.RECORD):
        return _report(outcome, spec, args, console)


def _report(outcome, spec, args, console) -> int:
    from rsd_ray.plugins import renderer
    from rsd_ray.rack.outcome import EXIT_CODES
    from rsd_ray.report.results import build, dump
    doc = build(outcome)
    doc["served"] = {"pace": args.pace, "epoch_s": spec.epoch_s, "executor": args.executor}
    if args.out:
        dump(doc, args.out)
    renderer("render_run")(doc, console)
    if args.out:
        console.print(f"results: {args.out}")
    if outcome.status != "completed":
        print(f"rsd-ray: serve {outcome.status}: {outcome.reason}", file=sys.stderr)
    return signals.exit_code(EXIT_CODES[outcome.status])


def litellm_config(args) -> int:
    """Write a LiteLLM proxy config.yaml: one ``hosted_vllm/`` deployment per instance of a running rack (at
    its own port with --instance-ports, else at /instances/i/v1), LiteLLM's routing strategy among them, and
    the master key as LiteLLM documents it (the proxy refuses to start without one)."""
    import secrets

    import httpx
    from urllib.parse import urlsplit
    base = args.base_url.rstrip("/")
    if base.endswith("/v1"):
        base = base[:-3]
    key = args.master_key or f"os.environ/{MASTER_KEY_ENV}"
    if not key.startswith(("sk-", "os.environ/")) or key.strip() in PUBLIC_MASTER_KEYS:
        raise ConfigError("command line", "--master-key", args.master_key,
                          "LiteLLM's keys start with sk- and must not be a published example; leave it out to read "
                          f"it from ${MASTER_KEY_ENV}")
    try:
        model = httpx.get(f"{base}/v1/models", timeout=10).json()["data"][0]["id"]
        instances = httpx.get(f"{base}/v1/instances", timeout=10).json()["data"]
    except (httpx.HTTPError, KeyError, IndexError, ValueError) as err:
        raise ConfigError("command line", "--base-url", args.base_url,
                          f"no rsd-ray server answers there ({type(err).__name__}: {err}); start `rsd-ray serve`") from None
    url = urlsplit(base)

    def api_base(inst):
        if inst.get("port"):
            return f"{url.scheme}://{url.hostname}:{inst['port']}/v1"
        return f"{base}{inst['api_base']}"
    deployments = [{"model_name": args.model_name or model,
                    "litellm_params": {"model": f"hosted_vllm/{model}", "api_base": api_base(inst), "api_key": "none"},
                    "model_info": {"id": f"rsd-ray-instance-{inst['instance']}"}} for inst in instances]
    config = {"model_list": deployments, "router_settings": {"routing_strategy": args.routing_strategy},
              "general_settings": {"master_key": key}}
    text = yaml.safe_dump(config, sort_keys=False)
    if args.out:
        Path(args.out).write_text(text)
        print(f"wrote {args.out}: {len(deployments)} deployments of {model}, routing {args.routing_strategy}",
              file=sys.stderr)
    else:
        sys.stdout.write(text)
    if not args.master_key:
        print(f"the proxy reads its master key from ${MASTER_KEY_ENV}; clients send it as their API key. A new "
              f"one:\n  export {MASTER_KEY_ENV}=sk-{secrets.token_hex(24)}\n"
              f"  litellm --config {args.out or 'config.yaml'}", file=sys.stderr)
    return 0


def add_litellm_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base-url", default="http://127.0.0.1:8000", help="the running rack's URL "
                   "(default http://127.0.0.1:8000)")
    p.add_argument("--routing-strategy", default="simple-shuffle", choices=LITELLM_STRATEGIES,
                   help="LiteLLM's router among the instances (default simple-shuffle)")
    p.add_argument("--model-name", help="the name LiteLLM clients use (default: the served model's)")
    p.add_argument("--master-key", help=f"the proxy's master key, sk-… (default: read from ${MASTER_KEY_ENV} by the "
                   "proxy, as LiteLLM recommends)")
    p.add_argument("--out", help="write here (default: stdout)")
