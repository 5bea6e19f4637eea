"""Self-contained HTML pages: one per reproduction (or diagnosis) and an index over ``reproduce --all``.

A page is built from :class:`Section` objects (plain text, :class:`Table`, :class:`Figure`) and rendered with the
Jinja2 templates shipped in ``implicit_bias/report/templates``: autoescaped, the style sheet inline, every figure
embedded as a ``data:`` URI, and a Content-Security-Policy that forbids loading anything else — the page opens
from disk with no server and no network.
"""

from __future__ import annotations

import base64
import io
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from .. import __version__
from ..errors import CorruptFileError, InvalidArgumentError, MissingFileError
from ..train.rundir import atomic_write
from .markdown import CRITERIA_HEADER, _number, criterion_cells, headline, index_summary

Cell = str | int | float | bool | None
_SCALARS = (str, bool, int, float, type(None))
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_MEDIA_TYPES = {".png": "image/png", ".svg": "image/svg+xml"}
_STATUS_KINDS = {"passed": "good", "ok": "good", "failed": "bad", "error": "bad", "skipped": "skip", "not shown": "bad"}
_THUMBNAIL_PIXELS = (360, 240)  # the largest width × height of an index thumbnail


def _short(value: Any, limit: int = 100) -> str:
    """``repr(value)`` on one line, cut to ``limit`` characters (an error message stays one readable line)."""
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _check_text(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidArgumentError(f"{name} must be a str, got {type(value).__name__} {_short(value)}")
    return value


def _scalar(value: Any, where: str) -> Cell:
    """``value`` as a table cell: a str, int, float, bool or None; 0-d numpy/torch values become Python ones."""
    if not isinstance(value, _SCALARS) and getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        value = value.item()
    if not isinstance(value, _SCALARS):
        raise InvalidArgumentError(
            f"{where} must be a str, int, float, bool or None, got {type(value).__name__} {_short(value)}"
            " (format it first, e.g. str(value), or take one element with .item())"
        )
    return value


@dataclass(frozen=True)
class Table:
    """A table: ``columns`` (names) and ``rows`` of cells (str, int, float, bool or None), a ``caption``.

    Floats print as ``%.6g`` (``nan`` and ``inf`` as such), booleans as yes/no, None as an em dash. Cells are
    checked and 0-d numpy/torch numbers converted when the table is made.
    """

    columns: Sequence[str]
    rows: Sequence[Sequence[Any]]
    caption: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.columns, str) or not isinstance(self.columns, Sequence) or not self.columns:
            raise InvalidArgumentError(f"Table columns must be a non-empty sequence of str, got {_short(self.columns)}")
        columns = tuple(_check_text(f"Table column {i}", column) for i, column in enumerate(self.columns))
        if isinstance(self.rows, str) or not isinstance(self.rows, Sequence):
            raise InvalidArgumentError(f"Table rows must be a sequence of rows, got {type(self.rows).__name__}")
        rows = []
        for i, row in enumerate(self.rows):
            if isinstance(row, str) or not isinstance(row, Sequence) or len(row) != len(columns):
                raise InvalidArgumentError(
                    f"Table row {i} must be a sequence of {len(columns)} cells (columns {list(columns)}), "
                    f"got {_short(row)}"
                )
            rows.append(tuple(_scalar(cell, f"Table row {i}, column {columns[j]!r}") for j, cell in enumerate(row)))
        object.__setattr__(self, "columns", columns)
        object.__setattr__(self, "rows", tuple(rows))
        _check_text("Table caption", self.caption)


@dataclass(frozen=True)
class Figure:
    """A PNG or SVG file on disk, embedded in the page (as a ``data:`` URI) when the page is rendered."""

    path: str | Path
    caption: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        _check_text("Figure caption", self.caption)


