"""The experiment registry: a name → a claim, a frozen config (quick and full presets, each carrying its pass
criteria) and a function that runs it and reports numbers; the registry evaluates the criteria on them."""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ImplicitBiasError, InvalidArgumentError
from ..report import experiment_report, index_report
from ..report.html import write_experiment_page, write_index_page
from ..train.rundir import atomic_write, read_yaml, versions, write_yaml
from ..validation import check_choice, check_scalar, dataclass_from_mapping
from .criteria import (
    THRESHOLD_PREFIX,
    check_criteria,
    check_numbers,
    check_per_seed,
    check_unmeasured,
    evaluate,
    seed_summaries,
    set_thresholds,
)


@dataclass(frozen=True)
class Outcome:
    """What an experiment's run function returns: numbers (identifier keys → bool / int / float) that its
    config's criteria read, the figures and notes; the registry decides whether the claim held. A quantity the
    run could not measure (e.g. a margin of a network that never fit) goes to ``unmeasured`` with the reason; a
    criterion on it fails with that reason. ``per_seed`` holds a multi-seed run's values (one per seed, in the
    order of its seeds); the registry adds their ``<key>_mean`` and ``<key>_std`` to the numbers."""

    numbers: dict[str, float | int | bool]
    figures: list[str]  # file names inside the experiment's folder
    notes: str = ""  # markdown for the report: how the claim was checked
    unmeasured: dict[str, str] = field(default_factory=dict)  # quantity → why this run could not measure it
    per_seed: dict[str, list[float | bool]] = field(default_factory=dict)  # quantity → one value per seed


@dataclass(frozen=True)
class Experiment:
    """A registered reproduction.

    Attributes
    ----------
    name, claim : str
    quick, full : frozen dataclass instances
        The presets, each with a ``criteria`` field (a tuple of :class:`~implicit_bias.experiments.Criterion`:
        the claim holds when all of them do), and optionally ``fails_at_this_scale`` (a mapping: criterion name → why
        the data cannot meet it at this scale, printed in the report; see :func:`declared_failures`). ``quick`` is the smallest setting whose criteria still hold with a
        margin, over ≥ 3 seeds (7–150 s each, one thread on a 2-core machine), ``full`` the paper-scale one, ≥ 5 seeds.
    runner : callable (config, folder, progress) -> Outcome
    key_number : str
        The entry of ``Outcome.numbers`` shown in summary tables (with ``fans_out_seeds``: the per-seed quantity
        whose mean ± std is shown).
    reference : str
        The papers (authors, year, venue).
    fans_out_seeds : bool
        The runner measures one seed (``config.seed``) and the registry runs it at seeds ``seed``, ``seed + 1``,
        …, ``seed + seeds − 1`` (both presets need int ``seed`` and ``seeds`` fields): every number becomes a
        per-seed quantity (:func:`merge_seed_outcomes`), so criteria read it per seed (``over`` each / most /
        mean). Seed ``seed``'s figures are in the experiment's folder, each other seed's in ``seed_<s>/``.
    """

    name: str
    claim: str
    quick: Any
    full: Any
    runner: Callable[[Any, Path, bool], Outcome]
    key_number: str
    reference: str = ""
    fans_out_seeds: bool = False


EXPERIMENTS: dict[str, Experiment] = {}


def register(experiment: Experiment) -> Experiment:
    """Add ``experiment`` to :data:`EXPERIMENTS` (names are unique)."""
    if experiment.name in EXPERIMENTS:
        raise ValueError(f"experiment {experiment.name!r} is registered twice")
    for preset in ("quick", "full"):
        config = getattr(experiment, preset)
        where = f"experiment {experiment.name!r} ({preset})"
        names = {c.name for c in check_criteria(getattr(config, "criteria", None), where)}
        declared = getattr(config, "fails_at_this_scale", {})
        if not isinstance(declared, Mapping) or not all(
            isinstance(reason, str) and reason.strip() for reason in declared.values()
        ):
            raise TypeError(f"{where}: fails_at_this_scale must map criterion names to reasons, got {declared!r}")
        unknown = sorted(set(declared) - names)
        if unknown:
            raise ValueError(f"{where}: fails_at_this_scale names {', '.join(unknown)}, which are not its criteria")
        if experiment.fans_out_seeds:
            for field_name in ("seed", "seeds"):
                value = getattr(config, field_name, None)
                if not isinstance(value, int) or isinstance(value, bool):
                    raise TypeError(f"{where}: fans_out_seeds needs an int {field_name!r} field, got {value!r}")
    EXPERIMENTS[experiment.name] = experiment
    return experiment


