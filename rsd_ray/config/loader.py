"""Presets and user YAML → a validated ``RunSpec``.

Every part (rack, device, model, engine, router, workload) is given by a preset
name from ``cluster_configs/<kind>/``, a path to the user's own YAML, or an
inline mapping. The specs check themselves (``specs``), the rules across parts
included; here only what a run file may name, and that the files it names exist.
"""
from __future__ import annotations

import dataclasses
import importlib.resources
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from rsd_ray.config.checkpoint import read_config, read_config_file
from rsd_ray.config.errors import ConfigError
from rsd_ray.config.schema import read_spec, replace
from rsd_ray.config.specs import (CompilerSpec, DeviceSpec, EngineSpec, ModelSpec, RackSpec,
                                  RouterSpec, RunSpec, WorkloadSpec)


def _config_root() -> Path:
    """The shipped presets: ``cluster_configs/`` is installed as ``rsd_ray.cluster_configs``."""
    try:
        return Path(str(importlib.resources.files("rsd_ray.cluster_configs")))
    except ModuleNotFoundError:  # running from a source tree that is not installed
        return Path(__file__).resolve().parents[2] / "cluster_configs"


CONFIG_ROOT = _config_root()
KINDS = {"devices": DeviceSpec, "racks": RackSpec, "models": ModelSpec, "engines": EngineSpec,
         "routers": RouterSpec, "workloads": WorkloadSpec, "compilers": CompilerSpec}
PARTS = {"rack": "racks", "model": "models", "engine": "engines", "router": "routers", "workload": "workloads",
         "compiler": "compilers"}            # a run's fields that name a part: a preset, a YAML path or a mapping
DEFAULT_RUN = {"rack": "atom-server", "model": "llama3-8b", "tp": 4, "engine": "default",
               "router": "default", "workload": "default", "compiler": {},
               "duration_s": 30.0, "epoch_s": 0.05, "drain_s": 120.0, "seed": 0,
               "recover": False, "prefill": {}}
UNSOURCED = {"name", "description", "estimated", "sources", "device"}


