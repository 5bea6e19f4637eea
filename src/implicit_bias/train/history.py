"""The record of a training run: one row per logged step."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field


@dataclass
class History:
    """Rows of logged values (``step``, ``log_loss``, ``accuracy``, probe values …), in step order.

    A value a probe could not define at a step (a margin before the data is fit) is absent from that row.
    """

    rows: list[dict[str, float]] = field(default_factory=list)

    def append(self, row: Mapping[str, float]) -> None:
        """Add the row of a new logged step."""
        self.rows.append(dict(row))

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[dict[str, float]]:
        return iter(self.rows)

    @property
    def columns(self) -> list[str]:
        """Every key that appears in some row, in order of first appearance."""
        seen: dict[str, None] = {}
        for row in self.rows:
            seen.update(dict.fromkeys(row))
        return list(seen)

    def column(self, name: str) -> tuple[list[int], list[float]]:
        """(steps, values) of the rows where ``name`` was logged."""
        pairs = [(int(row["step"]), row[name]) for row in self.rows if name in row]
        return [p[0] for p in pairs], [p[1] for p in pairs]

    @property
    def last(self) -> dict[str, float]:
        """The most recent row (empty before the first log)."""
        return self.rows[-1] if self.rows else {}

    def to_csv(self) -> str:
        """The rows as CSV text; an absent value is an empty cell."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.columns, restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows([{k: repr(v) for k, v in row.items()} for row in self.rows])
        return buffer.getvalue()

    @classmethod
    def from_csv(cls, text: str) -> History:
        """Parse what :meth:`to_csv` wrote."""
        rows = []
        for record in csv.DictReader(io.StringIO(text)):
            rows.append({k: float(v) for k, v in record.items() if v not in ("", None)})
        return cls(rows)
