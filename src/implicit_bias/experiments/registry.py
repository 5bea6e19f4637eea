"""The experiment registry: a name → a claim, a frozen config (quick and full presets) and a function that runs
it and says whether the claim held."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidArgumentError
from ..report import experiment_report, index_report
from ..train.rundir import atomic_write, versions, write_yaml
from ..validation import check_choice, dataclass_from_mapping


@dataclass(frozen=True)
class Outcome:
    """What an experiment's run function returns."""

    passed: bool
    numbers: dict[str, float | int | bool]
    figures: list[str]  # file names inside the experiment's folder
    notes: str = ""  # markdown for the report: how the claim was checked


@dataclass(frozen=True)
class Experiment:
    """A registered reproduction.

    Attributes
    ----------
    name, claim : str
    quick, full : frozen dataclass instances
        The presets: ``quick`` runs in well under a minute on 2 CPU cores, ``full`` is the paper-scale setting.
    runner : callable (config, folder, progress) -> Outcome
    key_number : str
        The entry of ``Outcome.numbers`` shown in summary tables.
    """

    name: str
    claim: str
    quick: Any
    full: Any
    runner: Callable[[Any, Path, bool], Outcome]
    key_number: str
    reference: str = ""


EXPERIMENTS: dict[str, Experiment] = {}


def register(experiment: Experiment) -> Experiment:
    """Add ``experiment`` to :data:`EXPERIMENTS` (names are unique)."""
    if experiment.name in EXPERIMENTS:
        raise ValueError(f"experiment {experiment.name!r} is registered twice")
    EXPERIMENTS[experiment.name] = experiment
    return experiment


def resolve_config(name: str, *, quick: bool, overrides: Mapping[str, Any] | None = None) -> Any:
    """The config ``name`` runs with: its quick or full preset with ``overrides`` applied (checked)."""
    check_choice("experiment", name, EXPERIMENTS)
    experiment = EXPERIMENTS[name]
    base = experiment.quick if quick else experiment.full
    return dataclass_from_mapping(type(base), dict(overrides or {}), base=base, source=f"experiment {name!r}")


def reproduce(
    name: str,
    out_dir: str | Path,
    *,
    quick: bool = False,
    overrides: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run experiment ``name`` into ``out_dir``: ``config.yaml``, figures, ``result.json`` and ``report.md``.

    Returns the result: ``{"name", "claim", "passed", "numbers", "figures", "seconds", "quick"}``.
    """
    config = resolve_config(name, quick=quick, overrides=overrides)
    experiment = EXPERIMENTS[name]
    folder = Path(out_dir)
    if folder.exists() and any(folder.iterdir()):
        raise InvalidArgumentError(
            f"{str(folder)!r} is not empty; choose a new output folder so no result is overwritten"
        )
    folder.mkdir(parents=True, exist_ok=True)
    config_dict = dataclasses.asdict(config)
    write_yaml(folder / "config.yaml", {"experiment": name, "quick": quick, **config_dict, "versions": versions()})
    start = time.perf_counter()
    outcome = experiment.runner(config, folder, progress)
    result = {
        "name": name,
        "claim": experiment.claim,
        "passed": bool(outcome.passed),
        "numbers": outcome.numbers,
        "figures": outcome.figures,
        "seconds": time.perf_counter() - start,
        "quick": quick,
    }
    atomic_write(folder / "result.json", json.dumps(result, indent=2))
    atomic_write(folder / "report.md", experiment_report(result, config_dict, outcome.notes))
    return result


def reproduce_all(
    out_dir: str | Path,
    *,
    quick: bool = False,
    progress: bool = True,
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run every registered experiment into ``out_dir/<name>`` and write ``out_dir/index.md``."""
    if not EXPERIMENTS:
        raise InvalidArgumentError("no experiments are registered")
    results = []
    for name in EXPERIMENTS:
        results.append(reproduce(name, Path(out_dir) / name, quick=quick, progress=progress))
        if on_result is not None:
            on_result(results[-1])
    key_numbers = {name: experiment.key_number for name, experiment in EXPERIMENTS.items()}
    atomic_write(Path(out_dir) / "index.md", index_report(results, key_numbers))
    return results
