"""Line figures on log time, written as PNG files.

Figures are built as ``matplotlib.figure.Figure`` objects, never through pyplot: they render headless (Agg, chosen
by ``savefig`` from the file's extension), leave no figure open, and importing this module does not change the
backend a notebook or script has chosen."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from matplotlib.figure import Figure

if TYPE_CHECKING:
    from ..train.history import History


def plot_series(
    path: str | Path,
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    *,
    title: str,
    xlabel: str = "step",
    ylabel: str = "",
    logx: bool = True,
    logy: bool = False,
    marks: Mapping[str, float] | None = None,
) -> Path:
    """Plot each ``label → (x, y)`` series on one axis and save it to ``path``.

    On a log x axis, points at x ≤ 0 (step 0) are left out. ``marks`` draws labelled vertical lines.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure = Figure(figsize=(6.4, 4.0), layout="constrained")
    axis = figure.subplots()
    for label, (x, y) in series.items():
        points = [(a, b) for a, b in zip(x, y) if not (logx and a <= 0) and not (logy and b <= 0)]
        if points:
            axis.plot(*zip(*points), label=label, marker=".", markersize=3, linewidth=1.2)
    for label, position in (marks or {}).items():
        axis.axvline(position, color="grey", linestyle=":", linewidth=1)
        axis.annotate(label, (position, 0.02), xycoords=("data", "axes fraction"), rotation=90, fontsize=8)
    if logx:
        axis.set_xscale("log")
    if logy:
        axis.set_yscale("log")
    axis.set(title=title, xlabel=xlabel, ylabel=ylabel)
    axis.grid(True, which="both", alpha=0.3)
    if len(axis.get_legend_handles_labels()[0]) > 1:  # series with no point on the log axes draw nothing
        axis.legend()
    figure.savefig(path, dpi=120)
    return path


def plot_history(history: History, folder: str | Path, *, skip: Sequence[str] = ("step", "time", "lr")) -> list[Path]:
    """One figure per logged quantity of a run against the step (log scale), saved as ``folder/<name>.png``."""
    paths = []
    for name in history.columns:
        if name in skip:
            continue
        steps, values = history.column(name)
        filename = name.replace("/", "__") + ".png"  # probe keys such as nc1/layer1
        paths.append(plot_series(Path(folder) / filename, {name: (steps, values)}, title=name, ylabel=name))
    return paths


def plot_bars(
    path: str | Path,
    table: Mapping[str, Mapping[str, float]],
    *,
    title: str,
    ylabel: str = "",
    logy: bool = False,
) -> Path:
    """Grouped bars: one group per outer key of ``table``, one bar per inner key (the same inner keys each)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    groups = list(table)
    labels = list(next(iter(table.values())))
    width = 0.8 / len(labels)
    figure = Figure(figsize=(6.4, 4.0), layout="constrained")
    axis = figure.subplots()
    for index, label in enumerate(labels):
        positions = [g + (index - (len(labels) - 1) / 2) * width for g in range(len(groups))]
        axis.bar(positions, [table[group][label] for group in groups], width=width, label=label)
    axis.set_xticks(range(len(groups)), groups)
    if logy:
        axis.set_yscale("log")
    axis.set(title=title, ylabel=ylabel)
    axis.grid(True, axis="y", alpha=0.3)
    axis.legend()
    figure.savefig(path, dpi=120)
    return path


def plot_heatmap(
    path: str | Path,
    values: Sequence[Sequence[float]],
    *,
    rows: Sequence[str],
    columns: Sequence[str],
    title: str,
    xlabel: str = "",
    ylabel: str = "",
) -> Path:
    """A table of values as a colour map with each cell's value written in it (rows top to bottom)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure = Figure(figsize=(1.0 + 0.8 * len(columns), 1.2 + 0.5 * len(rows)), layout="constrained")
    axis = figure.subplots()
    image = axis.imshow(values, aspect="auto", cmap="viridis")
    for i, row in enumerate(values):
        for j, value in enumerate(row):
            axis.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7, color="white")
    axis.set_xticks(range(len(columns)), columns, rotation=45, ha="right")
    axis.set_yticks(range(len(rows)), rows)
    axis.set(title=title, xlabel=xlabel, ylabel=ylabel)
    figure.colorbar(image, ax=axis)
    figure.savefig(path, dpi=120)
    return path
