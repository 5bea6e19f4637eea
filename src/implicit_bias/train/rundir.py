"""Run directories: atomic file writes, the config file, the metrics table and provenance."""

from __future__ import annotations

import os
import platform
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from ..errors import CorruptFileError, MissingFileError

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.csv"
CHECKPOINT_FILE = "checkpoint.safetensors"
PREVIOUS_CHECKPOINT_FILE = "checkpoint.prev.safetensors"  # the last good one, kept while the next is written
LOG_FILE = "train.log"
TEMPORARY_SUFFIX = ".tmp"


def atomic_write(path: str | Path, data: bytes | str, *, keep: str | Path | None = None) -> None:
    """Write ``data`` to ``path`` so that a reader (or a crash) sees the old file or the new one, never a mix:
    write a temporary file in the same folder, flush it to disk, then rename it over ``path``.

    With ``keep``, the old ``path`` is first renamed to ``keep`` — only once the new file is complete and on
    disk — so that the previous version survives too (a crash between the two renames leaves ``keep`` and no
    ``path``). The folder is flushed after the renames.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode() if isinstance(data, str) else data
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(payload)
            file.flush()
            os.fsync(file.fileno())
        if keep is not None and path.exists():
            os.replace(path, keep)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    """Flush a folder's entries (the renames) to disk, where the platform allows opening a folder."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:  # Windows cannot open a folder
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def remove_temporaries(folder: str | Path, name: str) -> None:
    """Delete the temporary files a killed :func:`atomic_write` of ``folder/name`` left behind."""
    for stale in Path(folder).glob(f".{name}.*{TEMPORARY_SUFFIX}"):
        stale.unlink(missing_ok=True)


def versions() -> dict[str, str]:
    """Versions of Python, torch, numpy and this package, and the platform — recorded with every run."""
    import numpy
    import torch

    from .. import __version__

    return {
        "python": sys.version.split()[0],
        "torch": str(torch.__version__),
        "numpy": numpy.__version__,
        "implicit_bias": __version__,
        "platform": platform.platform(),
    }


def write_yaml(path: str | Path, content: Mapping[str, Any]) -> None:
    """Atomically write ``content`` as block-style YAML."""
    atomic_write(path, yaml.safe_dump(dict(content), sort_keys=False, default_flow_style=False))


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with ``yaml.safe_load``; a missing, malformed or non-mapping file is a clear error."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"no such file: {str(path)!r}")
    try:
        content = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise CorruptFileError(f"{str(path)!r} is not valid YAML{where}: {getattr(error, 'problem', error)}") from None
    except UnicodeDecodeError:
        raise CorruptFileError(f"{str(path)!r} is not a text file") from None
    if not isinstance(content, dict):
        raise CorruptFileError(f"{str(path)!r} must hold a mapping of keys to values, got {type(content).__name__}")
    return content