def presets(kind: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_ROOT / kind).glob("*.yaml"))


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last, silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"the key {key!r} is given twice",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_yaml(path: Path) -> Any:
    """A YAML file's data, or a ``ConfigError`` naming the file and, for a syntax error, its line and column."""
    try:
        return yaml.load(path.read_text(), Loader=_UniqueKeyLoader)   # noqa: S506  (a safe loader)
    except UnicodeDecodeError:
        raise ConfigError(str(path), "<file>", "not text", "a YAML file is UTF-8 text; is this the right file?") \
            from None
    except OSError as err:
        raise ConfigError(str(path), "<file>", str(path), f"cannot be read ({err.strerror or err})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "<file>"
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(str(path), where, "invalid YAML", problem) from None


def from_folder(ref: Any, folder: Path | None) -> Any:
    """A path written inside a YAML file, read from that file's ``folder`` (not the current one) when it names
    something there; a preset name, an absolute path or a mapping is returned as it is."""
    if folder is None or not isinstance(ref, str):
        return ref
    return str(folder / ref) if not Path(ref).is_absolute() and (folder / ref).exists() else ref


def _paths_from(kind: str, data: Any, folder: Path | None) -> Any:
    """A part's own paths (a rack's ``device``, a workload's ``trace.path``), read from ``folder``."""
    if not isinstance(data, Mapping):
        return data
    if kind == "racks" and "device" in data:
        return {**data, "device": from_folder(data["device"], folder)}
    if kind == "workloads" and isinstance(data.get("trace"), Mapping) and "path" in data["trace"]:
        return {**data, "trace": {**data["trace"], "path": from_folder(data["trace"]["path"], folder)}}
    return data


def load_part(kind: str, ref: Any, source: str, folder: Path | None = None):
    """A preset name, a YAML path, or an inline mapping → the kind's spec. ``folder``: that of the file
    that gave ``ref`` (its relative paths are read from there)."""
    cls = KINDS[kind]
    if isinstance(ref, cls):
        return ref
    ref = from_folder(ref, folder)
    if isinstance(ref, Mapping):
        data, where = _paths_from(kind, ref, folder), source
    elif kind == "workloads" and isinstance(ref, str) and ref.startswith("trace:"):     # trace:FORMAT:PATH
        fmt, _, path = ref[len("trace:"):].partition(":")
        data, where = _paths_from(kind, {"arrival": "trace", "trace": {"format": fmt, "path": path}}, folder), source
    elif kind == "models" and isinstance(ref, (str, Path)) and (Path(ref) / "config.json").is_file():   # HF dir
        return read_config(ref).model_spec(Path(ref).resolve().name, checkpoint=str(Path(ref).resolve()))
    elif kind == "models" and isinstance(ref, (str, Path)) and str(ref).endswith(".json") and Path(ref).is_file():
        return read_config_file(ref).model_spec(Path(ref).resolve().parent.name, where=str(ref))   # no weights
    elif isinstance(ref, (str, Path)):
        path = Path(ref)
        if not (path.suffix in (".yaml", ".yml") and path.exists()):
            path = CONFIG_ROOT / kind / f"{ref}.yaml"
        if not path.exists():
            raise ConfigError(source, kind.rstrip("s"), str(ref),
                              f"no such file or preset; presets: {', '.join(presets(kind))}")
        data, where = _paths_from(kind, read_yaml(path), path.parent), str(path)
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


def load_run(source: Any = None, router_fields: Mapping | None = None, prefill_fields: Mapping | None = None,
             engine_options: Sequence[tuple[str, Mapping]] = (), **overrides) -> RunSpec:
    """Build a RunSpec from a run YAML (or defaults) plus explicit overrides; ``router_fields`` and
    ``prefill_fields`` (the command line's) change those fields of the file's before the run is checked as a
    whole (a file's prefill pool and ``--prefill-instances`` belong together). ``engine_options``: (flag,
    fields) pairs that change the run's engine together (``--max-num-seqs`` and ``--max-num-batched-tokens``
    are checked against each other, an error names the flag of the field it blames), before a prefill
    engine given as the fields that differ starts from it."""
    where, folder, loaded_fields = "<defaults>", None, set()
    data = dict(DEFAULT_RUN)
    if isinstance(source, (str, Path)):
        where, folder = str(source), Path(source).parent
        if not Path(source).is_file():
            raise ConfigError("command line", "--config", where, "no such file; give the path of a run YAML")
        loaded = read_yaml(Path(source))
        if not isinstance(loaded, Mapping):
            raise ConfigError(where, "<top>", loaded, "a run file is a mapping of " + ", ".join(DEFAULT_RUN))
        data.update(loaded)
        loaded_fields = set(loaded)      # given by the file: its relative paths are from its folder
    elif isinstance(source, Mapping):
        data.update(source)
    data.update((key, value) for key, value in overrides.items() if value is not None)
    for key in data:
        if key not in DEFAULT_RUN:
            raise ConfigError(where, key, data[key], f"unknown run field; allowed: {', '.join(DEFAULT_RUN)}")
    parts = {field: load_part(kind, data.pop(field), where, folder if field in loaded_fields else None)
             for field, kind in PARTS.items() if field in data}
    if "rack" in parts:
        parts["device"] = load_part("devices", parts["rack"].device, f"rack {parts['rack'].name}")
    if engine_options:
        try:
            parts["engine"] = replace(parts["engine"], where, **{k: v for _, f in engine_options for k, v in f.items()})
        except ConfigError as err:
            blamed = [flag for flag, fields in engine_options if err.field in fields]
            raise ConfigError(blamed[0] if blamed else f"{where} and the command line", err.field, err.value,
                              err.fix) from None
    if router_fields or prefill_fields:
        where = f"{where} and the command line"
        parts["router"] = replace(parts["router"], where, **(router_fields or {}))
        given = data["prefill"] if isinstance(data["prefill"], Mapping) else {}
        data["prefill"] = {**given, **(prefill_fields or {})}
    data["prefill"] = _prefill(data["prefill"], parts.get("engine"), where, folder if "prefill" in loaded_fields
                               else None)
    spec = read_spec(RunSpec, {**data, **parts}, where)
    check_files(spec, where)
    return spec


def _prefill(data: Any, engine: EngineSpec | None, where: str, folder: Path | None) -> Any:
    """The prefill pool's part: its ``engine`` a preset, a YAML path, or a mapping of the fields in which it
    differs from the run's engine (as a prefill worker's arguments differ from a decode worker's)."""
    if not isinstance(data, Mapping) or data.get("engine") is None:
        return data
    ref = data["engine"]
    if isinstance(ref, Mapping) and engine is not None:
        ref = {**dataclasses.asdict(engine), **ref}
        return {**data, "engine": read_spec(EngineSpec, ref, where, "prefill.engine")}
    return {**data, "engine": load_part("engines", ref, where, folder)}


def check_files(spec: RunSpec, where: str) -> None:
    """What a spec names on this machine exists (a fact of the machine, not of the spec: not a validator)."""
    trace = spec.workload.trace
    if trace is not None and not Path(trace.path).is_file():
        raise ConfigError(where, "workload.trace.path", trace.path,
                          f"not found{'' if Path(trace.path).parent.is_dir() else ' (nor its folder)'}: "
                          "give the path of a trace file, as trace:FORMAT:PATH or workload.trace.path")
