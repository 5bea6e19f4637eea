"""``implicit-bias diagnose RUN_DIR``: the diagnosis at every weight snapshot of a run, as trends over steps.

Writes ``metrics.csv`` (the long table with a leading ``step`` column), ``figures/`` (each headline number and
NC1 per layer against the step, log axis; PNG and PDF) and ``report.html`` (the trends, then the full diagnosis
of the last snapshot), through a temporary folder renamed into place like the single diagnosis.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..errors import MissingFileError
from ..models.loading import load_weights
from ..report.figures import plot_series
from ..train.config import load_data, run_config
from ..train.rundir import atomic_write
from ..train.snapshots import SNAPSHOT_DIR, list_snapshots
from .api import diagnose
from .command import staged
from .figures import FORMATS, plot_diagnosis, plot_trends
from .page import page_sections
from .result import COLUMNS, Diagnosis


@dataclass(frozen=True)
class Trend:
    """The diagnoses of a run's snapshots, by step (increasing)."""

    steps: list[int]
    diagnoses: list[Diagnosis]

    def to_csv(self, path: str | Path | None = None) -> str:
        """The long table with a leading ``step`` column; written atomically to ``path`` when given."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(("step", *COLUMNS))
        for step, diagnosis in zip(self.steps, self.diagnoses):
            writer.writerows(
                (step, r.section, r.layer, r.metric, repr(float(r.value)), r.variant) for r in diagnosis.table
            )
        text = buffer.getvalue()
        if path is not None:
            atomic_write(path, text)
        return text

    def series(self, key: str) -> tuple[list[int], list[float]]:
        """(steps, values) of the summary number ``key`` at the snapshots that have it."""
        points = [(s, d.summary[key]) for s, d in zip(self.steps, self.diagnoses) if key in d.summary]
        return [p[0] for p in points], [p[1] for p in points]


def diagnose_run(
    run_dir: str | Path,
    *,
    layers: Sequence[str] | None = None,
    batch_size: int = 1024,
    device: str | None = None,
    kkt: bool = True,
    progress: bool = False,
) -> Trend:
    """Diagnose every snapshot of ``run_dir`` (written by ``fit(..., snapshots="log")``) on the run's own data,
    with the run's model spec, dtype and seed."""
    run_dir = Path(run_dir)
    config = run_config(run_dir, fix="diagnose its snapshots one by one with --model MODULE:FACTORY --weights FILE")
    snapshots = list_snapshots(run_dir)
    if not snapshots:
        raise MissingFileError(
            f"run {str(run_dir)!r} has no weight snapshots in {SNAPSHOT_DIR}/; train with --snapshots log "
            "(or fit(..., snapshots='log')) to keep them"
        )
    from ..models import build

    data = load_data(config)
    diagnoses = []
    for path in snapshots.values():
        model = build(config.model, data.input_shape, data.num_classes, seed=config.seed)
        model = load_weights(model.to(getattr(torch, config.dtype)), path).to(device or "cpu")
        diagnoses.append(diagnose(model, data, layers=layers, batch_size=batch_size, kkt=kkt, progress=progress))
    return Trend(list(snapshots), diagnoses)


def plot_trend(trend: Trend, folder: Path) -> list[Path]:
    """The headline numbers against the step (one panel each) and NC1 of every layer against the step, log
    axes, PNG and PDF."""
    keys = dict.fromkeys(key for d in trend.diagnoses for key in d.summary if key != "parameters")
    drawn = [plot_trends({key: trend.series(key) for key in keys}, folder)]
    nc1: dict[str, tuple[list[int], list[float]]] = {}
    for step, diagnosis in zip(trend.steps, trend.diagnoses):
        for row in diagnosis.rows("collapse", metric="nc1"):
            if row.variant == "train":
                steps, values = nc1.setdefault(row.layer, ([], []))
                steps.append(step)
                values.append(row.value)
    if any(xs for xs, _ in nc1.values()):
        for suffix in FORMATS:
            plot_series(folder / f"nc1_by_layer.{suffix}", nc1, title="NC1 per layer over training", logy=True)
        drawn.append(folder / "nc1_by_layer.png")
    return [path for path in drawn if path is not None]


def write_trend(trend: Trend, out: Path) -> Path:
    """Write the trend report folder ``out`` (metrics.csv, figures/, report.html) atomically."""
    from ..report.html import Figure, Section, Table, write_page

    with staged(out) as scratch:
        trend.to_csv(scratch / "metrics.csv")
        figures = plot_trend(trend, scratch / "figures")
        keys = list(dict.fromkeys(key for d in trend.diagnoses for key in d.summary))
        rows = [(step, *(d.summary.get(key) for key in keys)) for step, d in zip(trend.steps, trend.diagnoses)]
        overview = Section(
            "Trends over training",
            text=f"{len(trend.steps)} snapshots from step {trend.steps[0]} to {trend.steps[-1]}; the step axis is "
            "logarithmic (step 0 is in the table and the CSV, not on the figures).",
            tables=[Table(("step", *keys), rows)],
            figures=[Figure(path, path.stem.replace("_", " ")) for path in figures],
        )
        last, step = trend.diagnoses[-1], trend.steps[-1]
        sections = page_sections(last, plot_diagnosis(last, scratch / "figures" / f"step_{step}"))
        sections = [overview, *(replace(s, title=f"{s.title} (step {step})") for s in sections)]
        write_page(scratch / "report.html", f"Diagnosis over training: {last.model}", sections, subtitle=last.data)
    return out
