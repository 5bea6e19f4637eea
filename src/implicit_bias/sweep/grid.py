"""Grids of configurations: ``--grid key=v1,v2`` and ``--grid seed=0..9`` expanded into jobs with stable keys."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidArgumentError, UnknownNameError
from ..validation import dataclass_from_mapping, parse_value, split_top_level

KEY_LENGTH = 12  # hex digits of the sha256 kept in a job's key
_RANGE = re.compile(r"^\s*(-?\d+)\s*\.\.\s*(-?\d+)\s*$")


@dataclass(frozen=True)
class Job:
    """One grid point of a sweep.

    Attributes
    ----------
    key : str
        The first 12 hex digits of sha256(canonical JSON of ``{kind, target, quick, config}``): the same
        resolved configuration always has the same key, whatever the order of ``--grid`` options.
    kind : {"experiment", "train"}
    target : str
        The experiment's name, or ``"train"`` for a training YAML (the resolved config, not the file's path,
        defines the run).
    quick : bool
        The experiment's quick preset (always False for a training config).
    point : dict
        The grid values of this job, in the order of the grid's keys.
    config : dict
        The fully resolved configuration (JSON types: tuples are lists).
    """

    key: str
    kind: str
    target: str
    quick: bool
    point: dict[str, Any]
    config: dict[str, Any]

    def record(self) -> dict[str, Any]:
        """What ``config.yaml`` of the job stores (and :func:`job_from_record` reads back)."""
        return {
            "key": self.key,
            "kind": self.kind,
            "target": self.target,
            "quick": self.quick,
            "point": self.point,
            "config": self.config,
        }


def job_from_record(record: Mapping[str, Any]) -> Job:
    return Job(**{f.name: record[f.name] for f in dataclasses.fields(Job)})


def parse_grid(items: Iterable[str]) -> dict[str, list[Any]]:
    """``["lr=0.1,0.01", "seed=0..2"]`` → ``{"lr": [0.1, 0.01], "seed": [0, 1, 2]}``.

    A value list is comma-separated (each value read by :func:`~implicit_bias.validation.parse_value`; commas
    inside ``[...]`` stay in a list value); ``a..b`` is the integers from ``a`` to ``b`` **inclusive**
    (``0..9`` is ten seeds). A key given twice, an empty value or a malformed range is refused.
    """
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or not text.strip():
            raise InvalidArgumentError(f"--grid {item!r} must look like key=v1,v2 or key=a..b (integers, inclusive)")
        if key in grid:
            raise InvalidArgumentError(f"--grid key {key!r} is given twice; list all its values in one --grid")
        if ".." in text and not text.strip().startswith("["):
            match = _RANGE.match(text)
            if match is None:
                raise InvalidArgumentError(
                    f"--grid {key}={text!r} is not a range: expected a..b with integers a <= b (inclusive), e.g. 0..9"
                )
            low, high = int(match[1]), int(match[2])
            if low > high:
                raise InvalidArgumentError(f"--grid {key}={text!r} is an empty range: expected a <= b in a..b")
            grid[key] = list(range(low, high + 1))
            continue
        values = split_top_level(text)
        if any(not value.strip() for value in values):
            raise InvalidArgumentError(
                f"--grid {key}={text!r} has an empty value (two commas in a row or a trailing one)"
            )
        grid[key] = [parse_value(value) for value in values]
    return grid


def plain_json(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` as JSON types (tuples become lists), as a job's key and files store them."""
    return json.loads(json.dumps(dict(values)))


def job_key(kind: str, target: str, quick: bool, config: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON (sorted keys, no spaces) of the job's identity, first 12 hex digits."""
    identity = {"kind": kind, "target": target, "quick": quick, "config": plain_json(config)}
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:KEY_LENGTH]


def _threshold(key: str) -> bool:
    from ..experiments.criteria import THRESHOLD_PREFIX

    return key.startswith(THRESHOLD_PREFIX)


def expand(
    target: str | Path,
    grid: Mapping[str, Sequence[Any]] | Iterable[str],
    *,
    quick: bool = False,
    overrides: Mapping[str, Any] | None = None,
) -> list[Job]:
    """The jobs of a sweep: the cartesian product of ``grid`` over ``target``'s config, in a fixed order.

    ``target`` is a registered experiment name (grid keys: its config's fields; ``quick`` picks its quick
    preset) or a training YAML file (keys of :class:`~implicit_bias.train.TrainConfig`). ``grid`` maps keys to
    value lists, or is ``--grid`` strings (:func:`parse_grid`). ``overrides`` (``--set``) apply to every job.
    The first key varies slowest. Every job's config is resolved and checked here, so an unknown key or a bad
    value is refused before any job runs. Identical resolved configs (e.g. a grid value equal to the preset)
    are kept once. For an experiment whose seeds the registry fans out, a ``seed`` axis means one seed per job
    (``seeds=1``) unless ``seeds`` is given too.
    """
    from ..experiments import EXPERIMENTS, resolve_config
    from ..train import TrainConfig

    if not isinstance(grid, Mapping):
        grid = parse_grid(grid)
    if not grid:
        raise InvalidArgumentError("a sweep needs at least one --grid key=v1,v2")
    for key, values in grid.items():
        if not isinstance(values, Sequence) or isinstance(values, str) or not values:
            raise InvalidArgumentError(f"grid {key!r} must be a non-empty list of values, got {values!r}")
    overrides = dict(overrides or {})
    name = str(target)
    if name in EXPERIMENTS:
        kind = "experiment"
        preset = EXPERIMENTS[name].quick if quick else EXPERIMENTS[name].full
        allowed = [f.name for f in dataclasses.fields(preset)]
        if EXPERIMENTS[name].fans_out_seeds and "seed" in grid and "seeds" not in grid and "seeds" not in overrides:
            overrides["seeds"] = 1  # a grid over seed runs one seed per job, not seed … seed + seeds − 1

        def resolve(point: dict[str, Any]) -> dict[str, Any]:
            return dataclasses.asdict(resolve_config(name, quick=quick, overrides={**overrides, **point}))

    elif Path(name).suffix in (".yaml", ".yml") or Path(name).is_file():
        if quick:
            raise InvalidArgumentError("--quick applies to an experiment; a training config sets its own steps")
        kind, base = "train", TrainConfig.from_file(name)
        allowed = [f.name for f in dataclasses.fields(TrainConfig)]

        def resolve(point: dict[str, Any]) -> dict[str, Any]:
            values = {**overrides, **point}
            return dataclass_from_mapping(TrainConfig, values, base=base, source=f"sweep of {name!r}").to_dict()

    else:
        raise UnknownNameError(
            f"sweep target {name!r} is neither an experiment ({', '.join(sorted(EXPERIMENTS))}) nor a training "
            "YAML file (*.yaml)"
        )
    for what, given in (("grid", grid), ("--set", overrides)):
        # an experiment's threshold.NAME keys are checked by resolve_config (criterion names)
        unknown = [key for key in given if key not in allowed and not (kind == "experiment" and _threshold(key))]
        if unknown:
            raise UnknownNameError(
                f"unknown {what} key(s) {', '.join(map(repr, unknown))} for {name!r}; allowed: {', '.join(allowed)}"
            )
    stored_target = name if kind == "experiment" else "train"
    jobs: dict[str, Job] = {}
    for values in itertools.product(*grid.values()):
        point = plain_json(dict(zip(grid, values)))
        config = plain_json(resolve(point))
        key = job_key(kind, stored_target, quick, config)
        jobs.setdefault(key, Job(key, kind, stored_target, quick, point, config))
    return list(jobs.values())
