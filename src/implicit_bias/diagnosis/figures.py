"""The diagnosis figures (PNG for the page, PDF for papers): NC1 and NCC accuracy per layer, weight spectra.

Built as ``matplotlib.figure.Figure`` objects, never through pyplot (headless, no global state), like
:mod:`implicit_bias.report.figures`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure

from .result import Diagnosis

FORMATS = ("png", "pdf")


def _save(figure: Figure, folder: Path, stem: str) -> Path:
    """Save ``figure`` as ``folder/stem.png`` and ``.pdf``; returns the PNG's path."""
    folder.mkdir(parents=True, exist_ok=True)
    for suffix in FORMATS:
        figure.savefig(folder / f"{stem}.{suffix}", dpi=120)
    return folder / f"{stem}.png"


def _per_layer(
    folder: Path,
    stem: str,
    layers: Sequence[str],
    series: dict[str, dict[str, float]],
    *,
    title: str,
    ylabel: str,
    logy: bool,
    mark: str | None = None,
) -> Path | None:
    """One line per series (label → {layer: value}) over the layers in forward order; None when nothing to draw."""
    if not any(series.values()):
        return None
    figure = Figure(figsize=(6.4, 4.0), layout="constrained")
    axis = figure.subplots()
    positions = {name: index for index, name in enumerate(layers)}
    for label, values in series.items():
        points = sorted((positions[name], value) for name, value in values.items() if not (logy and value <= 0))
        if points:
            axis.plot(*zip(*points), label=label, marker="o", markersize=4, linewidth=1.2)
    if mark is not None and mark in positions:
        axis.axvline(positions[mark], color="grey", linestyle=":", linewidth=1)
        axis.annotate("effective depth", (positions[mark], 0.02), xycoords=("data", "axes fraction"), rotation=90,
                      fontsize=8)  # fmt: skip
    axis.set_xticks(
        range(len(layers)), layers, rotation=45 if len(layers) > 4 else 0, ha="right" if len(layers) > 4 else "center"
    )
    if logy:
        axis.set_yscale("log")
    axis.set(title=title, xlabel="layer", ylabel=ylabel)
    axis.grid(True, which="both", alpha=0.3)
    if len(axis.get_legend_handles_labels()[0]) > 1:
        axis.legend()
    return _save(figure, folder, stem)


def _values(diagnosis: Diagnosis, section: str, metric: str, variant: str) -> dict[str, float]:
    return {row.layer: row.value for row in diagnosis.rows(section, metric=metric) if row.variant == variant}


def plot_diagnosis(diagnosis: Diagnosis, folder: str | Path) -> dict[str, Path]:
    """Write the figures of ``diagnosis`` into ``folder`` (PNG and PDF); returns section → PNG path for those drawn."""
    folder = Path(folder)
    layers = list(diagnosis.layers)
    drawn: dict[str, Path | None] = {}
    depth = next((row.layer for row in diagnosis.rows("effective depth", metric="depth")), None)
    drawn["collapse"] = _per_layer(
        folder,
        "nc1_by_layer",
        layers,
        {
            "train": _values(diagnosis, "collapse", "nc1", "train"),
            "test": _values(diagnosis, "collapse", "nc1", "test"),
        },
        title="NC1 = tr(Σ_W Σ_B⁺)/K per layer",
        ylabel="NC1",
        logy=True,
    )
    drawn["effective depth"] = _per_layer(
        folder,
        "ncc_accuracy_by_layer",
        layers,
        {
            "train": _values(diagnosis, "collapse", "ncc_accuracy", "train"),
            "test": _values(diagnosis, "collapse", "ncc_accuracy", "test, train class means"),
        },
        title="nearest-class-centre accuracy per layer",
        ylabel="NCC accuracy",
        logy=False,
        mark=depth,
    )
    sigmas: dict[str, list[float]] = {}
    for row in diagnosis.rows("weight spectra"):
        if row.metric.startswith("sigma_"):
            sigmas.setdefault(row.layer, []).append(row.value)
    if sigmas:
        figure = Figure(figsize=(6.4, 4.0), layout="constrained")
        axis = figure.subplots()
        for name, values in sigmas.items():
            axis.plot(range(1, len(values) + 1), [v / values[0] for v in values], label=name, marker=".", linewidth=1.2)
        axis.set_yscale("log")
        axis.set(title="singular values of each weight, σ_i / σ_1", xlabel="i", ylabel="σ_i / σ_1")
        axis.grid(True, which="both", alpha=0.3)
        if len(sigmas) > 1:
            axis.legend(fontsize=7)
        drawn["weight spectra"] = _save(figure, folder, "weight_singular_values")
    return {section: path for section, path in drawn.items() if path is not None}


def plot_trends(series: dict[str, tuple[list[int], list[float]]], folder: Path, stem: str = "trends") -> Path | None:
    """One panel per headline number against the training step (log axis; step 0 left out), in one figure."""
    series = {key: [(s, v) for s, v in zip(*points) if s > 0] for key, points in series.items()}
    series = {key: points for key, points in series.items() if points}
    if not series:
        return None
    columns = min(3, len(series))
    rows = -(-len(series) // columns)
    figure = Figure(figsize=(4.0 * columns, 2.8 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for axis, (key, points) in zip(axes, series.items()):
        axis.plot(*zip(*points), marker=".", linewidth=1.2)
        axis.set_xscale("log")
        axis.set(title=key, xlabel="step")
        axis.grid(True, which="both", alpha=0.3)
    for axis in axes[len(series) :]:
        axis.set_visible(False)
    return _save(figure, folder, stem)
