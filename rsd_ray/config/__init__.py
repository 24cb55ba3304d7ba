"""Configuration: presets and user YAML read into frozen, validated specs."""
from rsd_ray.config.errors import ConfigError
from rsd_ray.config.loader import load_part, load_run, presets
from rsd_ray.config.schema import replace
from rsd_ray.config.specs import (GIB, MIB, CompilerSpec, DeviceSpec, EngineSpec, LengthSpec, LinkSpec,
                                  ModelSpec, PoolSpec, RackSpec, RouterSpec, RunSpec, WorkloadSpec)

__all__ = ["ConfigError", "load_part", "load_run", "presets", "replace", "GIB", "MIB", "CompilerSpec",
           "DeviceSpec", "EngineSpec", "LengthSpec", "LinkSpec", "ModelSpec", "RackSpec", "RouterSpec",
           "PoolSpec", "RunSpec", "WorkloadSpec"]
