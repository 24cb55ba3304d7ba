"""`rsd-ray`: run the rack, print a compiled plan, list presets."""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import io
import json
import os
import signal
import sys
from contextlib import nullcontext, redirect_stdout

from rsd_ray import signals
from rsd_ray.config import (ConfigError, EngineSpec, ModelSpec, RouterSpec, RunSpec, WorkloadSpec, load_part,
                            load_run, presets, replace)
from rsd_ray.config.arguments import finite, writable
from rsd_ray.config.schema import choices, read_spec
from rsd_ray.plugins import renderer


class HelpFormatter(argparse.HelpFormatter):
    """Every option's help says its default (where it has one and does not say it already)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default not in (None, False, [], argparse.SUPPRESS) and "default" not in text and action.option_strings:
            text += " (default: %(default)s)"
        return text


class Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


# vLLM's engine options → (EngineSpec field, type, what it does): the same field as the engine YAML sets
VLLM_ENGINE_OPTIONS = (
    ("--max-num-seqs", "max_num_seqs", int, "the most sequences in a step's batch"),
    ("--max-num-batched-tokens", "max_num_batched_tokens", int, "the most tokens in one step"),
    ("--max-model-len", "max_model_len", int, "context length: prompt + output tokens (0: the model's)"),
    ("--block-size", "block_size", int, "tokens per KV-cache block"),
    ("--gpu-memory-utilization", "kv_cache_fraction", float,
     "the share of each card's memory the instance may use (weights, workspace, KV cache)"),
    ("--num-gpu-blocks-override", "num_blocks_override", int, "KV blocks per instance instead of the plan's"),
    ("--enable-chunked-prefill", "enable_chunked_prefill", bool, "split long prompts over steps"),
    ("--enable-prefix-caching", "enable_prefix_caching", bool,
     "automatic prefix caching: a prompt's cached leading blocks are not computed again"),
    ("--async-scheduling", "async_scheduling", bool, "schedule step n+1 while step n runs"),
    ("--kv-cache-dtype", "kv_cache_dtype", str, "each cached K and V entry's format (fp8, int8: one byte)"),
    ("--kv-offloading-size", "kv_offloading_size", float, "GiB of host memory per instance for prefix blocks "
     "evicted from the cards (with --enable-prefix-caching)"),
    ("--scheduling-policy", "scheduling_policy", str, "fcfs, or priority: requests by priority, the lowest "
     "preempted first"),
)
VLLM_DTYPES = {"auto": None, "half": "fp16", "float16": "fp16", "fp16": "fp16", "bfloat16": "bf16", "bf16": "bf16",
               "float": "fp32", "float32": "fp32", "fp32": "fp32"}


def _spec_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="a run YAML (rack, model, tp, engine, router, workload, ...)")
    from rsd_ray.config.loader import DEFAULT_RUN, load_part
    p.add_argument("--rack", help=f"preset or YAML path (presets: {', '.join(presets('racks'))}; default "
                                  f"{DEFAULT_RUN['rack']})")
    p.add_argument("--model", help=f"preset or YAML path (presets: {', '.join(presets('models'))}; default "
                                   f"{DEFAULT_RUN['model']})")
    p.add_argument("--tp", "--tensor-parallel-size", "-tp", dest="tp", type=finite(int),
                   help=f"tensor-parallel degree: cards per instance (default {DEFAULT_RUN['tp']})")
    p.add_argument("--dtype", choices=list(VLLM_DTYPES), help="activations' and unquantised weights' data type "
                   "(model.dtype; vLLM's names or ours; default: the model preset's)")
    p.add_argument("--quantization", "-q", choices=choices(ModelSpec, "quantization"), help="the linear layers' weights and what their "
                   "matmuls compute in (model.quantization): w8a16/w4a16 weight-only INT8/INT4, w8a8 INT8, fp8 FP8")
    p.add_argument("--engine", help=f"engine preset or YAML path (presets: {', '.join(presets('engines'))}; "
                                    f"default {DEFAULT_RUN['engine']})")
    p.add_argument("--pipeline-chunks", type=finite(int), help="layer pipelining: chunks per step (1 = off)")
    engine = p.add_argument_group("engine options, as vLLM names them (each sets the engine YAML's field)")
    defaults = load_part("engines", DEFAULT_RUN["engine"], "the default engine")
    for flag, name, kind, what in VLLM_ENGINE_OPTIONS:
        default = getattr(defaults, name)
        text = f"{what} (engine.{name}; default {default})"
        if kind is bool:
            engine.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=text)
        elif kind is str:
            engine.add_argument(flag, dest=name, choices=choices(EngineSpec, name), help=text)
        else:
            engine.add_argument(flag, dest=name, type=finite(kind), help=text)


def _load_args(p: argparse.ArgumentParser, epoch_default: float = 0.05) -> None:
    from rsd_ray.config.loader import DEFAULT_RUN
    for part in ("router", "workload"):
        p.add_argument(f"--{part}", help=f"{part} preset or YAML path (presets: {', '.join(presets(part + 's'))}; "
                                         f"default {DEFAULT_RUN[part]})")
    p.add_argument("--duration", dest="duration_s", type=finite(float),
                   help=f"virtual seconds of arrivals (default {DEFAULT_RUN['duration_s']:g})")
    p.add_argument("--epoch", dest="epoch_s", type=finite(float),
                   help=f"virtual seconds per epoch (default {epoch_default:g}): routing staleness, closed-loop "
                        "reaction and the governor's sampling period; longer runs faster, see the README")
    p.add_argument("--rate", type=finite(float), help="Poisson arrivals, requests/s for the whole rack")
    p.add_argument("--concurrency", type=finite(int), help="closed loop: concurrent clients for the whole rack")
    p.add_argument("--seed", type=finite(int), help=f"the run's random seed (default {DEFAULT_RUN['seed']})")
    p.add_argument("--num-prompts", type=finite(int),
                   help="offline, as `vllm bench throughput`: this many requests all at t = 0, run until the last "
                        "finishes (throughput over the makespan)")
    p.add_argument("--input-len", type=finite(int), help="every prompt this many tokens (fixed)")
    p.add_argument("--prefill-instances", type=finite(int, lo=0), help="disaggregated prefill and decode: the "
                   "first this many instances prefill, the rest decode, the KV cache moved between them over the "
                   "links (router.prefill_instances; 0: aggregated)")
    p.add_argument("--kv-transfer", choices=choices(RouterSpec, "kv_transfer"), help="disaggregated: the KV cache "
                   "moves after the prefill (vLLM, Dynamo) or layer by layer as it is computed (Splitwise)")
    p.add_argument("--prefill-tp", type=finite(int, lo=1), help="disaggregated: cards per prefill instance "
                   "(prefill.tp; default: --tp)")
    p.add_argument("--prefill-engine", help="disaggregated: the prefill instances' engine, a preset or YAML path "
                   "(prefill.engine; default: the run's engine, its options included)")
    p.add_argument("--output-len", type=finite(int), help="every answer this many tokens (fixed)")


SNAPSHOT_WIDTH = 110     # columns of a saved report
DEFAULT_REFRESH_S = 0.5  # wall seconds between the live dashboard's frames
DEFAULT_TRACE_WINDOW = "0:1"   # the virtual seconds a --trace timeline covers


def trace_window(text: str) -> tuple[float, float]:
    """``START:END`` in virtual seconds, finite, 0 ≤ START < END."""
    import math
    try:
        start, end = (float(x) for x in text.split(":"))
    except ValueError:
        raise ConfigError("command line", "--trace-window", text, "give START:END in virtual seconds, e.g. 0:2") from None
    if not (math.isfinite(start) and math.isfinite(end)) or not 0 <= start < end:
        raise ConfigError("command line", "--trace-window", text, "needs finite 0 <= START < END")
    return start, end


def _rack_args(p: argparse.ArgumentParser, out_help: str) -> None:
    """Where the rack runs and where its results go (``run`` and ``serve``)."""
    p.add_argument("--executor", default="ray", choices=["ray", "inline"],
                   help="ray: every card an actor (default); inline: one process, for tests and fast sweeps")
    p.add_argument("--address", help="join a Ray cluster (auto or HOST:PORT) instead of starting a local one")
    p.add_argument("--out", help=out_help)
    p.add_argument("--fault", action="append", default=[], metavar="SPEC",
                   help="inject a fault (repeatable): card:ID@Ts, server:S@Ts, ambient:serverS=+DC@Ts, "
                        "link:A->B=P%%@Ts")
    p.add_argument("--chaos", type=finite(int), metavar="SEED",
                   help="inject random faults of every kind at random times (one every ~20 virtual s); "
                        "the same seed gives the same faults")
    p.add_argument("--recover", action="store_true", default=None,
                   help="restart a lost card's actor, reload its shards and let its instance rejoin")


def _spec(args) -> RunSpec:
    """The run the options describe; 0 is a value (refused where out of range), never "unset"."""
    rate, concurrency = getattr(args, "rate", None), getattr(args, "concurrency", None)
    prompts = getattr(args, "num_prompts", None)
    if sum(x is not None for x in (rate, concurrency, prompts)) > 1:
        raise ConfigError("command line", "--concurrency" if concurrency is not None else "--num-prompts",
                          concurrency if concurrency is not None else prompts,
                          "give one of --rate (open-loop Poisson), --concurrency (closed loop) or --num-prompts "
                          "(offline)")
    if prompts is not None and prompts < 1:
        raise ConfigError("command line", "--num-prompts", prompts, "an offline run needs at least 1 prompt")
    if rate is not None and rate <= 0:
        raise ConfigError("command line", "--rate", rate, "requests/s must be > 0")
    if concurrency is not None and concurrency < 1:
        raise ConfigError("command line", "--concurrency", concurrency, "a closed loop needs at least 1 client")
    compiler = {"pipeline_chunks": args.pipeline_chunks} if args.pipeline_chunks is not None else None
    pools = {name: getattr(args, name) for name in ("prefill_instances", "kv_transfer")
             if getattr(args, name, None) is not None}
    prefill = {}
    if getattr(args, "prefill_tp", None) is not None:
        prefill["tp"] = args.prefill_tp
    if getattr(args, "prefill_engine", None) is not None:
        prefill["engine"] = load_part("engines", args.prefill_engine, "--prefill-engine")
    options = [(flag, {name: getattr(args, name)}) for flag, name, _, _ in VLLM_ENGINE_OPTIONS
               if getattr(args, name, None) is not None]
    spec = load_run(args.config, router_fields=pools, prefill_fields=prefill, engine_options=options, rack=args.rack,
                    model=args.model, tp=args.tp, engine=args.engine, compiler=compiler,
                    **{k: getattr(args, k, None) for k in ("router", "workload", "duration_s", "epoch_s", "seed",
                                                           "recover")})
    change = ({"arrival": "poisson", "rate": rate, "per_server": False} if rate is not None else
              {"arrival": "closed", "concurrency": concurrency, "per_server": False} if concurrency is not None else
              {"arrival": "offline", "num_prompts": prompts, "per_server": False} if prompts is not None else {})
    for flag, part in (("input_len", "input"), ("output_len", "output")):
        n = getattr(args, flag, None)
        if n is not None:
            if n < 1:
                raise ConfigError("command line", "--" + flag.replace("_", "-"), n, "a length is at least 1 token")
            change[part] = {"dist": "fixed", "mean": n}
    if change:
        data = {**dataclasses.asdict(spec.workload), **change}
        spec = replace(spec, "command line", workload=read_spec(WorkloadSpec, data, "command line", "workload"))
    dtype = VLLM_DTYPES.get(getattr(args, "dtype", None) or "auto")
    if dtype:
        spec = replace(spec, "command line", model=replace(spec.model, "--dtype", dtype=dtype))
    if getattr(args, "quantization", None):
        if spec.model.checkpoint:
            raise ConfigError("command line", "--quantization", args.quantization, "a checkpoint's weights are in "
                              "its own format: write a quantised one with rsd-ray make-model --quantize")
        spec = replace(spec, "command line", model=replace(spec.model, "--quantization", quantization=args.quantization))
    trace = spec.workload.trace
    if trace is not None:              # every row read now: a bad one is refused before anything runs
        from rsd_ray.workload.trace_readers import check
        check(trace.format, trace.path, trace.model)
    return spec


def cmd_run(args) -> int:
    from rsd_ray.compiler import check_plan
    from rsd_ray.plugins import get_executor
    from rsd_ray.rack.executor import RackLost
    from rsd_ray.rack.faults import from_args as faults_from_args
    from rsd_ray.report.results import dump, not_run

    spec = _spec(args)
    writable(args.out, "--out")
    writable(args.requests_csv, "--requests-csv")
    writable(args.snapshot, "--snapshot")
    writable(args.trace, "--trace")
    trace = (*trace_window(args.trace_window or DEFAULT_TRACE_WINDOW), args.trace) if args.trace else None
    refresh = DEFAULT_REFRESH_S if args.refresh is None else args.refresh
    if refresh <= 0:
        raise ConfigError("command line", "--refresh", refresh, "seconds between dashboard frames must be > 0")
    check_plan(spec)                   # refuse here, before Ray starts, not inside the controller actor
    faults = faults_from_args(args, spec)
    progress, console = not (args.no_progress or args.dashboard), None
    if progress or args.dashboard or not args.json:   # a terminal to draw on (a script's --json run needs none)
        from rich.console import Console
        console = Console(stderr=args.json)
    run_progress = renderer("run_progress")(console, spec.duration_s) if progress else nullcontext()
    dashboard = renderer("live_dashboard")(console) if args.dashboard else nullcontext()
    quiet = redirect_stdout(sys.stderr) if args.json else nullcontext()     # Ray's log lines stay off the JSON
    try:
        with run_progress as on_epoch, dashboard as show, quiet:
            outcome = get_executor(args.executor).run_session(spec, [on_epoch] if on_epoch else [], args.address,
                                                               show=show, faults=faults, refresh_s=refresh,
                                                               trace=trace)
    except KeyboardInterrupt:              # before the rack ran an epoch (or a second signal): say so, save that
        if args.out:
            dump(not_run(spec, args.executor, signals.reason(signals.first_received() or signal.SIGINT)), args.out)
        raise
    except RackLost as err:                # a card, host or node lost while the rack started: nothing ran
        if args.out:
            dump(not_run(spec, args.executor, str(err), status="failed"), args.out)
        raise
    with signals.graceful(signals.RECORD):  # a signal now lets the results be written, then sets the exit status
        return _report_run(args, outcome, console)


def _report_run(args, outcome, console) -> int:
    from rsd_ray.rack.outcome import EXIT_CODES
    from rsd_ray.report.results import build, dump, write_requests_csv
    doc = build(outcome)
    if args.out:
        dump(doc, args.out)
    if args.requests_csv:
        write_requests_csv(outcome, args.requests_csv)
    if args.json:
        json.dump(doc, sys.stdout)
        print()
    else:
        renderer("render_run")(doc, console)
        if args.out:
            console.print(f"results: {args.out}")
    if args.snapshot:
        from rich.console import Console
        record = Console(file=io.StringIO(), record=True, width=SNAPSHOT_WIDTH, force_terminal=True)
        renderer("render_run")(doc, record)
        record.save_svg(args.snapshot, title="rsd-ray run")
    if outcome.clipped:
        print(f"rsd-ray: {outcome.clipped} requests were shortened to fit max_model_len "
              f"{outcome.spec.engine.max_model_len or outcome.spec.model.max_seq_len} (counted as requests.clipped)",
              file=sys.stderr)
    if outcome.status != "completed":
        print(f"rsd-ray: run {outcome.status}: {outcome.reason}" + (f"; results so far in {args.out}" if args.out
                                                                      else ""), file=sys.stderr)
    return signals.exit_code(EXIT_CODES[outcome.status])


def cmd_serve(args) -> int:
    from rsd_ray.serve.command import run
    return run(_spec(args), args)


def cmd_sweep(args) -> int:
    from rsd_ray.sweep.command import run
    return run(_spec(args), args)


def cmd_compile(args) -> int:
    from rich.console import Console

    from rsd_ray.report.plan import describe
    render = renderer("render_compile")

    d = describe(_spec(args))
    if args.json:
        json.dump(d, sys.stdout, indent=1)
        print()
    else:
        render(d, Console())
    return 0


def cmd_presets(args) -> int:
    for kind in ("racks", "devices", "models", "engines", "routers", "workloads"):
        print(f"{kind}: {', '.join(presets(kind))}")
    return 0


CLIENT_COMMANDS = (   # commands with a module of their own: (name, help, module, add arguments, run)
    ("make-model", "write a small random Llama checkpoint (Hugging Face layout) for functional mode",
     "rsd_ray.functional.command", "add_make_model_arguments", "make_model"),
    ("generate", "generate real tokens from a checkpoint split over card actors", "rsd_ray.functional.command",
     "add_generate_arguments", "generate"),
    ("litellm-config", "write a LiteLLM proxy config.yaml for a running rack", "rsd_ray.serve.command",
     "add_litellm_arguments", "litellm_config"),
    ("bench", "benchmark an OpenAI-compatible server, as `vllm bench serve` does", "rsd_ray.serve.bench",
     "add_arguments", "run"),
    ("validate", "replay published GPU measurements and print predicted against measured",
     "rsd_ray.validation.command", "add_arguments", "run"),
    ("top", "a live dashboard of a serving rack (gRPC; no Ray here)", "rsd_ray.serve.watch", "add_top_arguments",
     "top"),
    ("smi", "rbln-smi's tables for a serving rack's cards", "rsd_ray.serve.watch", "add_smi_arguments", "smi"),
)


def parser(command: str | None = None) -> argparse.ArgumentParser:
    """Every command's parser; with ``command``, only that one's options are added (the others' modules,
    serving's and the clients' among them, are not imported: start-up stays short). A name that is no
    command adds none, and argparse refuses it with the list of commands."""
    from importlib.metadata import PackageNotFoundError, version

    from rsd_ray import __version__
    top = Parser(prog="rsd-ray", description="Emulate a rack of Rebellions ATOM cards.")
    try:
        ray_version = version("ray")
    except PackageNotFoundError:
        ray_version = "not installed"
    top.add_argument("--version", action="version", version=f"rsd-ray {__version__} (Ray {ray_version}, Python "
                     f"{sys.version.split()[0]})")
    sub = top.add_subparsers(dest="command", required=True)           # each command a Parser too

    def full(name: str) -> bool:
        return command in (None, name)

    run = sub.add_parser("run", help="run a scenario and print its summary")
    if full("run"):
        _spec_args(run)
        _load_args(run)
        _rack_args(run, "write the results JSON here")
        run.add_argument("--requests-csv", help="write one line per request here")
        run.add_argument("--json", action="store_true", help="print the results JSON on stdout")
        run.add_argument("--no-progress", action="store_true")
        run.add_argument("--dashboard", action="store_true", help="the live `rsd-ray top` dashboard while it runs")
        run.add_argument("--refresh", type=finite(float),
                         help=f"--dashboard: wall seconds between frames (default {DEFAULT_REFRESH_S})")
        run.add_argument("--snapshot", help="save the final report as SVG here")
        run.add_argument("--trace", help="write a Perfetto-readable timeline (Chrome trace JSON) here")
        run.add_argument("--trace-window",
                         help=f"the virtual seconds it covers, START:END (default {DEFAULT_TRACE_WINDOW})")
    run.set_defaults(func=cmd_run)
    sweep = sub.add_parser("sweep", help="run a grid of configurations in parallel: CSV, JSON, table, PNG")
    if full("sweep"):
        _spec_args(sweep)
        _load_args(sweep)
        from rsd_ray.sweep.command import add_arguments
        add_arguments(sweep)
    sweep.set_defaults(func=cmd_sweep)
    comp = sub.add_parser("compile", help="print the plan: shards, per-card memory, step costs, link volumes")
    if full("compile"):
        _spec_args(comp)
        comp.add_argument("--json", action="store_true")
    comp.set_defaults(func=cmd_compile)
    serve = sub.add_parser("serve", help="serve the rack: OpenAI-compatible HTTP, gRPC and Prometheus, in paced time")
    if full("serve"):
        _spec_args(serve)
        from rsd_ray.serve.command import SERVE_EPOCH_S
        _load_args(serve, SERVE_EPOCH_S)
        _rack_args(serve, "write the results JSON here when the server stops")
        serve.add_argument("--no-progress", action="store_true", help="no periodic status lines")
        from rsd_ray.serve.command import add_arguments as add_serve_arguments
        add_serve_arguments(serve)
    serve.set_defaults(func=cmd_serve)
    for name, help_text, module, add, run_it in CLIENT_COMMANDS:
        client = sub.add_parser(name, help=help_text)
        if full(name):
            getattr(importlib.import_module(module), add)(client)
        client.set_defaults(func=lambda args, module=module, run_it=run_it:
                            getattr(importlib.import_module(module), run_it)(args))
    pre = sub.add_parser("presets", help="list the shipped presets")
    pre.set_defaults(func=cmd_presets)
    return top


ONLY_WITH = {   # an option that means something only beside another: (its flag, whether it applies, what it needs)
    "address": ("--address", lambda a: getattr(a, "executor", None) == "ray" or getattr(a, "parallel", None) == "ray",
                "applies to --executor ray (or sweep's --parallel ray) only"),
    "trace_window": ("--trace-window", lambda a: a.trace, "applies with --trace only"),
    "refresh": ("--refresh", lambda a: getattr(a, "dashboard", True), "applies with --dashboard (or to top) only"),
}


def refuse_what_does_not_apply(args) -> None:
    """An option given where it does nothing is refused, not silently ignored."""
    for dest, (flag, applies, needs) in ONLY_WITH.items():
        if getattr(args, dest, None) is not None and not applies(args):
            raise ConfigError("command line", flag, getattr(args, dest), needs)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    args = parser(command).parse_args(argv)
    with signals.handled():          # SIGINT, SIGTERM and SIGHUP alike, in every phase (rsd_ray.signals)
        try:
            refuse_what_does_not_apply(args)
            code = args.func(args)
            sys.stdout.flush()           # a reader gone away is found here, not as an error at exit
            return code
        except ConfigError as err:
            print(f"rsd-ray: config error: {err}", file=sys.stderr)
            return 2
        except RuntimeError as err:      # e.g. the rack could not start (RackLost): say so in one line, never hang
            print(f"rsd-ray: {type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}",
                  file=sys.stderr)
            return 1
        except KeyboardInterrupt:        # before the run began, or a second signal (Ray re-raises it bare)
            signum = signals.first_received() or signal.SIGINT
            print(f"rsd-ray: {signals.reason(signum)} before the run began; nothing ran", file=sys.stderr)
            return 128 + signum
        except BrokenPipeError:          # `rsd-ray ... | head`: the reader left; end quietly, as a shell tool does
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())   # nothing more to flush at exit
            return 128 + signal.SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
