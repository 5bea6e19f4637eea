"""The result of a diagnosis: a long-format table of measured numbers, the headline numbers, and what was skipped."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from ..train.rundir import atomic_write

COLUMNS = ("section", "layer", "metric", "value", "variant")
SECTIONS = ("architecture", "rates", "margins", "collapse", "weight spectra", "feature spectra", "effective depth")


class Row(NamedTuple):
    """One measured number: ``section`` (one of :data:`SECTIONS`), ``layer`` (a module or parameter name, "" for
    the whole model), ``metric``, ``value`` (a finite float) and ``variant`` (the convention or split it was
    measured under, "" when there is only one)."""

    section: str
    layer: str
    metric: str
    value: float
    variant: str = ""


@dataclass(frozen=True)
class Diagnosis:
    """Every implicit bias measured on one model and dataset.

    Attributes
    ----------
    table : list of Row
        Long format, one row per number (section, layer, metric, value, variant): loads into pandas as
        ``pd.DataFrame(diagnosis.table)`` or into a spreadsheet from :meth:`to_csv`.
    summary : dict
        The headline numbers, keyed by name.
    skipped : list of str
        ``"section: reason"`` for every quantity that could not be measured.
    model : str
        The model's class name; ``data`` the dataset's description.
    """

    table: list[Row]
    summary: dict[str, float]
    skipped: list[str]
    model: str = ""
    data: str = ""
    layers: tuple[str, ...] = field(default=())

    def rows(self, section: str | None = None, *, metric: str | None = None) -> Iterator[Row]:
        """The rows of ``section`` (all sections by default), optionally of one ``metric`` only."""
        return (
            row
            for row in self.table
            if (section is None or row.section == section) and (metric is None or row.metric == metric)
        )

    def value(self, section: str, metric: str, layer: str = "", variant: str | None = None) -> float:
        """The one value of (section, layer, metric[, variant]); KeyError naming what is there when absent."""
        found = [
            row.value
            for row in self.rows(section, metric=metric)
            if row.layer == layer and (variant is None or row.variant == variant)
        ]
        if len(found) != 1:
            there = sorted({(r.layer, r.metric, r.variant) for r in self.rows(section)})
            raise KeyError(f"{len(found)} rows for ({section!r}, {layer!r}, {metric!r}, {variant!r}); {there}")
        return found[0]

    def to_csv(self, path: str | Path | None = None) -> str:
        """The table as CSV with the header ``section,layer,metric,value,variant`` (floats written with repr, so
        they read back exactly); written atomically to ``path`` when given. Returns the text."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(COLUMNS)
        writer.writerows(
            (row.section, row.layer, row.metric, repr(float(row.value)), row.variant) for row in self.table
        )
        text = buffer.getvalue()
        if path is not None:
            atomic_write(path, text)
        return text

    def to_html(self, path: str | Path, *, figures: str | Path | None = None) -> Path:
        """A self-contained HTML page of the diagnosis (figures embedded), written atomically to ``path``;
        ``figures`` is the folder for the PNG and PDF figures (default: a temporary one, removed after)."""
        from .page import write_report

        return write_report(self, Path(path), figures=None if figures is None else Path(figures))


def read_csv(text: str) -> list[Row]:
    """The rows of a table written by :meth:`Diagnosis.to_csv`."""
    return [
        Row(r["section"], r["layer"], r["metric"], float(r["value"]), r["variant"])
        for r in csv.DictReader(io.StringIO(text))
    ]
