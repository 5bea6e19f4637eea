"""Small numerical summaries experiments share: rates on log time, monotonicity, orderings, key names."""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence

import numpy as np


def log_log_slope(steps: Sequence[float], values: Sequence[float], low: float, high: float) -> float:
    """Least-squares slope of log(value) against log(step) over low ≤ step ≤ high (positive values only):
    the exponent p of a local power law value ∝ step^p."""
    s, v = np.asarray(steps, dtype=float), np.asarray(values, dtype=float)
    keep = (s >= low) & (s <= high) & (v > 0)
    if keep.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(s[keep]), np.log(v[keep]), 1)[0])


def largest_relative_drop(values: Sequence[float]) -> float:
    """max over consecutive pairs of (v_i − v_{i+1})/|v_i|, or 0 when the sequence never decreases."""
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return 0.0
    return float(max(((v[:-1] - v[1:]) / np.abs(v[:-1])).max(), 0.0))


def order_violations(values: Sequence[float], *, strict: bool = True) -> int:
    """How many consecutive pairs break the increasing order v_0 < v_1 < … (≤ with ``strict=False``): 0 when the
    sequence is ordered, so an ordering claim becomes a number a criterion can test."""
    return sum(not (b > a if strict else b >= a) for a, b in itertools.pairwise(values))


def key_part(value: float | str) -> str:
    """``value`` as a piece of an identifier key: 0.25 → ``0p25``, 1e-05 → ``1em05``, ``layer1.0.weight`` →
    ``layer1_0_weight``."""
    text = f"{value:g}".replace("-", "m").replace(".", "p") if isinstance(value, float) else str(value)
    return re.sub(r"[^0-9A-Za-z_]+", "_", text)
