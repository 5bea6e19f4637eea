"""The self-contained HTML pages: escaping, no external URL, embedded figures, number format, atomic write, and the
reproduction report and index built from result dicts."""

from __future__ import annotations

import base64
import io
import math
import os
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure as MplFigure
from PIL import Image
from test_cli import TinyConfig, _above  # the CLI tests' throwaway config with one criterion

from implicit_bias.errors import CorruptFileError, InvalidArgumentError, MissingFileError
from implicit_bias.experiments import EXPERIMENTS, Experiment, Outcome, reproduce_all
from implicit_bias.report import plot_series
from implicit_bias.report.html import (
    Figure,
    Section,
    Table,
    render_index,
    render_page,
    write_experiment_page,
    write_index_page,
    write_page,
)

SCRIPT = "<script>alert(1)</script>"
URL_ATTRIBUTES = {"src", "href", "srcset", "action", "poster", "data", "formaction", "background"}


class Page(HTMLParser):
    """The tags (with attributes), cell texts and visible text of an HTML page."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.cells: list[str] = []
        self.text: list[str] = []
        self._cell: list[str] | None = None
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "td":
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.cells.append("".join(self._cell))
            self._cell = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)

    def attributes(self, tag: str, name: str) -> list[str]:
        return [attrs[name] for t, attrs in self.tags if t == tag and name in attrs]


def save_png(path: Path, *, size=(4.0, 3.0)) -> Path:
    figure = MplFigure(figsize=size)
    figure.subplots().plot([1, 2, 3], [3, 1, 2])
    figure.savefig(path, dpi=100)
    return path


def save_svg(path: Path) -> Path:
    figure = MplFigure(figsize=(3, 2))
    figure.subplots().plot([1, 2], [2, 1])
    figure.savefig(path)
    return path


def assert_self_contained(html: str) -> None:
    """Every URL the page could load or follow is a data: URI, an in-page anchor or a relative path; no http(s) text
    outside the data URIs; no script."""
    page = Page(html)
    for tag, attrs in page.tags:
        assert tag != "script"
        for name, value in attrs.items():
            if name in URL_ATTRIBUTES:
                value = value.strip()
                external = re.match(r"^([a-z][a-z0-9+.\-]*:|//|\\\\)", value, re.IGNORECASE)
                assert value.startswith("data:") or not external, f"<{tag} {name}={value[:80]!r}>"
    without_data = re.sub(r"data:[\w/+.-]+;base64,[A-Za-z0-9+/=]+", "", html)
    assert "http://" not in without_data and "https://" not in without_data
    assert not re.search(r"""url\(\s*['"]?(?!data:)""", without_data)  # CSS loads nothing either
    assert not re.search(r"""(src|href)\s*=\s*['"]?//""", without_data)


def embedded_images(html: str) -> list[bytes]:
    images = []
    for src in Page(html).attributes("img", "src"):
        match = re.fullmatch(r"data:image/(png|svg\+xml);base64,([A-Za-z0-9+/=]+)", src)
        assert match, src[:60]
        images.append(base64.b64decode(match.group(2), validate=True))
    return images


def test_markup_in_every_field_comes_out_escaped():
    table = Table(["col " + SCRIPT, "b"], [[SCRIPT, 1], ["<b>bold</b> & co", None]], caption="cap " + SCRIPT)
    section = Section("title " + SCRIPT, text="text " + SCRIPT, tables=[table], status="skipped: " + SCRIPT)
    html = render_page("page " + SCRIPT, [section, Section("second")], subtitle="sub " + SCRIPT)
    page = Page(html)
    assert all(tag != "script" and tag != "b" for tag, _ in page.tags)
    # title (twice: <title> and <h1>), subtitle, section title (twice: heading and contents list), status, text,
    # column, caption, cell
    assert html.count("&lt;script&gt;alert(1)&lt;/script&gt;") == 10
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; co" in html
    assert SCRIPT in "".join(page.text)  # shown as text, not lost


def test_markdown_is_rendered_safely():
    notes = (
        "**Bold** and `code`.\n\n<script>alert(1)</script> [paper](https://arxiv.org/abs/1) "
        "[raw](//example.com/x) [js](javascript:alert(1)) [local](traceback.txt) ![plot](http://example.com/x.png)"
    )
    html = render_page("p", [Section("notes", markdown=notes)])
    page = Page(html)
    assert ("strong", {}) in page.tags and ("code", {}) in page.tags
    assert all(tag not in ("script", "img") for tag, _ in page.tags)
    assert page.attributes("a", "href") == ["traceback.txt"]  # the only link kept is the relative one
    assert "[paper](https://arxiv.org/abs/1)" in "".join(page.text)  # external links stay visible as text


def test_no_external_url_and_every_figure_embedded_byte_for_byte(tmp_path):
    png, svg = save_png(tmp_path / "a.png"), save_svg(tmp_path / "b.svg")
    sections = [
        Section("numbers", text="one\n\ntwo", tables=[Table(["x"], [[1.5]])], status="passed"),
        Section("figures", figures=[Figure(png, caption="a line"), Figure(str(svg))]),
    ]
    html = render_page("figures", sections)
    assert embedded_images(html) == [png.read_bytes(), svg.read_bytes()]
    assert "<figcaption>a line</figcaption>" in html
    assert_self_contained(html)
    assert [p for _, p in re.findall(r'<p class="(text)">([^<]*)</p>', html)] == ["one", "two"]


def test_the_self_containment_check_catches_an_external_resource():
    """The check above is not vacuous: each planted external reference fails it."""
    good = render_page("p", [Section("s")])
    for planted in (
        '<img src="http://example.com/x.png">',
        '<a href="//example.com/">x</a>',
        '<div style="background: url(x.png)"></div>',
        "<script>1</script>",
    ):
        with pytest.raises(AssertionError):
            assert_self_contained(good.replace("</main>", planted + "</main>"))


@pytest.mark.parametrize(
    ("value", "printed"),
    [
        (1 / 3, "0.333333"),
        (123456789.0, "1.23457e+08"),
        (1e-7, "1e-07"),
        (2.0, "2"),
        (-0.5, "-0.5"),
        (math.nan, "nan"),
        (-math.inf, "-inf"),
        (7, "7"),
        (10**20, "100000000000000000000"),  # ints are printed whole, not rounded
        (True, "yes"),
        (False, "no"),
        (None, "—"),
        ("text", "text"),
        (np.float64(0.1) + np.float64(0.2), "0.3"),
        (np.float32(1 / 3), "0.333333"),
        (np.int64(-3), "-3"),
        (np.bool_(True), "yes"),
        (torch.tensor(2.5, dtype=torch.float64), "2.5"),
        (torch.tensor(4), "4"),
    ],
)
def test_table_cells_print_as_specified(value, printed):
    assert Page(render_page("p", [Section("s", tables=[Table(["v"], [[value]])])])).cells == [printed]


def test_bad_tables_sections_and_figures_are_refused_with_one_precise_line(tmp_path):
    with pytest.raises(
        InvalidArgumentError, match=r"Table row 1 must be a sequence of 2 cells \(columns \['a', 'b'\]\)"
    ):
        Table(["a", "b"], [[1, 2], [3]])
    with pytest.raises(
        InvalidArgumentError,
        match=r"Table row 0, column 'b' must be a str, int, float, bool or None, "
        r"got list \[1, 2\]",
    ):
        Table(["a", "b"], [[1, [1, 2]]])
    with pytest.raises(InvalidArgumentError, match="column 'a' .* got Tensor"):
        Table(["a"], [[torch.ones(2)]])
    with pytest.raises(InvalidArgumentError, match="Table columns must be a non-empty sequence of str, got 'ab'"):
        Table("ab", [])
    with pytest.raises(InvalidArgumentError, match="Section tables must be a sequence of Table"):
        Section("s", tables=[[1, 2]])
    with pytest.raises(InvalidArgumentError, match="sections must be a sequence of Section"):
        render_page("p", Section("s"))
    with pytest.raises(InvalidArgumentError, match=r"sections must be a sequence of Section, got \[Section\(.*'x'\]"):
        render_page("p", [Section("s"), "x"])
    with pytest.raises(InvalidArgumentError, match="sections must be a sequence of Section, got <generator"):
        render_page("p", (Section(str(i)) for i in range(2)))
    with pytest.raises(MissingFileError, match="figure .*nope.png' does not exist"):
        render_page("p", [Section("s", figures=[Figure(tmp_path / "nope.png")])])
    (tmp_path / "fake.png").write_text("not a png")
    with pytest.raises(CorruptFileError, match="fake.png' is not a PNG file"):
        render_page("p", [Section("s", figures=[Figure(tmp_path / "fake.png")])])
    with pytest.raises(InvalidArgumentError, match=r"must be a \.png or \.svg file, got suffix '\.pdf'"):
        render_page("p", [Section("s", figures=[Figure(tmp_path / "a.pdf")])])


def test_write_page_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "report.html"
    path.write_text("old")
    with pytest.raises(MissingFileError):  # rendering fails before anything is written
        write_page(path, "p", [Section("s", figures=[Figure(tmp_path / "missing.png")])])
    assert path.read_text() == "old"

    def crash(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)  # the write itself fails half-way
    with pytest.raises(OSError, match="disk full"):
        write_page(path, "p", [Section("s")])
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]
    monkeypatch.undo()
    assert write_page(path, "new page", [Section("s")]) == path
    assert "<h1>new page</h1>" in path.read_text() and sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]


