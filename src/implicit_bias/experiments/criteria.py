"""Declarative pass criteria: what a reproduction checks, stated as data its config carries.

A :class:`Criterion` compares one entry of an experiment's ``numbers`` with a threshold; the registry evaluates
every criterion of the config after the run, and the claim holds when all of them do. ``--set
threshold.NAME=VALUE`` changes a threshold (:func:`set_thresholds`); the change is recorded in the criterion
(``changed_from``), hence in ``config.yaml``, ``result.json`` and the report.
"""

from __future__ import annotations

import dataclasses
import math
import numbers as _numbers
import re
import statistics
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import InvalidArgumentError, UnknownNameError
from ..validation import check_choice, check_options

Comparison = Literal[">=", ">", "<=", "<", "==", "in"]
COMPARISONS: tuple[str, ...] = (">=", ">", "<=", "<", "==", "in")
OVER: tuple[str, ...] = ("value", "mean", "each", "most")
THRESHOLD_PREFIX = "threshold."
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def check_identifier(what: str, key: Any) -> str:
    """``key`` if it is an ASCII identifier (letters, digits, underscores; not starting with a digit)."""
    if not isinstance(key, str) or not _IDENTIFIER.fullmatch(key):
        raise InvalidArgumentError(
            f"{what} must be an identifier (ASCII letters, digits and underscores, e.g. 'margin_ratio'), got {key!r}"
        )
    return key


def _check_threshold(what: str, comparison: str, threshold: Any) -> float | tuple[float, float]:
    """A real threshold (an ``[low, high]`` pair with low ≤ high for ``in``), NaN and booleans refused."""

    def real(value: Any) -> bool:
        return isinstance(value, _numbers.Real) and not isinstance(value, bool) and not math.isnan(value)

    if comparison == "in":
        if isinstance(threshold, Sequence) and not isinstance(threshold, str) and len(threshold) == 2:
            low, high = threshold
            if real(low) and real(high) and low <= high:
                return (float(low), float(high))
        raise InvalidArgumentError(
            f"{what} must be a range [low, high] with low <= high (comparison 'in'), got {threshold!r}"
        )
    if not real(threshold):
        raise InvalidArgumentError(
            f"{what} must be a number (comparison {comparison!r}), got {type(threshold).__name__} {threshold!r}"
        )
    return float(threshold)


@dataclass(frozen=True)
class Criterion:
    """One pass criterion: ``numbers[quantity] <comparison> threshold``.

    Attributes
    ----------
    name : str
        An identifier, unique within the experiment; ``--set threshold.<name>=VALUE`` changes its threshold.
    quantity : str
        The key of the experiment's ``numbers`` (``over="value"``) or ``per_seed`` values (otherwise) it reads; a
        structural fact — an ordering, a monotone curve — is reported as a number such as a count of violations,
        and the criterion is stated on that number.
    comparison : {">=", ">", "<=", "<", "==", "in"}
        ``in`` tests low ≤ measured ≤ high for ``threshold = (low, high)``; booleans compare as 1 / 0.
    threshold : float or (float, float)
    stands_for : str
        One sentence: the figure, theorem or equation of the paper the criterion stands for.
    over : {"value", "mean", "each", "most"}
        What the comparison applies to: the one measured value, the mean over seeds, every seed, or more than half
        of the seeds (the last three read the run's per-seed values).
    changed_from : float or (float, float) or None
        The preset's threshold when ``--set`` changed it, else None.
    """

    name: str
    quantity: str
    comparison: Comparison
    threshold: float | tuple[float, float]
    stands_for: str
    over: Literal["value", "mean", "each", "most"] = "value"
    changed_from: float | tuple[float, float] | None = None

    def __post_init__(self) -> None:
        check_identifier("criterion name", self.name)
        check_identifier(f"criterion {self.name!r}: quantity", self.quantity)
        check_choice(f"comparison of criterion {self.name!r}", self.comparison, COMPARISONS)
        check_choice(f"'over' of criterion {self.name!r}", self.over, OVER)
        object.__setattr__(
            self,
            "threshold",
            _check_threshold(f"threshold of criterion {self.name!r}", self.comparison, self.threshold),
        )
        if not isinstance(self.stands_for, str) or not self.stands_for.strip():
            raise InvalidArgumentError(f"criterion {self.name!r} must say what it stands_for (a sentence)")

    def holds(self, measured: float | bool) -> tuple[bool, str | None]:
        """Whether ``measured`` meets the criterion, and why not when it cannot be compared (NaN never passes)."""
        if isinstance(measured, float) and math.isnan(measured):
            return False, "measured NaN: the quantity could not be computed, so the criterion cannot hold"
        value = float(measured)
        if self.comparison == "in":
            low, high = self.threshold  # type: ignore[misc]
            return low <= value <= high, None
        threshold = self.threshold
        passed = {
            ">=": value >= threshold,  # type: ignore[operator]
            ">": value > threshold,  # type: ignore[operator]
            "<=": value <= threshold,  # type: ignore[operator]
            "<": value < threshold,  # type: ignore[operator]
            "==": value == threshold,
        }[self.comparison]
        return passed, None


