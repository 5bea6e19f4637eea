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


def experiment_report(result: Mapping[str, Any], config: Mapping[str, Any], notes: str = "") -> str:
    """A short report: the claim, the verdict, the numbers, the figures, the configuration."""
    verdict = "**PASSED**" if result["passed"] else "**FAILED**"
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
    lines += ["| quantity | value |", "|---|---|"]
    lines += [f"| {key} | {_number(value)} |" for key, value in result["numbers"].items()]
    lines.append("")
    for figure in result["figures"]:
        lines += [f"![{figure}]({figure})", ""]
    lines += ["## Configuration", "", "```json", json.dumps(dict(config), indent=2, default=str), "```", ""]
    return "\n".join(lines)


def index_report(results: Sequence[Mapping[str, Any]], key_numbers: Mapping[str, str]) -> str:
    """The index of a sweep: one line per experiment with its verdict, key number and time, linked."""
    lines = [
        "# implicit-bias reproductions",
        "",
        "| experiment | claim | passed | key number | seconds |",
        "|---|---|---|---|---|",
    ]
    for result in results:
        key = key_numbers.get(result["name"], "")
        value = f"{key} = {_number(result['numbers'][key])}" if key in result["numbers"] else ""
        lines.append(
            f"| [{result['name']}]({result['name']}/report.md) | {result['claim']} | "
            f"{_number(result['passed'])} | {value} | {result['seconds']:.1f} |"
        )
    passed = sum(bool(r["passed"]) for r in results)
    lines += ["", f"{passed} of {len(results)} claims reproduced.", ""]
    return "\n".join(lines)