def declared_failures(config: Any) -> dict[str, str]:
    """The criteria a preset declares failing at this scale, each with the measured reason (its
    ``fails_at_this_scale`` field, default none): an honest failure its report explains, which ``reproduce --all``
    does not count as a regression. The claim still fails (``passed`` false) and every criterion is still evaluated
    and shown."""
    return dict(getattr(config, "fails_at_this_scale", {}))


def declared_failures_notes(declared: Mapping[str, str]) -> str:
    """The report's paragraph on the criteria declared failing at this scale, one reason each."""
    if not declared:
        return ""
    reasons = "\n".join(f"- `{name}`: {' '.join(reason.split())}" for name, reason in declared.items())
    return "\n\n**Declared failing at this scale** (thresholds unchanged):\n\n" + reasons


def resolve_config(name: str, *, quick: bool, overrides: Mapping[str, Any] | None = None) -> Any:
    """The config ``name`` runs with: its quick or full preset with ``overrides`` applied (checked).

    ``threshold.NAME`` keys change the threshold of criterion NAME (recorded in its ``changed_from``);
    ``criteria`` replaces the whole list (as ``config.yaml`` stores it, e.g. a sweep job's record).
    """
    check_choice("experiment", name, EXPERIMENTS)
    experiment = EXPERIMENTS[name]
    base = experiment.quick if quick else experiment.full
    values = dict(overrides or {})
    source = f"experiment {name!r}"
    thresholds = {
        key[len(THRESHOLD_PREFIX) :]: values.pop(key) for key in list(values) if key.startswith(THRESHOLD_PREFIX)
    }
    if "criteria" in values:
        values["criteria"] = check_criteria(values["criteria"], source)
    config = dataclass_from_mapping(type(base), values, base=base, source=source)
    if thresholds:
        config = dataclasses.replace(config, criteria=set_thresholds(config.criteria, thresholds, source))
    if experiment.fans_out_seeds:
        fanned_seeds(config)  # seeds >= 1, refused before anything runs
    return config


def fanned_seeds(config: Any) -> tuple[int, ...]:
    """The seeds an experiment with ``fans_out_seeds`` runs at: ``seed``, …, ``seed + seeds − 1``."""
    check_scalar("seeds", config.seeds, int, low=1)
    return tuple(range(config.seed, config.seed + config.seeds))


def merge_seed_outcomes(seeds: Sequence[int], outcomes: Sequence[Outcome]) -> Outcome:
    """One outcome from one single-seed outcome per seed: each number becomes a per-seed quantity (the registry
    adds its ``<key>_mean`` and ``<key>_std``), ``numbers`` keeps only ``seeds`` (how many); a quantity some
    seed could not measure (or did not report) is unmeasured, naming the first such seed. Figures and notes are
    the first seed's; the notes say where the other seeds' figures are."""
    per_seed: dict[str, list[float | int | bool]] = {}
    unmeasured: dict[str, str] = {}
    keys = list(dict.fromkeys(key for outcome in outcomes for key in [*outcome.numbers, *outcome.unmeasured]))
    for seed, outcome in zip(seeds, outcomes, strict=True):
        if outcome.per_seed:
            raise ValueError(f"seed {seed}: a runner whose seeds the registry fans out reports per_seed values")
        for key in keys:
            if key in outcome.unmeasured:
                unmeasured.setdefault(key, f"seed {seed}: {outcome.unmeasured[key]}")
            elif key not in outcome.numbers:
                unmeasured.setdefault(key, f"seed {seed} did not report it")
    for key in keys:
        if key not in unmeasured:
            per_seed[key] = [outcome.numbers[key] for outcome in outcomes]
    others = ", ".join(f"`seed_{seed}/`" for seed in seeds[1:])
    where = f"; the other seeds' figures are in {others}" if others else ""
    notes = outcomes[0].notes.rstrip() + (
        f"\n\nSeeds {', '.join(map(str, seeds))}: every number is measured per seed (mean and sample standard "
        f"deviation in the numbers table, each seed's value in `result.json`'s `per_seed`); the figures show seed "
        f"{seeds[0]}{where}."
    )
    return Outcome({"seeds": len(seeds)}, list(outcomes[0].figures), notes, unmeasured=unmeasured, per_seed=per_seed)


def _run_seeds(experiment: Experiment, config: Any, folder: Path, progress: bool) -> Outcome:
    """Run a ``fans_out_seeds`` experiment once per seed (the first into ``folder``, the others into
    ``folder/seed_<s>``) and merge the outcomes."""
    seeds = fanned_seeds(config)
    outcomes = []
    for index, seed in enumerate(seeds):
        where = folder if index == 0 else folder / f"seed_{seed}"
        where.mkdir(parents=True, exist_ok=True)
        outcomes.append(experiment.runner(dataclasses.replace(config, seed=seed, seeds=1), where, progress))
    return merge_seed_outcomes(seeds, outcomes)


