"""Presets and user YAML → a validated ``RunSpec``.

Every part (rack, device, model, engine, router, workload) is given by a preset
name from ``cluster_configs/<kind>/``, a path to the user's own YAML, or an
inline mapping. Checks that need two parts at once (TP against the rack and the
model) happen here too, so nothing starts on a config that cannot run.
"""
from __future__ import annotations

import dataclasses
import importlib.resources
import math
from pathlib import Path
from typing import Any, Mapping

import yaml

from rsd_ray.config.checkpoint import read_config
from rsd_ray.config.errors import ConfigError
from rsd_ray.config.schema import read_spec
from rsd_ray.config.specs import (CompilerSpec, DeviceSpec, EngineSpec, ModelSpec, RackSpec,
                                  RouterSpec, RunSpec, WorkloadSpec)



def _config_root() -> Path:
    """The shipped presets: ``cluster_configs/`` is installed as ``rsd_ray.cluster_configs``."""
    try:
        return Path(str(importlib.resources.files("rsd_ray.cluster_configs")))
    except ModuleNotFoundError:  # running from a source tree that is not installed
        return Path(__file__).resolve().parents[2] / "cluster_configs"


CONFIG_ROOT = _config_root()
KINDS = {"devices": DeviceSpec, "racks": RackSpec, "models": ModelSpec,
         "engines": EngineSpec, "routers": RouterSpec, "workloads": WorkloadSpec}
RUN_FIELDS = ("rack", "model", "tp", "engine", "router", "workload", "compiler",
              "duration_s", "epoch_s", "drain_s", "seed", "recover")
DEFAULT_RUN = {"rack": "atom-server", "model": "llama3-8b", "tp": 4, "engine": "default",
               "router": "default", "workload": "default", "compiler": {},
               "duration_s": 30.0, "epoch_s": 0.05, "drain_s": 120.0, "seed": 0,
               "recover": False}
UNSOURCED = {"name", "description", "estimated", "sources", "device"}


def presets(kind: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_ROOT / kind).glob("*.yaml"))


def read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(str(path), "<file>", "unparseable YAML", str(err).splitlines()[0]) from err


def load_part(kind: str, ref: Any, source: str):
    """A preset name, a YAML path, or an inline mapping → the kind's spec."""
    cls = KINDS[kind]
    if isinstance(ref, cls):
        return ref
    if isinstance(ref, Mapping):
        data, where = ref, source
    elif kind == "workloads" and isinstance(ref, str) and ref.startswith("trace:"):     # trace:FORMAT:PATH
        fmt, _, path = ref[len("trace:"):].partition(":")
        data, where = {"arrival": "trace", "trace": {"format": fmt, "path": path}}, source
    elif kind == "models" and isinstance(ref, (str, Path)) and (Path(ref) / "config.json").is_file():   # HF dir
        return read_config(ref).model_spec(Path(ref).resolve().name, checkpoint=str(Path(ref).resolve()))
    elif isinstance(ref, (str, Path)):
        path = Path(ref)
        if not (path.suffix in (".yaml", ".yml") and path.exists()):
            path = CONFIG_ROOT / kind / f"{ref}.yaml"
        if not path.exists():
            raise ConfigError(source, kind.rstrip("s"), str(ref),
                              f"no such file or preset; presets: {', '.join(presets(kind))}")
        data, where = read_yaml(path), str(path)
    else:
        raise ConfigError(source, kind.rstrip("s"), ref, "give a preset name, a YAML path or a mapping")
    spec = read_spec(cls, data, where, kind.rstrip("s") if isinstance(ref, Mapping) else "")
    if kind in ("devices", "racks", "models"):
        _check_sources(data, where)
    return spec


def _check_sources(data: Mapping, where: str) -> None:
    """Every number in a hardware or model file says where it comes from."""
    sources = data.get("sources") or {}
    for path in _numeric_paths(data):
        parts = path.split(".")
        if not any(".".join(parts[:i]) in sources for i in range(1, len(parts) + 1)):
            raise ConfigError(where, path, _lookup(data, parts),
                              f"add a 'sources: {{{path}: ...}}' entry saying where the number comes from")


def _numeric_paths(data: Mapping, prefix: str = ""):
    for key, value in data.items():
        if key in UNSOURCED:
            continue
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            yield from _numeric_paths(value, path)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            yield path


def _lookup(data, parts):
    for p in parts:
        data = data[p]
    return data


def load_run(source: Any = None, **overrides) -> RunSpec:
    """Build a RunSpec from a run YAML (or defaults) plus explicit overrides."""
    where = "<defaults>"
    data = dict(DEFAULT_RUN)
    if isinstance(source, (str, Path)):
        where = str(source)
        if not Path(source).is_file():
            raise ConfigError("command line", "--config", where, "no such file; give the path of a run YAML")
        loaded = read_yaml(Path(source))
        if not isinstance(loaded, Mapping):
            raise ConfigError(where, "<top>", loaded, "a run file is a mapping of " + ", ".join(RUN_FIELDS))
        data.update(loaded)
    elif isinstance(source, Mapping):
        data.update(source)
    for key, value in overrides.items():
        if value is not None:
            data[key] = value
    for key in data:
        if key not in RUN_FIELDS:
            raise ConfigError(where, key, data[key], f"unknown run field; allowed: {', '.join(RUN_FIELDS)}")
    rack = load_part("racks", data["rack"], where)
    device = load_part("devices", rack.device, f"rack {rack.name}")
    model = load_part("models", data["model"], where)
    spec = RunSpec(rack=rack, device=device, model=model, tp=run_number(data, "tp", int, where),
                   engine=load_part("engines", data["engine"], where),
                   router=load_part("routers", data["router"], where),
                   workload=load_part("workloads", data["workload"], where),
                   compiler=read_spec(CompilerSpec, data["compiler"] or {}, where, "compiler"),
                   duration_s=run_number(data, "duration_s", float, where),
                   epoch_s=run_number(data, "epoch_s", float, where),
                   drain_s=float(run_number(data, "drain_s", float, where, allow_zero=True)),
                   seed=run_number(data, "seed", int, where, allow_zero=True),
                   recover=run_flag(data, "recover", where))
    validate_run(spec, where)
    return spec


