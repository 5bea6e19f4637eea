"""``DIR/sweep.yaml``: what a sweep folder holds — its target, base configuration, grid, and each invocation's
executor and versions.

A folder holds one sweep: rerunning with the same target, ``--quick``, ``--set`` values and grid keys extends
it (new values of a key add jobs; the grid recorded is the union of the values seen, each run listed with
its own grid); anything else is refused in one line, since ``sweep-report`` aggregates every job in the
folder over the same grid axes.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import InvalidArgumentError
from ..train.rundir import read_yaml, write_yaml
from .grid import Job, plain_json

MANIFEST_FILE = "sweep.yaml"
VERSIONED = ("implicit-bias", "torch", "numpy", "submitit", "ray")


def versions() -> dict[str, str]:
    """Python's and the installed packages' versions (those of :data:`VERSIONED` that are installed)."""
    found = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def update_manifest(
    root: str | Path,
    *,
    quick: bool,
    overrides: Mapping[str, Any],
    grid: Mapping[str, Sequence[Any]],
    jobs: Sequence[Job],
    executor: str,
) -> dict[str, Any]:
    """The manifest of ``root`` (``target``: the experiment, or ``train`` for a training YAML) with this invocation added (not written: :func:`write_manifest`), or a one-line
    refusal when ``root`` holds another sweep. ``base`` is the resolved configuration outside the grid keys, so a
    training YAML edited between two runs counts as another sweep too."""
    grid = plain_json(grid)
    base = {k: v for k, v in jobs[0].config.items() if k not in grid}
    run = {
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "grid": grid,
        "executor": executor,
        "versions": versions(),
    }
    new = {"target": jobs[0].target, "quick": quick, "set": plain_json(overrides)}
    path = Path(root) / MANIFEST_FILE
    if not path.exists():
        return {**new, "base": base, "grid": grid, "runs": [run]}
    old = read_yaml(path)
    for field, value in {**new, "grid keys": sorted(grid), "base": base}.items():
        stored = sorted(old.get("grid", {})) if field == "grid keys" else old.get(field)
        if stored != value:
            if field == "base":
                changed = sorted(k for k in {*value, *(stored or {})} if (stored or {}).get(k) != value.get(k))
                value, stored = {k: value.get(k) for k in changed}, {k: (stored or {}).get(k) for k in changed}
            raise InvalidArgumentError(
                f"{str(path)!r} is a sweep with {field} {stored!r}, not {value!r}: use another --out, or the same "
                "target, --quick, --set and grid keys (new grid values extend the sweep)"
            )
    union = {key: [*values, *(v for v in grid[key] if v not in values)] for key, values in old["grid"].items()}
    return {**old, "grid": union, "runs": [*old.get("runs", []), run]}


def write_manifest(root: str | Path, manifest: Mapping[str, Any]) -> None:
    Path(root).mkdir(parents=True, exist_ok=True)
    write_yaml(Path(root) / MANIFEST_FILE, manifest)