def _result(name: str, **extra):
    return {
        "name": name,
        "claim": f"claim of {name} <i>",
        "quick": True,
        "passed": True,
        "numbers": {"gap": 0.125},
        "figures": [],
        "seconds": 3.21,
        **extra,
    }


def test_experiment_page_renders_result_criteria_notes_and_config(tmp_path):
    save_png(tmp_path / "curve.png")
    criteria = [
        {
            "name": "decays",
            "quantity": "slope",
            "measured": -0.731234567,
            "comparison": "<",
            "threshold": -0.5,
            "passed": True,
            "stands_for": "gap ∝ t^p, p < −1/2",
        },
        {
            "name": "ordered",
            "quantity": "ratio",
            "measured": 2.0,
            "comparison": ">=",
            "threshold": 1,
            "passed": False,
            "stands_for": "GD slower than NGD",
        },
    ]
    result = _result("demo", criteria=criteria, figures=["curve.png"], numbers={"gap": 1 / 3, "steps": 100})
    config = {"seed": 0, "widths": [4, 8], "loss": "exponential"}
    path = write_experiment_page(tmp_path / "report.html", result, config, notes="Checked **twice**.")
    html = path.read_text()
    page = Page(html)
    assert "<h1>demo</h1>" in html and "claim of demo &lt;i&gt;" in html
    assert '<span class="status good">passed</span>' in html
    assert "Passed in 3.2 s (quick preset)." in html and "<strong>twice</strong>" in html
    assert page.cells == [
        "decays", "slope = -0.731235", "< -0.5", "yes", "gap ∝ t^p, p < −1/2",
        "ordered", "ratio = 2", ">= 1", "no", "GD slower than NGD",
        "gap", "0.333333", "steps", "100",
        "seed", "0", "widths", "[4, 8]", "loss", "exponential",
    ]  # fmt: skip
    assert embedded_images(html) == [(tmp_path / "curve.png").read_bytes()]
    assert_self_contained(html)

    assert "0 of 0 claims reproduced." in render_index(tmp_path, [], {})
    without = write_experiment_page(tmp_path / "plain.html", _result("demo"), {}, notes="").read_text()
    assert "Criteria" not in without and "How the claim was checked" not in without and "Configuration" not in without


