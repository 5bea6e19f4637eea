"""A sweep's numbers per grid point over seeds: mean, standard deviation, n and a Student-t 95% interval."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import MissingFileError
from ..train.rundir import CONFIG_FILE, atomic_write, read_yaml
from .store import DONE_FILE, JOBS_FOLDER, read_result

SEED_KEY = "seed"
SUMMARY_FILE = "summary.csv"
STAT_COLUMNS = ("quantity", "n", "mean", "std", "ci95_low", "ci95_high", "non_finite")


def _statistics(values: Sequence[float]) -> dict[str, Any]:
    """n, mean, sample std (ddof 1) and mean ± t_{0.975, n−1}·std/√n; std and the interval are left empty for
    n = 1, and every statistic for a quantity with a non-finite value (counted in ``non_finite``)."""
    from scipy.stats import t

    n = len(values)
    non_finite = sum(not math.isfinite(value) for value in values)
    row: dict[str, Any] = {"n": n, "mean": "", "std": "", "ci95_low": "", "ci95_high": "", "non_finite": non_finite}
    if non_finite:
        return row
    mean = math.fsum(values) / n
    row["mean"] = mean
    if n > 1:
        std = math.sqrt(math.fsum((value - mean) ** 2 for value in values) / (n - 1))
        half = float(t.ppf(0.975, n - 1)) * std / math.sqrt(n)
        row |= {"std": std, "ci95_low": mean - half, "ci95_high": mean + half}
    return row


def summarize(root: str | Path) -> tuple[list[str], list[dict[str, Any]]]:
    """Read ``root/jobs/*/`` (done jobs only) and aggregate each number of ``result.json`` over the jobs that
    differ only in ``seed``. Returns the grid keys (without ``seed``) and long-format rows: the grid values,
    then ``quantity, n, mean, std, ci95_low, ci95_high, non_finite``. An experiment's verdict ``passed``
    counts as 1 / 0 (its mean is the pass rate)."""
    jobs = Path(root) / JOBS_FOLDER
    if not jobs.is_dir():
        raise MissingFileError(f"{str(root)!r} is not a sweep folder: it holds no {JOBS_FOLDER}/")
    keys: list[str] = []
    groups: dict[str, tuple[dict[str, Any], dict[str, list[float]]]] = {}
    for folder in sorted(jobs.iterdir()):
        if not (folder / DONE_FILE).exists():
            continue
        point = {k: v for k, v in read_yaml(folder / CONFIG_FILE)["point"].items() if k != SEED_KEY}
        keys += [k for k in point if k not in keys]
        result = read_result(folder) or {}
        numbers = dict(result.get("numbers", {}))
        if "passed" in result:
            numbers["passed"] = float(result["passed"])
        label = repr(sorted(point.items()))
        _, quantities = groups.setdefault(label, (point, {}))
        for name, value in numbers.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                quantities.setdefault(name, []).append(float(value))
    rows = []
    for point, quantities in groups.values():
        for name, values in quantities.items():
            rows.append({**{k: point.get(k, "") for k in keys}, "quantity": name, **_statistics(values)})
    rows.sort(key=lambda row: ([repr(row[k]) for k in keys], row["quantity"]))
    return keys, rows


def write_summary(root: str | Path) -> tuple[list[str], list[dict[str, Any]]]:
    """:func:`summarize` and write the rows to ``root/summary.csv`` (atomically)."""
    keys, rows = summarize(root)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[*keys, *STAT_COLUMNS], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)  # floats as repr: they read back exactly
    atomic_write(Path(root) / SUMMARY_FILE, buffer.getvalue())
    return keys, rows
