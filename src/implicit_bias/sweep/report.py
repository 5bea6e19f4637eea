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


FIGURES_FOLDER = "figures"
NOT_PLOTTED = ("step", "lr")  # a training job's last step and learning rate: the config's, not a result


def key_quantities(root: str | Path, rows: Sequence[dict[str, Any]]) -> list[str]:
    """The quantities worth a figure: the experiments' key numbers and pass rate when the jobs are
    experiments, else every number of the training runs except :data:`NOT_PLOTTED`."""
    named: list[str] = []
    for folder in sorted((Path(root) / JOBS_FOLDER).iterdir()):
        result = read_result(folder) if (folder / DONE_FILE).exists() else None
        if result is not None and result.get("key_number") and result["key_number"] not in named:
            named.append(result["key_number"])
    present = list(dict.fromkeys(row["quantity"] for row in rows))
    if named:
        return [q for q in [*named, "passed"] if q in present]
    return [q for q in present if q not in NOT_PLOTTED]


def errorbar_series(
    keys: Sequence[str], rows: Sequence[dict[str, Any]], quantity: str, axis: str
) -> dict[str, list[tuple[Any, float, float, float]]]:
    """``quantity`` against grid key ``axis``: one series per combination of the other keys' values (label
    ``k=v, …``, ``""`` with no other key), each point ``(value of axis, mean, mean − ci95_low, ci95_high −
    mean)``; the two error lengths are 0 where n = 1. Points without a mean (a non-finite value) are left out."""
    others = [k for k in keys if k != axis]
    series: dict[str, list[tuple[Any, float, float, float]]] = {}
    for row in rows:
        if row["quantity"] != quantity or row["mean"] == "":
            continue
        label = ", ".join(f"{k}={row[k]}" for k in others)
        mean = row["mean"]
        low, high = (0.0, 0.0) if row["ci95_low"] == "" else (mean - row["ci95_low"], row["ci95_high"] - mean)
        series.setdefault(label, []).append((row[axis], mean, low, high))
    return series


def _numeric(values: Sequence[Any]) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def plot_errorbars(root: str | Path, keys: Sequence[str], rows: Sequence[dict[str, Any]]) -> list[Path]:
    """``root/figures/<quantity>__<axis>.png`` and ``.pdf`` for each key quantity and grid key: the mean over
    seeds with its 95% interval as error bars. A numeric axis is on a log scale when its values are positive
    and span a factor of 100 or more; other values (lists, strings, booleans) are categories in grid order."""
    from matplotlib.figure import Figure

    paths = []
    for quantity in key_quantities(root, rows):
        for axis in keys:
            series = errorbar_series(keys, rows, quantity, axis)
            if not series:
                continue
            values: list[Any] = []  # grid values may be lists (unhashable)
            for point in (point for points in series.values() for point in points):
                if point[0] not in values:
                    values.append(point[0])
            numeric = _numeric(values)
            figure = Figure(figsize=(6.4, 4.0), layout="constrained")
            plot = figure.subplots()
            for label, points in series.items():
                points = sorted(points, key=lambda p: p[0]) if numeric else points
                x = [p[0] if numeric else values.index(p[0]) for p in points]
                yerr = [[p[2] for p in points], [p[3] for p in points]]
                plot.errorbar(x, [p[1] for p in points], yerr=yerr, label=label or None, marker="o", capsize=3)
            if numeric and min(values) > 0 and max(values) >= 100 * min(values):
                plot.set_xscale("log")
            if not numeric:
                plot.set_xticks(range(len(values)), [str(v) for v in values])
            plot.set(title=f"{quantity}: mean ± 95% CI over seeds", xlabel=axis, ylabel=quantity)
            plot.grid(True, which="both", alpha=0.3)
            if len(series) > 1:
                plot.legend(fontsize=8)
            stem = Path(root) / FIGURES_FOLDER / f"{quantity.replace('/', '__')}__{axis}"
            stem.parent.mkdir(parents=True, exist_ok=True)
            for suffix in (".png", ".pdf"):
                paths.append(stem.parent / (stem.name + suffix))
                figure.savefig(paths[-1], dpi=120)
    return paths


def write_report(root: str | Path) -> tuple[list[str], list[dict[str, Any]], list[Path]]:
    """:func:`write_summary` and :func:`plot_errorbars`: the summary's grid keys, rows and the figures' paths."""
    keys, rows = write_summary(root)
    return keys, rows, plot_errorbars(root, keys, rows)
