"""``reproduce NAME --seeds N``: an experiment's seeds fanned out as sweep jobs, its claim checked on the aggregate.

Each seed is one job of the sweep machinery (``DIR/jobs/<key>/reproduction/``, resumable, on any executor): a
config with a ``seeds`` tuple runs ``seeds=[s]`` per job, one with a ``seed`` runs ``seed=s`` (and ``seeds=1``
where the registry fans its seeds out, see :func:`~implicit_bias.sweep.expand`). The aggregate
pools the jobs: a criterion on per-seed values (``over`` each / most / mean) reads every job's per-seed values
together; a criterion on one run's value is checked on the mean over the N jobs (``over="mean"``, with how many
seeds meet it). ``DIR/result.json``, ``report.md`` and ``report.html`` hold the aggregate, shaped like one
reproduction's.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import InvalidArgumentError
from ..train.rundir import atomic_write
from .driver import run
from .store import job_folder

AGGREGATE_FILE = "result.json"


def seed_grid(name: str, seeds: int, *, quick: bool, overrides: Mapping[str, Any] | None = None) -> dict[str, list]:
    """The grid that runs experiment ``name`` once per seed 0 … ``seeds`` − 1 (see the module docstring)."""
    from ..experiments import resolve_config
    from ..validation import check_scalar

    check_scalar("--seeds", seeds, int, low=1)
    config = resolve_config(name, quick=quick, overrides=overrides)
    fields = {field.name for field in dataclasses.fields(config)}
    clash = sorted({"seed", "seeds"} & set(overrides or {}))
    if clash:
        raise InvalidArgumentError(f"--seeds {seeds} chooses the seeds; drop --set {clash[0]}=…")
    if "seeds" in fields and isinstance(config.seeds, tuple):
        return {"seeds": [[seed] for seed in range(seeds)]}
    if "seed" in fields and isinstance(config.seed, int):
        return {"seed": list(range(seeds))}
    held = f"seeds={config.seeds!r}" if "seeds" in fields else "no seed field"
    raise InvalidArgumentError(
        f"--seeds: {name} has no seed to fan out ({held}); run it with --set to change how many seeds it draws"
    )


def _pool(
    criteria: Sequence[Any], results: Sequence[Mapping[str, Any]], labels: Sequence[str]
) -> tuple[dict, dict, list]:
    """Per criterion quantity: the values over all jobs (a job's value, or all its per-seed values); the
    quantities some job could not measure (named by its ``labels`` entry); the criteria with ``over="value"``
    read as the mean over jobs."""
    per_value = {c.quantity: c.over == "value" for c in criteria}
    both = sorted(c.quantity for c in criteria if per_value[c.quantity] != (c.over == "value"))
    if both:
        raise InvalidArgumentError(f"criteria read {both[0]!r} both as one value and per seed: it cannot be pooled")
    pooled: dict[str, list[float | bool]] = {}
    unmeasured: dict[str, str] = {}
    for label, result in zip(labels, results, strict=True):
        for quantity, single in per_value.items():
            missing = result.get("unmeasured", {}).get(quantity)
            if missing is not None:
                unmeasured.setdefault(quantity, f"{label}: {missing}")
            elif single:
                pooled.setdefault(quantity, []).append(result["numbers"][quantity])
            else:
                pooled.setdefault(quantity, []).extend(result["per_seed"][quantity])
    over_jobs = [dataclasses.replace(c, over="mean") if c.over == "value" else c for c in criteria]
    return pooled, unmeasured, over_jobs


def _summaries(results: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """``<key>_mean`` and ``<key>_std`` (sample std; 0 for one value) of every per-seed quantity all jobs report,
    over all their seeds' values, and over the jobs of every other number they all have."""
    from ..experiments.criteria import seed_summaries

    per_seed = {
        key: [value for r in results for value in r["per_seed"][key]]
        for key in results[0].get("per_seed", {})
        if all(key in r.get("per_seed", {}) for r in results)
    }
    derived = {f"{key}_{part}" for key in per_seed for part in ("mean", "std")}
    shared = [key for key in results[0]["numbers"] if key not in derived and all(key in r["numbers"] for r in results)]
    return seed_summaries({key: [r["numbers"][key] for r in results] for key in shared} | per_seed)


def aggregate(name: str, config: Any, results: Sequence[Mapping[str, Any]], labels: Sequence[str]) -> dict[str, Any]:
    """The aggregate result of the seed jobs' reproductions ``results`` (each a ``result.json``, in seed order,
    named by ``labels`` such as ``"seed=2"``) under ``config``'s criteria (module docstring)."""
    from ..experiments import EXPERIMENTS
    from ..experiments.criteria import evaluate

    pooled, unmeasured, criteria = _pool(config.criteria, results, labels)
    outcomes = evaluate(criteria, {}, name, unmeasured=unmeasured, per_seed=pooled)
    return {
        "name": name,
        "claim": EXPERIMENTS[name].claim,
        "quick": results[0]["quick"],
        "passed": all(c["passed"] for c in outcomes),
        "seeds": len(results),
        "numbers": _summaries(results),
        "criteria": outcomes,
        "figures": [],
        "seconds": sum(r["seconds"] for r in results),
    }


def _labels(grid: Mapping[str, list]) -> list[str]:
    ((field, values),) = grid.items()
    return [f"{field}={value}" for value in values]


def _notes(name: str, labels: Sequence[str], results: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> str:
    verdicts = ", ".join(f"{label}: {'passed' if r['passed'] else 'not passed'}" for label, r in zip(labels, results))
    return (
        f"The aggregate of {len(results)} reproductions of `{name}`, one per seed, each in "
        f"`jobs/<key>/reproduction/` with its own report ({verdicts}). A "
        "criterion on one run's value is checked on the mean over the seeds; one on per-seed values reads every "
        "seed's values together. The numbers are each quantity's mean and sample standard deviation over the "
        f"seeds; `summary.csv` adds 95% intervals. Jobs: {', '.join(keys)}."
    )


def reproduce_seeds(
    name: str,
    out_dir: str | Path,
    seeds: int,
    *,
    quick: bool = False,
    overrides: Mapping[str, Any] | None = None,
    executor: str = "local",
    jobs: int | None = None,
    retries: int = 1,
    **options: Any,
) -> dict[str, Any]:
    """Run experiment ``name`` once per seed as sweep jobs into ``out_dir`` (resumable: a rerun skips done
    seeds) on ``executor`` (``jobs`` and ``options`` as :func:`~implicit_bias.sweep.run`), then check its
    claim on the aggregate; writes ``out_dir/result.json``, ``report.md`` and ``report.html`` and returns the
    aggregate (``passed``, ``criteria``, ``numbers``: means and stds over seeds). A seed whose job failed
    makes the aggregate fail with ``error`` naming the job."""
    from ..experiments import resolve_config
    from ..report import experiment_report
    from ..report.html import write_experiment_page

    overrides = dict(overrides or {})
    grid = seed_grid(name, seeds, quick=quick, overrides=overrides)
    config = resolve_config(name, quick=quick, overrides=overrides)
    done = run(name, grid, out_dir, quick=quick, overrides=overrides, executor=executor, jobs=jobs, retries=retries,
               **options)  # fmt: skip
    folder = Path(out_dir)
    failed = [result["key"] for result in done if result["status"] != "done"]
    if failed:
        summary = {"name": name, "passed": False, "error": f"{len(failed)} seed job(s) failed: {', '.join(failed)}"}
        atomic_write(folder / AGGREGATE_FILE, json.dumps(summary, indent=2))
        return summary
    results = [json.loads((job_folder(folder, r["key"]) / "reproduction" / AGGREGATE_FILE).read_text()) for r in done]
    labels = _labels(grid)
    summary = aggregate(name, config, results, labels)
    notes = _notes(name, labels, results, [r["key"] for r in done])
    shown = {**dataclasses.asdict(config), "seeds_fanned_out": seeds, "executor": executor}
    atomic_write(folder / AGGREGATE_FILE, json.dumps(summary, indent=2))
    atomic_write(folder / "report.md", experiment_report(summary, shown, notes))
    write_experiment_page(folder / "report.html", summary, shown, notes)
    return summary
