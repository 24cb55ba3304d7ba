"""Command-line values checked before anything runs: finite numbers and writable output paths."""
from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

from rsd_ray.config.errors import ConfigError


def finite(kind, lo=None):
    """An argparse type: a finite number of ``kind`` (NaN and infinity are refused at once), ≥ ``lo``."""

    def parse(text: str):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r}: give a finite number")
        if kind is int and value != int(value):
            raise argparse.ArgumentTypeError(f"{text!r}: give a whole number")
        if lo is not None and value < lo:
            raise argparse.ArgumentTypeError(f"{text!r}: must be ≥ {lo}")
        return kind(value)
    parse.__name__ = kind.__name__
    return parse


def writable(path: str | None, flag: str) -> None:
    """Refuse an output path before anything runs, not after the run has finished."""
    if not path:
        return
    target = Path(path)
    if target.is_dir():
        raise ConfigError("command line", flag, path, "is a directory; give a file name")
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise ConfigError("command line", flag, path, f"folder {folder} does not exist; create it or choose another")
    existed = target.exists()
    try:                             # tried, not inferred: permissions lie for root and for /proc-like folders
        with open(target, "a"):
            pass
    except OSError as err:
        raise ConfigError("command line", flag, path, f"cannot be written ({err.strerror or err}); choose "
                                                      "another path") from None
    if not existed:
        target.unlink()


def writable_dir(path: str, flag: str) -> None:
    """An output folder: made now if missing, and refused before anything runs when it cannot be written."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError("command line", flag, path, f"cannot be made ({err.strerror or err}); choose another "
                                                      "folder") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError("command line", flag, path, "is not writable here; choose another folder")