@dataclass(frozen=True)
class Section:
    """One part of a page: a ``title``, plain ``text`` (escaped; paragraphs split on blank lines), ``tables``,
    ``figures``, a ``status`` badge (``"passed"``, ``"failed"``, ``"error: …"``, ``"skipped: <reason>"``) and
    ``markdown`` (CommonMark, rendered after the text with raw HTML escaped and only relative links kept)."""

    title: str
    text: str = ""
    tables: Sequence[Table] = ()
    figures: Sequence[Figure] = ()
    status: str = ""
    markdown: str = ""

    def __post_init__(self) -> None:
        for name in ("title", "text", "status", "markdown"):
            _check_text(f"Section {name}", getattr(self, name))
        for name, kind in (("tables", Table), ("figures", Figure)):
            items = getattr(self, name)
            if isinstance(items, str) or not isinstance(items, Sequence) or not all(isinstance(x, kind) for x in items):
                raise InvalidArgumentError(f"Section {name} must be a sequence of {kind.__name__}, got {_short(items)}")
            object.__setattr__(self, name, tuple(items))


def _cell_view(value: Cell) -> dict[str, str]:
    if value is None:
        return {"text": "—", "kind": "none"}
    kind = "number" if isinstance(value, int | float) and not isinstance(value, bool) else "text"
    return {"text": _number(value), "kind": kind}


def _image_bytes(figure: Figure) -> tuple[bytes, str]:
    """The figure file's bytes and media type, checked to be what the file name says."""
    path = figure.path
    media_type = _MEDIA_TYPES.get(path.suffix.lower())
    if media_type is None:
        raise InvalidArgumentError(f"figure {str(path)!r} must be a .png or .svg file, got suffix {path.suffix!r}")
    if not path.is_file():
        raise MissingFileError(f"figure {str(path)!r} does not exist (write the figure before the page)")
    data = path.read_bytes()
    looks_right = data.startswith(_PNG_SIGNATURE) if media_type == "image/png" else b"<svg" in data[:4096]
    if not looks_right:
        raise CorruptFileError(f"figure {str(path)!r} is not a {path.suffix[1:].upper()} file (wrong content)")
    return data, media_type


def data_uri(data: bytes, media_type: str) -> str:
    """``data:<media_type>;base64,<data>``."""
    return f"data:{media_type};base64,{base64.b64encode(data).decode('ascii')}"


def _figure_view(figure: Figure) -> dict[str, str]:
    return {
        "uri": data_uri(*_image_bytes(figure)),
        "caption": figure.caption,
        "alt": figure.caption or figure.path.name,
    }


def _thumbnail_uri(path: Path) -> str:
    """A figure shrunk to at most :data:`_THUMBNAIL_PIXELS` (SVG as is), as a data URI."""
    data, media_type = _image_bytes(Figure(path))
    if media_type == "image/png":
        from PIL import Image  # matplotlib's own dependency

        with Image.open(io.BytesIO(data)) as image:
            image.thumbnail(_THUMBNAIL_PIXELS)
            buffer = io.BytesIO()
            image.save(buffer, format="PNG", optimize=True)
        data = buffer.getvalue()
    return data_uri(data, media_type)


_SCHEME = re.compile(r"^\s*([a-z][a-z0-9+.\-]*:|[/\\]{2})", re.IGNORECASE)


def _relative_link(url: str) -> bool:
    """Whether a markdown link stays inside the page's folder: no scheme (http:, data:, javascript:) and not
    protocol-relative (``//host``)."""
    return _SCHEME.match(url) is None


@cache
def _markdown_renderer() -> Any:
    from markdown_it import MarkdownIt

    renderer = MarkdownIt("commonmark", {"html": False}).disable("image")  # an image would be a file request
    renderer.validateLink = _relative_link  # any other link is left as text
    return renderer


def render_markdown(text: str) -> Markup:
    """CommonMark ``text`` as HTML: raw HTML escaped, images not loaded, links other than relative ones as text."""
    return Markup(_markdown_renderer().render(_check_text("markdown", text)))


@cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("implicit_bias.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _anchors(titles: Sequence[str]) -> list[str]:
    """Unique ``id`` values for the section titles (``s1-margins``, ...)."""
    return [f"s{i + 1}-" + re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") for i, title in enumerate(titles)]


def _section_view(section: Section, anchor: str) -> dict[str, Any]:
    status_word = section.status.split(":", 1)[0].strip().lower()
    return {
        "title": section.title,
        "anchor": anchor,
        "status": section.status,
        "status_kind": _STATUS_KINDS.get(status_word, "note"),
        "paragraphs": [p.strip() for p in re.split(r"\n\s*\n", section.text) if p.strip()],
        "markdown": render_markdown(section.markdown) if section.markdown else "",
        "tables": [
            {"caption": t.caption, "columns": t.columns, "cells": [[_cell_view(c) for c in row] for row in t.rows]}
            for t in section.tables
        ],
        "figures": [_figure_view(f) for f in section.figures],
    }


def _render(template: str, title: str, subtitle: str, **context: Any) -> str:
    _check_text("title", title)
    _check_text("subtitle", subtitle)
    return _environment().get_template(template).render(title=title, subtitle=subtitle, version=__version__, **context)


def render_page(title: str, sections: Sequence[Section], *, subtitle: str = "") -> str:
    """The whole self-contained page: ``title``, ``subtitle`` and the ``sections`` in order (a contents list when
    there are several).

    Examples
    --------
    >>> from implicit_bias.report.html import Section, Table, render_page
    >>> page = render_page("demo", [Section("numbers", text="One third:", tables=[Table(["x"], [[1 / 3]])])])
    >>> '<td class="number">0.333333</td>' in page, "://" in page
    (True, False)
    """
    if isinstance(sections, Section | str) or not isinstance(sections, Sequence):
        raise InvalidArgumentError(f"sections must be a sequence of Section, got {_short(sections)}")
    if not all(isinstance(s, Section) for s in sections):
        raise InvalidArgumentError(f"sections must be a sequence of Section, got {_short(list(sections))}")
    anchors = _anchors([s.title for s in sections])
    views = [_section_view(s, a) for s, a in zip(sections, anchors)]
    return _render("page.html.j2", title, subtitle, sections=views)


def write_page(path: str | Path, title: str, sections: Sequence[Section], *, subtitle: str = "") -> Path:
    """Render the page and write it to ``path`` atomically (a reader sees the old file or the new one; an error
    while rendering leaves the old file untouched). Returns ``path``."""
    path = Path(path)
    atomic_write(path, render_page(title, sections, subtitle=subtitle))
    return path


# --- reproductions -------------------------------------------------------------------------------------------------


def _display(value: Any) -> Cell:
    """A result or config value as a cell: scalars as they are, anything else (lists, dicts) as JSON."""
    return value if isinstance(value, _SCALARS) else json.dumps(value, default=str)


def _shown_figures(folder: Path, names: Sequence[str]) -> tuple[list[str], list[str]]:
    """The figure files in ``folder`` a page can embed, and the others, each with why not (so a reproduction that
    lists a figure it did not write still gets its page, saying so)."""
    shown, unshown = [], []
    for name in names:
        if Path(name).suffix.lower() not in _MEDIA_TYPES:
            unshown.append(f"{name} (not PNG or SVG)")
        elif not (folder / name).is_file():
            unshown.append(f"{name} (missing)")
        else:
            shown.append(name)
    return shown, unshown


def _verdict(result: Mapping[str, Any]) -> str:
    if "error" in result:
        return "error"
    return "passed" if result["passed"] else "failed"


def experiment_sections(
    result: Mapping[str, Any], config: Mapping[str, Any], notes: str = "", *, folder: str | Path = "."
) -> list[Section]:
    """The sections of a reproduction's page, from the same result, config and notes as its ``report.md``: the
    verdict, how it was checked (``notes``, markdown), the criteria (when ``result`` lists them), the numbers, the
    figures (files in ``folder``) and the configuration (settings other than the criteria, when there are any)."""
    verdict = _verdict(result)
    text = f"{verdict.capitalize()} in {result['seconds']:.1f} s ({'quick' if result.get('quick') else 'full'} preset)."
    if "error" in result:
        text += f"\n\nThe experiment raised {result['error']}\n\nTraceback: {result['traceback']} in this folder."
    sections = [Section("Verdict", text=text, status=verdict)]
    if notes.strip():
        sections.append(Section("How the claim was checked", markdown=notes))
    criteria = result.get("criteria")
    if criteria:
        held = sum(bool(criterion["passed"]) for criterion in criteria)
        rows = [criterion_cells(criterion) for criterion in criteria]
        sections.append(
            Section("Criteria", text=f"{held} of {len(criteria)} hold.", tables=[Table(CRITERIA_HEADER, rows)])
        )
    if result["numbers"]:
        rows = [[key, _display(value)] for key, value in result["numbers"].items()]
        sections.append(Section("Numbers", tables=[Table(("quantity", "value"), rows)]))
    if result["figures"]:
        shown, unshown = _shown_figures(Path(folder), result["figures"])
        figures = [Figure(Path(folder) / name, caption=name) for name in shown]
        sections.append(
            Section("Figures", figures=figures, status=f"not shown: {', '.join(unshown)}" if unshown else "")
        )
    rows = [[key, _display(value)] for key, value in config.items() if key != "criteria"]  # they are in the table
    if rows:
        sections.append(Section("Configuration", tables=[Table(("setting", "value"), rows)]))
    return sections


def write_experiment_page(
    path: str | Path, result: Mapping[str, Any], config: Mapping[str, Any], notes: str = ""
) -> Path:
    """Write a reproduction's ``report.html`` (figures read from the page's folder); see :func:`experiment_sections`."""
    path = Path(path)
    sections = experiment_sections(result, config, notes, folder=path.parent)
    return write_page(path, result["name"], sections, subtitle=result["claim"])


def render_index(
    folder: str | Path,
    results: Sequence[Mapping[str, Any]],
    key_numbers: Mapping[str, str],
    *,
    total: int | None = None,
) -> str:
    """The index page of a sweep written into ``folder``: per experiment its claim, verdict, key number (or error),
    time and figure thumbnails, each linking to ``<name>/report.html``; ``total`` as in ``index_report``."""
    folder = Path(folder)
    rows = []
    for result in results:
        name, key = result["name"], key_numbers.get(result["name"], "")
        if "error" in result:
            value = f"raised {result['error']}"
        else:
            value = headline(result, key)
        rows.append(
            {
                "name": name,
                "claim": result["claim"],
                "verdict": _verdict(result),
                "status_kind": _STATUS_KINDS[_verdict(result)],
                "value": value,
                "seconds": f"{result['seconds']:.1f}",
                "report": f"{name}/report.html",
                "traceback": f"{name}/{result['traceback']}" if "error" in result else "",
                "thumbnails": [
                    {"uri": _thumbnail_uri(folder / name / figure), "alt": figure}
                    for figure in _shown_figures(folder / name, result["figures"])[0]
                ],
            }
        )
    summary = index_summary(results)
    incomplete = (
        f"Incomplete: {len(results)} of {total} experiments have run." if total and len(results) < total else ""
    )
    return _render(
        "index.html.j2", "implicit-bias reproductions", "", rows=rows, summary=summary, incomplete=incomplete
    )


def write_index_page(
    path: str | Path, results: Sequence[Mapping[str, Any]], key_numbers: Mapping[str, str], *, total: int | None = None
) -> Path:
    """Write a sweep's ``index.html`` atomically next to the experiments' folders; see :func:`render_index`."""
    path = Path(path)
    atomic_write(path, render_index(path.parent, results, key_numbers, total=total))
    return path
