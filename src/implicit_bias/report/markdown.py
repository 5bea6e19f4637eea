"""Markdown reports: one per experiment, and an index over a ``reproduce --all`` sweep."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any


def _number(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _cell(text: str) -> str:
    """``text`` safe inside a markdown table cell (one line, pipes escaped)."""
    return " ".join(str(text).split()).replace("|", "\\|")


def failed_criteria(result: Mapping[str, Any]) -> list[str]:
    """The names of the criteria a result failed, in the config's order."""
    return [c["name"] for c in result.get("criteria", []) if not c["passed"]]


def as_declared(result: Mapping[str, Any]) -> bool:
    """Whether a failed claim failed only criteria its config declares failing at this scale
    (``fails_at_this_scale``): a known, explained result rather than a regression."""
    failed = failed_criteria(result)
    declared = set(result.get("fails_at_this_scale", ()))
    return "error" not in result and bool(failed) and set(failed) <= declared


def _verdict(result: Mapping[str, Any]) -> str:
    if "error" in result:
        return f"**ERROR**: raised `{result['error']}` (traceback in [{result['traceback']}]({result['traceback']}))"
    if result["passed"]:
        return "**PASSED**"
    return "**FAILED**" + (" — as its config declares at this scale (see the notes)" if as_declared(result) else "")


def index_summary(results: Sequence[Mapping[str, Any]]) -> str:
    """An index's last line: how many claims reproduced, failed as declared, failed, raised."""
    reproduced = sum(bool(r.get("passed")) for r in results)
    declared = [r["name"] for r in results if as_declared(r)]
    raised = sum("error" in r for r in results)
    summary = f"{reproduced} of {len(results)} claims reproduced"
    if declared:
        summary += f"; {len(declared)} failed only as declared at this scale ({', '.join(declared)})"
    return summary + (f"; {raised} experiment(s) raised an error." if raised else ".")


def _condition(criterion: Mapping[str, Any]) -> str:
    """``">= 100"``, ``"in [0.8, 1.2]"`` or ``"each seed: < 0.5"``, and the preset's threshold when ``--set``
    changed it."""

    def shown(threshold: Any) -> str:
        return (
            f"[{_number(threshold[0])}, {_number(threshold[1])}]" if isinstance(threshold, list) else _number(threshold)
        )

    text = f"{criterion['comparison']} {shown(criterion['threshold'])}"
    if criterion.get("over", "value") != "value":
        text = {"mean": "mean", "each": "each seed", "most": "most seeds"}[criterion["over"]] + f": {text}"
    if criterion.get("changed_from") is not None:
        text += f" (threshold changed from {shown(criterion['changed_from'])} by --set)"
    return text


CRITERIA_HEADER = ("criterion", "measured", "condition", "pass", "stands for")


def criterion_cells(c: Mapping[str, Any]) -> tuple[str, str, str, str, str]:
    """One criterion of ``result.json`` as plain-text cells under :data:`CRITERIA_HEADER` (a per-seed criterion
    shows the mean and how many seeds meet the condition; a failed one, why)."""
    verdict = "yes" if c["passed"] else "no"
    if c.get("seeds"):
        verdict += f" ({c['seeds_holding']} of {c['seeds']} seeds hold)"
    if c.get("reason"):
        verdict += f" ({c['reason']})"
    measured = f"{c['quantity']} = {_number(c['measured'])}" if c["measured"] is not None else c["quantity"]
    if c.get("seeds") and c["measured"] is not None:
        measured += f" (mean over {c['seeds']} seeds)"
    return c["name"], measured, _condition(c), verdict, c["stands_for"]


def criteria_table(criteria: Sequence[Mapping[str, Any]]) -> list[str]:
    """The markdown lines of the criteria table (:func:`criterion_cells`; a failed criterion's "no" in bold)."""
    lines = ["| " + " | ".join(CRITERIA_HEADER) + " |", "|---|---|---|---|---|"]
    for c in criteria:
        name, measured, condition, verdict, stands_for = (_cell(text) for text in criterion_cells(c))
        verdict = verdict if c["passed"] else f"**no**{verdict.removeprefix('no')}"
        lines.append(f"| {name} | {measured} | {condition} | {verdict} | {stands_for} |")
    return lines


def headline(result: Mapping[str, Any], key: str) -> str:
    """An index's cell for a result that ran: its key number (mean ± std over seeds for a per-seed quantity),
    and the criteria it failed by name (``"rank_drop = 3; fails: rank_drop_large"``)."""
    numbers = result["numbers"]
    if key in numbers:
        text = f"{key} = {_number(numbers[key])}"
    elif f"{key}_mean" in numbers and f"{key}_std" in numbers:  # a per-seed quantity
        text = f"{key} = {_number(numbers[f'{key}_mean'])} ± {_number(numbers[f'{key}_std'])}"
    else:
        text = ""
    failed = failed_criteria(result)
    fails = f"fails: {', '.join(failed)}" + (" (declared at this scale)" if as_declared(result) else "")
    return "; ".join(part for part in (text, fails if failed else "") if part)


def experiment_report(result: Mapping[str, Any], config: Mapping[str, Any], notes: str = "") -> str:
    """A short report: the claim, the verdict (or the error it raised), the criteria table, the numbers, the
    figures, the configuration (its criteria are in the table)."""
    verdict = _verdict(result)
    lines = [
        f"# {result['name']}",
        "",
        f"**Claim.** {result['claim']}",
        "",
        f"**Verdict.** {verdict} (in {result['seconds']:.1f} s)",
        "",
    ]
    if notes:
        lines += [notes.strip(), ""]
    if result.get("criteria"):
        passed = sum(bool(c["passed"]) for c in result["criteria"])
        lines += ["## Criteria", "", f"{passed} of {len(result['criteria'])} hold.", ""]
        lines += [*criteria_table(result["criteria"]), ""]
    lines += ["## Numbers", "", "| quantity | value |", "|---|---|"]
    lines += [f"| {key} | {_number(value)} |" for key, value in result["numbers"].items()]
    lines.append("")
    for figure in result["figures"]:
        lines += [f"![{figure}]({figure})", ""]
    shown = {key: value for key, value in config.items() if key != "criteria"}
    lines += ["## Configuration", "", "```json", json.dumps(shown, indent=2, default=str), "```", ""]
    return "\n".join(lines)


def index_report(
    results: Sequence[Mapping[str, Any]], key_numbers: Mapping[str, str], *, total: int | None = None
) -> str:
    """The index of a sweep: one line per experiment with its verdict, key number (or its error) and time,
    linked; ``total`` (the sweep's size) marks an index written before every experiment has run."""
    lines = [
        "# implicit-bias reproductions",
        "",
        "| experiment | claim | passed | key number | seconds |",
        "|---|---|---|---|---|",
    ]
    for result in results:
        name = result["name"]
        key = key_numbers.get(name, "")
        if "error" in result:
            passed, value = "error", f"raised `{_cell(result['error'])}` ([traceback]({name}/{result['traceback']}))"
        else:
            passed = _number(result["passed"])
            value = _cell(headline(result, key))
        lines.append(
            f"| [{name}]({name}/report.md) | {_cell(result['claim'])} | {passed} | {value} | {result['seconds']:.1f} |"
        )
    lines += ["", index_summary(results)]
    if total is not None and len(results) < total:
        lines.append(f"Incomplete: {len(results)} of {total} experiments have run.")
    lines.append("")
    return "\n".join(lines)