def run_flag(data, key, where) -> bool:
    if not isinstance(data[key], bool):
        raise ConfigError(where, key, data[key], "must be true or false")
    return data[key]


def run_number(data, key, tp, where, allow_zero=False):
    """A top-level number of a run (tp, duration_s, ...): finite, positive (or ≥ 0), of type ``tp``."""
    value = data[key]
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and tp is int:
        ok = float(value) == int(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(where, key, value, f"must be a finite {'non-negative' if allow_zero else 'positive'} "
                                             f"{'integer' if tp is int else 'number'}")
    return tp(value)


def check_tp(m: ModelSpec, tp: int, where: str, field: str = "tp") -> None:
    """The TP degrees the compiler's split cuts exactly: dividing the heads and the MLP columns, and dividing
    the KV heads or a multiple of them."""
    if m.num_heads % tp or m.intermediate_size % tp:
        ok = [t for t in range(1, 65) if not m.num_heads % t and not m.intermediate_size % t]
        raise ConfigError(where, field, tp, f"{m.name} has {m.num_heads} heads and intermediate "
                                            f"{m.intermediate_size}; tp must divide both: {ok}")
    if m.num_kv_heads % tp and tp % m.num_kv_heads:
        raise ConfigError(where, field, tp, f"{m.name} has {m.num_kv_heads} KV heads; tp must divide them "
                                            "or be a multiple of them (KV heads are then replicated)")


def validate_run(spec: RunSpec, where: str) -> None:
    """Checks across parts: the TP degree against the model and the rack."""
    from rsd_ray.router import POLICIES  # the registry is the one list of policy names

    m, r, tp = spec.model, spec.rack, spec.tp
    if spec.router.policy not in POLICIES:
        raise ConfigError(where, "router.policy", spec.router.policy, f"choose one of: {', '.join(sorted(POLICIES))}")
    check_tp(spec.model, tp, where)
    total = r.servers * r.cards_per_server
    if tp > total:
        raise ConfigError(where, "tp", tp, f"rack {r.name} has only {total} cards")
    if tp > r.cards_per_server and tp % r.cards_per_server:
        raise ConfigError(where, "tp", tp, f"a group spanning servers must use whole servers "
                                           f"(a multiple of {r.cards_per_server})")
    if r.cards_per_server % r.switches_per_server:
        raise ConfigError(r.name, "switches_per_server", r.switches_per_server,
                          f"must divide cards_per_server ({r.cards_per_server})")
    w = spec.workload
    if w.arrival == "trace" and not (w.trace and Path(w.trace.path).is_file()):
        raise ConfigError(where, "workload.trace.path", w.trace.path if w.trace else None,
                          "arrival: trace needs a trace file: give trace:FORMAT:PATH or workload.trace.path")
    if w.arrival == "offline" and w.num_prompts <= 0:
        raise ConfigError(where, "workload.num_prompts", w.num_prompts, "offline runs need num_prompts ≥ 1")
    if w.arrival in ("poisson", "gamma") and w.rate <= 0:
        raise ConfigError(where, "workload.rate", w.rate, f"{w.arrival} arrivals need a rate > 0 (requests/s)")
    if w.arrival == "closed" and w.concurrency <= 0:
        raise ConfigError(where, "workload.concurrency", w.concurrency, "a closed loop needs concurrency ≥ 1")
    max_len = spec.engine.max_model_len or m.max_seq_len
    if max_len > m.max_seq_len:
        raise ConfigError(where, "engine.max_model_len", max_len, f"≤ {m.max_seq_len} for {m.name}")
    if not spec.engine.enable_chunked_prefill and spec.engine.max_num_batched_tokens < max_len:
        raise ConfigError(where, "engine.max_num_batched_tokens", spec.engine.max_num_batched_tokens,
                          f"without chunked prefill a whole prompt must fit one step: use ≥ {max_len} "
                          "or enable_chunked_prefill: true")
    e = spec.engine
    if e.enable_prefix_caching and e.hash_block_tokens % e.block_size:
        raise ConfigError(where, "engine.hash_block_tokens", e.hash_block_tokens,
                          f"a cached block must be whole KV blocks: use a multiple of block_size ({e.block_size})")
    blocks = spec.engine.num_blocks_override
    if blocks and blocks * spec.engine.block_size < max_len:
        raise ConfigError(where, "engine.num_blocks_override", blocks,
                          f"{blocks} blocks of {spec.engine.block_size} tokens cannot hold one {max_len}-token "
                          f"sequence; use ≥ {-(-max_len // spec.engine.block_size)} or 0 (from the memory plan)")
    if spec.epoch_s > spec.duration_s:
        raise ConfigError(where, "epoch_s", spec.epoch_s, f"must not exceed duration_s ({spec.duration_s})")


def replace(spec: RunSpec, where: str = "<replace>", **changes) -> RunSpec:
    """A copy of ``spec`` with some parts changed, validated again."""
    new = dataclasses.replace(spec, **changes)
    validate_run(new, where)
    return new