def test_experiment_page_of_a_run_that_raised(tmp_path):
    result = _result("broken", passed=False, error="RuntimeError: boom <x>", traceback="traceback.txt", numbers={})
    html = write_experiment_page(tmp_path / "report.html", result, {"seed": 1}).read_text()
    assert '<span class="status bad">error</span>' in html
    assert "The experiment raised RuntimeError: boom &lt;x&gt;" in html and "Traceback: traceback.txt" in html
    assert "Numbers" not in html


def test_figures_a_page_cannot_embed_are_named_not_dropped(tmp_path):
    (tmp_path / "run").mkdir()
    save_png(tmp_path / "run" / "kept.png")
    (tmp_path / "run" / "also.pdf").write_bytes(b"%PDF-1.4")
    result = _result("run", figures=["kept.png", "gone.png", "also.pdf"])
    html = write_experiment_page(tmp_path / "run" / "report.html", result, {}).read_text()
    assert '<span class="status bad">not shown: gone.png (missing), also.pdf (not PNG or SVG)</span>' in html
    assert embedded_images(html) == [(tmp_path / "run" / "kept.png").read_bytes()]
    assert len(embedded_images(render_index(tmp_path, [result], {}))) == 1  # the index's thumbnail of kept.png


def test_index_links_each_report_and_embeds_thumbnails(tmp_path):
    (tmp_path / "first").mkdir()
    original = save_png(tmp_path / "first" / "wide.png", size=(8.0, 2.0))  # 800 × 200 pixels
    results = [
        _result("first", figures=["wide.png"]),
        _result("second", passed=False, numbers={"other": 1}),
        _result("third", passed=False, error="ValueError: bad", traceback="traceback.txt", numbers={}),
    ]
    path = write_index_page(tmp_path / "index.html", results, {"first": "gap", "second": "gap"}, total=4)
    html = path.read_text()
    page = Page(html)
    assert page.attributes("a", "href") == [
        "first/report.html",
        "first/report.html",
        "second/report.html",
        "third/report.html",
        "third/traceback.txt",
    ]
    assert "gap = 0.125" in html and "raised ValueError: bad" in html
    assert "1 of 3 claims reproduced; 1 experiment(s) raised an error." in html
    assert "Incomplete: 3 of 4 experiments have run." in html
    assert [v for v in page.attributes("span", "class")] == ["status good", "status bad", "status bad"]
    (thumbnail,) = embedded_images(html)
    with Image.open(io.BytesIO(thumbnail)) as small, Image.open(original) as big:
        assert big.size == (800, 200) and small.size == (360, 90)  # shrunk to the 360-pixel width, aspect kept
    assert_self_contained(html)


