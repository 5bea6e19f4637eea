"""The diagnosis as one self-contained HTML page, through :func:`implicit_bias.report.html.write_page`."""

from __future__ import annotations

import tempfile
from pathlib import Path

from .. import __version__
from .figures import plot_diagnosis
from .result import SECTIONS, Diagnosis

CAPTIONS = {
    "collapse": "NC1 per feature layer (Papyan, Han & Donoho 2020); lower is more collapsed.",
    "effective depth": "NCC accuracy per layer with the ε-effective depth marked (Galanti et al. 2022).",
    "weight spectra": "Top singular values of each weight matrix, relative to the largest.",
}
INTRODUCTIONS = {
    "architecture": "Parameters, the feature layers measured, and the homogeneity degree L (Φ(cθ) = c^L Φ(θ)).",
    "rates": "Rates Λ with Φ(exp(αΛ)θ) = e^α Φ(θ) (Kunin et al. 2023); 'top' marks the tensors at λ_max.",
    "margins": "Margins q_n = Φ_y − max_{j≠y} Φ_j and their normalizations (Lyu & Li 2020; Kunin et al. 2023).",
    "collapse": "Neural collapse per feature layer on the training split (and the test split where given).",
    "weight spectra": "Ranks of each weight (conv kernels as out × in·k matrices); the variant names the convention.",
    "feature spectra": "Ranks of each layer's features H and class means M.",
    "effective depth": "The first layer whose nearest-class-centre classifier errs on at most ε of the training set.",
}


# sections shown as one row per (layer, group) and one column per metric: the group a row's variant belongs to
GROUPS = {
    "collapse": lambda variant: "train" if variant == "train" else "test",
    "weight spectra": lambda variant: "",
    "feature spectra": lambda variant: variant.split(": ")[0],
    "effective depth": lambda variant: "",
}


def _wide(name: str, rows: list[tuple]) -> object:
    """``rows`` (layer, metric, value, variant) as one row per (layer, group) with a column per metric; the
    conventions the variants name (beyond the group) go into the caption."""
    from ..report.html import Table

    group = GROUPS[name]
    metrics = list(dict.fromkeys(metric for _, metric, _, _ in rows))
    cells: dict[tuple[str, str], dict[str, float]] = {}
    conventions: dict[str, str] = {}
    for layer, metric, value, variant in rows:
        kind = group(variant)
        cells.setdefault((layer, kind), {})[metric] = value
        rest = variant.removeprefix(f"{kind}: ") if kind and variant != kind else ("" if kind else variant)
        if rest:
            conventions.setdefault(metric, rest)
    grouped = any(kind for _, kind in cells)
    columns = ("layer", *(("split" if name == "collapse" else "of",) if grouped else ()), *metrics)
    table_rows = [
        (layer, *((kind,) if grouped else ()), *(values.get(metric) for metric in metrics))
        for (layer, kind), values in cells.items()
    ]
    caption = "; ".join(f"{metric}: {text}" for metric, text in conventions.items())
    return Table(columns, table_rows, caption=caption)


def page_sections(diagnosis: Diagnosis, figures: dict[str, Path]) -> list:
    """The page's sections: a summary, then one per measured section (tables without the σ_i rows, which the
    figures and the CSV hold), each marked skipped with its reasons where it measured nothing."""
    from ..report.html import Figure, Section, Table

    summary = Table(("quantity", "value"), [(name, value) for name, value in diagnosis.summary.items()])
    skipped_text = "\n\n".join(diagnosis.skipped) if diagnosis.skipped else "Every section was measured."
    result = [
        Section(
            "Summary",
            text=f"Model {diagnosis.model} on {diagnosis.data}.\n\nNot measured:\n\n{skipped_text}",
            tables=[summary],
        )
    ]
    for name in SECTIONS:
        rows = [
            (row.layer, row.metric, row.value, row.variant)
            for row in diagnosis.rows(name)
            if not row.metric.startswith("sigma_")
        ]
        reasons = [reason.removeprefix(f"{name}: ") for reason in diagnosis.skipped if reason.startswith(f"{name}: ")]
        if not rows and not reasons:
            continue
        tables = ([_wide(name, rows) if name in GROUPS else Table(("layer", "metric", "value", "variant"), rows)]
                  if rows else [])  # fmt: skip
        status = "" if rows else "skipped: " + "; ".join(reasons)
        text = INTRODUCTIONS[name] + ("\n\nNot measured: " + "\n\n".join(reasons) if rows and reasons else "")
        shown = [Figure(figures[name], CAPTIONS[name])] if name in figures else []
        result.append(Section(name, text=text, tables=tables, figures=shown, status=status))
    return result


def write_report(diagnosis: Diagnosis, path: Path, *, figures: Path | None = None) -> Path:
    """Draw the figures into ``figures`` (a temporary folder when None) and write the page to ``path``
    atomically."""
    from ..report.html import write_page

    with tempfile.TemporaryDirectory() as scratch:
        drawn = plot_diagnosis(diagnosis, figures if figures is not None else Path(scratch))
        return write_page(
            path,
            f"Diagnosis of {diagnosis.model}",
            page_sections(diagnosis, drawn),
            subtitle=f"on {diagnosis.data}: implicit-bias {__version__}",
        )
