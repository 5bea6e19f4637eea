"""``implicit_bias.sweep.run``: expand a grid, record the manifest, run the jobs on an executor, aggregate."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .executors import make_executor
from .grid import expand, parse_grid
from .manifest import update_manifest, write_manifest
from .store import run_sweep

SUBMITIT_FOLDER = "submitit"  # DIR/submitit/: submitit's pickles and per-job logs


def run(
    target: str | Path,
    grid: Mapping[str, Sequence[Any]] | Iterable[str],
    out: str | Path,
    *,
    quick: bool = False,
    overrides: Mapping[str, Any] | None = None,
    executor: str = "local",
    jobs: int | None = None,
    retries: int = 1,
    on_result: Callable[[dict[str, Any]], None] | None = None,
    **options: Any,
) -> list[dict[str, Any]]:
    """Run the sweep of ``target`` over ``grid`` into ``out`` (what ``implicit-bias sweep`` does).

    Every job is resolved and checked, and ``out/sweep.yaml`` compared with this sweep, before any executor
    starts or any job runs (:func:`~implicit_bias.sweep.expand`, :mod:`~implicit_bias.sweep.manifest`).
    ``executor``, ``jobs`` and ``options`` (``cluster``, ``partition``, ``timeout_min``, ``gpus_per_node``,
    ``cpus_per_task``, ``mem_gb``, ``address``) go to :func:`~implicit_bias.sweep.make_executor`. Ends with
    ``sweep-report``'s summary and figures when some job is done. Returns the results in job order
    (:func:`~implicit_bias.sweep.run_sweep`).
    """
    from .report import write_report

    if not isinstance(grid, Mapping):
        grid = parse_grid(grid)
    overrides = dict(overrides or {})
    planned = expand(target, grid, quick=quick, overrides=overrides)
    manifest = update_manifest(out, quick=quick, overrides=overrides, grid=grid, jobs=planned, executor=executor)
    pool = make_executor(executor, jobs=jobs, folder=Path(out) / SUBMITIT_FOLDER, **options)
    try:
        write_manifest(out, manifest)
        results = run_sweep(planned, out, pool, retries=retries, on_result=on_result)
    finally:
        pool.close()
    if any(result["status"] == "done" for result in results):
        write_report(out)
    return results