def _tiny_runner(config, folder, progress):
    plot_series(folder / "curve.png", {"loss": ([1, 10, 100], [1.0, 0.1, 0.01])}, title="loss", logy=True)
    notes = "Passes when **value** > threshold; the numbers are in [result.json](result.json)."
    return Outcome(numbers={"value": 1.0}, figures=["curve.png"], notes=notes)


def _raising_runner(config, folder, progress):
    raise RuntimeError("boom <b>from a fake</b>")


TINY = {
    "tiny-passes": Experiment("tiny-passes", "1 > 0.5", TinyConfig(), TinyConfig(), _tiny_runner, "value"),
    "tiny-fails": Experiment(
        "tiny-fails", "1 > 2", TinyConfig(_above(2.0)), TinyConfig(_above(2.0)), _tiny_runner, "value"
    ),
    "tiny-raises": Experiment("tiny-raises", "raises", TinyConfig(), TinyConfig(), _raising_runner, "value"),
}


def tiny_sweep(folder: Path) -> list[dict]:
    """``reproduce_all`` over three instant throwaway experiments into ``folder`` (the registry is restored)."""
    saved = dict(EXPERIMENTS)
    EXPERIMENTS.clear()
    EXPERIMENTS.update(TINY)
    try:
        return reproduce_all(folder, quick=True, progress=False)
    finally:
        EXPERIMENTS.clear()
        EXPERIMENTS.update(saved)


def test_reproduce_all_writes_a_page_per_reproduction_and_an_index(tmp_path):
    results = tiny_sweep(tmp_path)
    assert [r["name"] for r in results] == list(TINY)
    index = (tmp_path / "index.html").read_text()
    assert_self_contained(index)
    links = Page(index).attributes("a", "href")
    assert set(links) == {f"{name}/report.html" for name in TINY} | {"tiny-raises/traceback.txt"}
    assert all((tmp_path / link).is_file() for link in links)  # relative links resolve next to the index
    assert "1 of 3 claims reproduced; 1 experiment(s) raised an error." in index
    assert "boom &lt;b&gt;from a fake&lt;/b&gt;" in index
    for text in (index, (tmp_path / "index.md").read_text()):  # a failed claim names the criteria it failed
        assert "value = 1; fails: value_above" in text and text.count("fails:") == 1
    for name in TINY:
        page = (tmp_path / name / "report.html").read_text()
        assert_self_contained(page)
        figures = [] if name == "tiny-raises" else [(tmp_path / name / "curve.png").read_bytes()]
        assert embedded_images(page) == figures
        assert ('<a href="result.json">result.json</a>' in page) == (name != "tiny-raises")  # the notes' link
    for name, condition, verdict in (("tiny-passes", "> 0.5", "yes"), ("tiny-fails", "> 2", "no")):
        cells = Page((tmp_path / name / "report.html").read_text()).cells
        assert cells[:5] == ["value_above", "value = 1", condition, verdict, "the fake claim: 1 > threshold"]