def evaluate(
    criteria: Sequence[Criterion],
    numbers: Mapping[str, Any],
    experiment: str,
    *,
    unmeasured: Mapping[str, str] | None = None,
    per_seed: Mapping[str, Sequence[float | bool]] | None = None,
) -> list[dict[str, Any]]:
    """Each criterion's outcome, as ``result.json`` stores it: ``{name, quantity, measured, comparison, threshold,
    passed, stands_for, over, changed_from, reason, seeds, seeds_holding}``.

    ``reason`` says why it failed without a comparison (else None). A quantity in ``unmeasured`` (quantity → why
    the run could not measure it) fails with that reason and ``measured`` None. A per-seed criterion reads
    ``per_seed[quantity]``: ``measured`` is the mean, ``seeds`` how many values, ``seeds_holding`` how many meet
    the comparison (both None for ``over="value"``). A quantity the run did not report is an error of the
    experiment's definition, named.
    """
    unmeasured, per_seed = dict(unmeasured or {}), dict(per_seed or {})
    outcomes = []
    for criterion in criteria:
        seeds = held = None
        source, reported = ("numbers", numbers) if criterion.over == "value" else ("per_seed", per_seed)
        over = "" if criterion.over == "value" else f" (over {criterion.over!r})"
        if criterion.quantity in unmeasured:
            measured, passed, reason = None, False, f"not measured: {unmeasured[criterion.quantity]}"
        elif criterion.quantity not in reported:
            raise InvalidArgumentError(
                f"experiment {experiment!r}: criterion {criterion.name!r}{over} reads "
                f"{source}[{criterion.quantity!r}], which the run did not report; it reported: "
                f"{', '.join(reported) or '(nothing)'}"
            )
        elif criterion.over == "value":
            measured = numbers[criterion.quantity]
            passed, reason = criterion.holds(measured)
        else:
            values = per_seed[criterion.quantity]
            seeds, held = len(values), sum(criterion.holds(value)[0] for value in values)
            measured = statistics.fmean(map(float, values))
            passed, reason = criterion.holds(measured)  # "mean"; a NaN mean (a NaN seed) fails with its reason
            if criterion.over != "mean" and reason is None:
                passed = held == seeds if criterion.over == "each" else held > seeds / 2
        threshold = criterion.threshold
        changed = criterion.changed_from
        outcomes.append(
            {
                "name": criterion.name,
                "quantity": criterion.quantity,
                "measured": measured,
                "comparison": criterion.comparison,
                "threshold": list(threshold) if isinstance(threshold, tuple) else threshold,
                "passed": passed,
                "stands_for": criterion.stands_for,
                "over": criterion.over,
                "changed_from": list(changed) if isinstance(changed, tuple) else changed,
                "reason": reason,
                "seeds": seeds,
                "seeds_holding": held,
            }
        )
    return outcomes


def check_numbers(numbers: Any, experiment: str) -> dict[str, float | int | bool]:
    """``numbers`` if it maps identifier keys to Python numbers (bool, int, float); one line naming the first bad
    entry otherwise."""
    if not isinstance(numbers, Mapping):
        raise InvalidArgumentError(f"experiment {experiment!r} must report numbers as a dict, got {numbers!r}")
    for key, value in numbers.items():
        check_identifier(f"experiment {experiment!r}: numbers key", key)
        if not isinstance(value, (bool, int, float)):
            raise InvalidArgumentError(
                f"experiment {experiment!r}: numbers[{key!r}] must be a bool, int or float, got "
                f"{type(value).__name__} {value!r}"
            )
    return dict(numbers)


def check_unmeasured(unmeasured: Any, numbers: Mapping[str, Any], experiment: str) -> dict[str, str]:
    """``unmeasured`` if it maps identifier keys that are not also in ``numbers`` to a reason (a sentence)."""
    if not isinstance(unmeasured, Mapping):
        raise InvalidArgumentError(f"experiment {experiment!r}: unmeasured must be a dict, got {unmeasured!r}")
    for key, reason in unmeasured.items():
        check_identifier(f"experiment {experiment!r}: unmeasured key", key)
        if key in numbers:
            raise InvalidArgumentError(f"experiment {experiment!r}: {key!r} is both in numbers and unmeasured")
        if not isinstance(reason, str) or not reason.strip():
            raise InvalidArgumentError(f"experiment {experiment!r}: unmeasured[{key!r}] must say why, got {reason!r}")
    return dict(unmeasured)