class ExperimentError(RuntimeError):
    """An experiment raised while it ran. Its folder keeps the evidence: ``result.json`` (``passed`` false,
    ``error``), ``report.md`` and the traceback in ``traceback.txt``; ``result`` is that result."""

    def __init__(self, message: str, result: dict[str, Any]) -> None:
        super().__init__(message)
        self.result = result


TRACEBACK_FILE = "traceback.txt"


def _check_folder(name: str, folder: Path, *, force: bool) -> bool:
    """Whether ``folder`` holds an earlier reproduction of ``name`` to delete first (only with ``force``).

    A non-empty folder is refused without ``force``; with it, only a folder whose ``config.yaml`` names the
    experiment is given up for deletion, so nothing else is ever removed.
    """
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise InvalidArgumentError(f"{str(folder)!r} is not a folder; choose a new output folder")
    if not folder.exists() or not any(folder.iterdir()):
        return False
    if not force:
        raise InvalidArgumentError(
            f"{str(folder)!r} is not empty (a reproduction that finished or was killed); pass --force "
            "(force=True) to replace it, or choose a new output folder (--out)"
        )
    try:
        recorded = read_yaml(folder / "config.yaml").get("experiment")
    except ImplicitBiasError:
        recorded = None
    if recorded != name:
        raise InvalidArgumentError(
            f"{str(folder)!r} is not empty and does not hold a reproduction of {name!r} (no config.yaml naming it), "
            "so --force will not delete it; choose a new output folder (--out)"
        )
    return True


def _run(experiment: Experiment, config: Any, folder: Path, *, quick: bool, progress: bool) -> dict[str, Any]:
    """Run the prepared experiment; an exception is recorded in the folder and raised as :class:`ExperimentError`."""
    name = experiment.name
    folder.mkdir(parents=True, exist_ok=True)
    config_dict = dataclasses.asdict(config)
    write_yaml(folder / "config.yaml", {"experiment": name, "quick": quick, **config_dict, "versions": versions()})
    result: dict[str, Any] = {"name": name, "claim": experiment.claim, "quick": quick}
    start = time.perf_counter()
    try:
        if experiment.fans_out_seeds:
            outcome = _run_seeds(experiment, config, folder, progress)
        else:
            outcome = experiment.runner(config, folder, progress)
        numbers = check_numbers(outcome.numbers, name)
        unmeasured = check_unmeasured(outcome.unmeasured, numbers, name)
        per_seed = check_per_seed(outcome.per_seed, numbers, name)
        numbers |= seed_summaries(per_seed)
        criteria = evaluate(config.criteria, numbers, name, unmeasured=unmeasured, per_seed=per_seed)
    except Exception as error:  # noqa: BLE001 (any failure of the run is recorded, then raised as ExperimentError)
        atomic_write(folder / TRACEBACK_FILE, traceback.format_exc())
        message = f"{type(error).__name__}: {error}".strip().split("\n")[0]
        result |= {"passed": False, "error": message, "traceback": TRACEBACK_FILE, "numbers": {}, "figures": []}
        result["criteria"] = []
        result["seconds"] = time.perf_counter() - start
        notes = ""
    else:
        passed = all(c["passed"] for c in criteria)
        result |= {"passed": passed, "numbers": numbers, "criteria": criteria, "figures": outcome.figures}
        declared = declared_failures(config)
        if declared:
            result["fails_at_this_scale"] = declared
        if unmeasured:
            result["unmeasured"] = unmeasured
        if per_seed:
            result["per_seed"] = per_seed
        result["seconds"] = time.perf_counter() - start
        notes = outcome.notes.rstrip() + declared_failures_notes(declared)
    atomic_write(folder / "result.json", json.dumps(result, indent=2))
    atomic_write(folder / "report.md", experiment_report(result, config_dict, notes))
    write_experiment_page(folder / "report.html", result, config_dict, notes)
    if "error" in result:
        raise ExperimentError(
            f"experiment {name!r} raised {result['error']} (traceback: {folder / TRACEBACK_FILE})", result
        )
    return result


def reproduce(
    name: str,
    out_dir: str | Path,
    *,
    quick: bool = False,
    overrides: Mapping[str, Any] | None = None,
    progress: bool = True,
    force: bool = False,
) -> dict[str, Any]:
    """Run experiment ``name`` into ``out_dir``: ``config.yaml``, figures, ``result.json`` and the reports
    ``report.md`` and ``report.html`` (self-contained, figures embedded).

    A non-empty ``out_dir`` is refused unless ``force``, which replaces an earlier reproduction of ``name``
    (finished or killed) and nothing else. Returns the result: ``{"name", "claim", "passed", "numbers",
    "criteria", "figures", "seconds", "quick"}`` (``criteria``: each criterion's outcome, see
    :func:`~implicit_bias.experiments.criteria.evaluate`; ``passed``: all of them hold; ``unmeasured`` where the
    run could not measure a quantity). If the experiment raises, the result gains ``"error"`` (the message) and
    ``"traceback"`` (a file in ``out_dir``), is written all the same, and :class:`ExperimentError` is raised.
    """
    config = resolve_config(name, quick=quick, overrides=overrides)
    folder = Path(out_dir)
    if _check_folder(name, folder, force=force):
        shutil.rmtree(folder)
    return _run(EXPERIMENTS[name], config, folder, quick=quick, progress=progress)


