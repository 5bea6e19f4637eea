"""Diagnose a trained model: every implicit bias the toolkit measures, in one table and one page.

``implicit_bias.diagnose(model, data)`` returns a :class:`Diagnosis` (``.table``, ``.summary``, ``.skipped``,
``.to_csv``, ``.to_html``).
"""

from .api import diagnose
from .result import COLUMNS, SECTIONS, Diagnosis, Row, read_csv

__all__ = ["COLUMNS", "SECTIONS", "Diagnosis", "Row", "diagnose", "read_csv"]