def check_per_seed(per_seed: Any, numbers: Mapping[str, Any], experiment: str) -> dict[str, list[float | bool]]:
    """``per_seed`` if it maps identifier keys to non-empty lists of numbers (one per seed) whose summaries
    ``<key>_mean`` / ``<key>_std`` are not already in ``numbers``."""
    if not isinstance(per_seed, Mapping):
        raise InvalidArgumentError(f"experiment {experiment!r}: per_seed must be a dict, got {per_seed!r}")
    for key, values in per_seed.items():
        check_identifier(f"experiment {experiment!r}: per_seed key", key)
        if not isinstance(values, Sequence) or not values or not all(isinstance(v, (bool, int, float)) for v in values):
            raise InvalidArgumentError(
                f"experiment {experiment!r}: per_seed[{key!r}] must be a non-empty list of numbers, got {values!r}"
            )
        taken = [name for name in (f"{key}_mean", f"{key}_std") if name in numbers]
        if taken:
            raise InvalidArgumentError(f"experiment {experiment!r}: per_seed[{key!r}] would overwrite {taken[0]!r}")
    return {key: list(values) for key, values in per_seed.items()}


def seed_summaries(per_seed: Mapping[str, Sequence[float | bool]]) -> dict[str, float]:
    """``<key>_mean`` and ``<key>_std`` (the sample standard deviation, n − 1 in the denominator; 0 for one
    value) of every per-seed quantity."""
    summaries = {}
    for key, values in per_seed.items():
        floats = [float(v) for v in values]
        summaries[f"{key}_mean"] = statistics.fmean(floats)
        summaries[f"{key}_std"] = statistics.stdev(floats) if len(floats) > 1 else 0.0
    return summaries


def check_criteria(criteria: Any, where: str) -> tuple[Criterion, ...]:
    """``criteria`` as a non-empty tuple of :class:`Criterion` with unique names; mappings (``config.yaml``'s
    form, from ``dataclasses.asdict``) are read back as criteria."""
    if not isinstance(criteria, Sequence) or isinstance(criteria, str) or not criteria:
        raise InvalidArgumentError(f"{where}: criteria must be a non-empty list of Criterion, got {criteria!r}")
    checked = tuple(c if isinstance(c, Criterion) else _from_mapping(c, where) for c in criteria)
    names = [c.name for c in checked]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InvalidArgumentError(f"{where}: criterion names must be unique, {', '.join(repeated)} repeat")
    return checked


def _from_mapping(value: Any, where: str) -> Criterion:
    """A criterion from its ``dataclasses.asdict`` form, every field checked against its annotation."""
    if not isinstance(value, Mapping):
        raise InvalidArgumentError(f"{where}: a criterion must be a Criterion or a mapping, got {value!r}")
    hints = typing.get_type_hints(Criterion)
    fields = {f.name: hints[f.name] for f in dataclasses.fields(Criterion)}
    required = [f.name for f in dataclasses.fields(Criterion) if f.default is dataclasses.MISSING]
    missing = [key for key in required if key not in value]
    if missing:
        raise InvalidArgumentError(f"{where}: criterion {dict(value)!r} lacks {', '.join(missing)}")
    return Criterion(**check_options(f"{where}: criterion", value, fields))


def set_thresholds(criteria: Sequence[Criterion], thresholds: Mapping[str, Any], where: str) -> tuple[Criterion, ...]:
    """``criteria`` with ``thresholds`` (criterion name → new threshold) applied; each changed criterion records
    the preset's threshold in ``changed_from`` (kept from an earlier change). An unknown name is one line
    listing the valid ones."""
    by_name = {c.name: c for c in criteria}
    unknown = [name for name in thresholds if name not in by_name]
    if unknown:
        raise UnknownNameError(
            f"{where} has no criterion {', '.join(map(repr, unknown))} (--set {THRESHOLD_PREFIX}NAME=VALUE); "
            f"its criteria: {', '.join(by_name)}"
        )
    changed = []
    for criterion in criteria:
        if criterion.name not in thresholds:
            changed.append(criterion)
            continue
        threshold = _check_threshold(
            f"--set {THRESHOLD_PREFIX}{criterion.name}", criterion.comparison, thresholds[criterion.name]
        )
        original = criterion.threshold if criterion.changed_from is None else criterion.changed_from
        changed.append(
            dataclasses.replace(
                criterion, threshold=threshold, changed_from=None if threshold == original else original
            )
        )
    return tuple(changed)