def reproduce_all(
    out_dir: str | Path,
    *,
    quick: bool = False,
    progress: bool = True,
    force: bool = False,
    jobs: int = 1,
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run every registered experiment into ``out_dir/<name>`` and write ``out_dir/index.md`` and ``index.html``.

    Every experiment runs even when an earlier one raises: its result then carries ``"error"`` (see
    :func:`reproduce`) and the index shows it. The index is rewritten after each experiment, so a killed sweep
    leaves one for what finished. Folders are checked before anything runs (``force`` as in :func:`reproduce`).
    ``jobs`` > 1 runs that many experiments at once, each in its own process with one torch thread (the sweep's
    local executor; no progress bars); results, folders and index are the same as one after another. A worker
    process that dies (killed, out of memory) fails the experiments queued with it; each of them runs once more
    alone, and one whose worker dies again is recorded with the error.
    """
    if not EXPERIMENTS:
        raise InvalidArgumentError("no experiments are registered")
    check_scalar("jobs", jobs, int, low=1)
    out_dir = Path(out_dir)
    names = list(EXPERIMENTS)
    configs = {name: resolve_config(name, quick=quick) for name in names}
    stale = [name for name in names if _check_folder(name, out_dir / name, force=force)]  # refuse before any runs
    for name in stale:
        shutil.rmtree(out_dir / name)
    key_numbers = {name: EXPERIMENTS[name].key_number for name in names}
    finished: dict[str, dict[str, Any]] = {}

    def record(result: dict[str, Any]) -> None:
        finished[result["name"]] = result
        results = [finished[name] for name in names if name in finished]
        atomic_write(out_dir / "index.md", index_report(results, key_numbers, total=len(names)))
        write_index_page(out_dir / "index.html", results, key_numbers, total=len(names))
        if on_result is not None:
            on_result(result)

    if jobs == 1:
        for name in names:
            record(_run_or_record(EXPERIMENTS[name], configs[name], out_dir / name, quick, progress))
    else:
        lost = _run_in_pool(names, jobs, configs, out_dir, quick, record)
        for name in lost:  # each alone in a one-worker pool, so a worker that dies again takes only its own run
            shutil.rmtree(out_dir / name, ignore_errors=True)  # made by this call: rerun afresh
            for error in _run_in_pool([name], 1, configs, out_dir, quick, record).values():
                record(_lost(name, quick, error))
    return [finished[name] for name in names]


def _run_in_pool(
    names: Sequence[str],
    jobs: int,
    configs: Mapping[str, Any],
    out_dir: Path,
    quick: bool,
    record: Callable[[dict[str, Any]], None],
) -> dict[str, BaseException]:
    """Run ``names`` in a pool of ``jobs`` one-thread processes, ``record`` each result as it finishes; returns the
    experiments whose worker process failed (a dying worker fails every future queued with it), with the error.
    The experiment itself goes to the worker, so one registered at run time runs there too."""
    from ..sweep.executors import LocalExecutor

    executor = LocalExecutor(jobs, gpus=[])
    try:
        futures = {
            executor.submit(_run_or_record, EXPERIMENTS[name], configs[name], out_dir / name, quick, False): name
            for name in names
        }
        lost: dict[str, BaseException] = {}
        for future in executor.wait(list(futures)):
            error = future.exception()
            if error is None:
                record(future.result())
            else:
                lost[futures[future]] = error
        return lost
    finally:
        executor.close()


def _run_or_record(experiment: Experiment, config: Any, folder: Path, quick: bool, progress: bool) -> dict[str, Any]:
    """:func:`_run`'s result, or the recorded result of an experiment that raised."""
    try:
        return _run(experiment, config, folder, quick=quick, progress=progress)
    except ExperimentError as error:
        return error.result


def _lost(name: str, quick: bool, error: BaseException) -> dict[str, Any]:
    """The result of an experiment whose worker process itself failed (killed, out of memory)."""
    message = f"{type(error).__name__}: {error}".strip().split("\n")[0]
    return {"name": name, "claim": EXPERIMENTS[name].claim, "quick": quick, "passed": False,
            "error": f"its worker process failed: {message}", "traceback": "(none: the process ended)",
            "numbers": {}, "criteria": [], "figures": [], "seconds": 0.0}  # fmt: skip
