"""The reproduction pages in a real browser (headless Chromium): images decode, no console error, no request.

Screenshots go to ``$IB_TEST_ARTIFACTS`` (else the test's tmp_path); the tests print where.
"""

from __future__ import annotations

import re

import browser
import pytest
from browser import artifact_folder, check_page_in_browser
from test_html import TINY, save_png, tiny_sweep

from implicit_bias.report.html import Figure, Section, Table, write_page


@pytest.mark.slow  # starts the browser: 5–13 s on 2 busy cores, of which about 1.5 s is the sweep
def test_reproduction_reports_and_index_open_cleanly_in_chromium(tmp_path):
    tiny_sweep(tmp_path / "sweep")
    shots = artifact_folder(tmp_path)
    check_page_in_browser(tmp_path / "sweep" / "index.html", shots / "reproduce_index.png", min_images=2)
    for name in TINY:
        images = 0 if name == "tiny-raises" else 1
        check_page_in_browser(tmp_path / "sweep" / name / "report.html", shots / f"{name}.png", min_images=images)
    print(f"screenshots: {shots}")


def test_a_page_with_every_part_opens_cleanly(tmp_path):
    figure = save_png(tmp_path / "line.png")
    table = Table(["x", "<script>alert(1)</script>"], [[1 / 3, None], [True, "a & b"]], caption="a table")
    sections = [
        Section("Everything", text="one\n\ntwo", tables=[table], figures=[Figure(figure, "a line")], status="passed"),
        Section("Skipped", status="skipped: no linear classifier", markdown="`W` *not* found; [log](log.txt)"),
    ]
    page = write_page(tmp_path / "page.html", "All parts <b>", sections, subtitle="subtitle")
    check_page_in_browser(page, artifact_folder(tmp_path) / "all_parts.png", min_images=1)


@pytest.mark.parametrize("protected", [True, False])
def test_the_browser_check_catches_an_external_image(tmp_path, protected):
    """A planted ``<img src="http://…">`` fails the check, in a page of ours (whose Content-Security-Policy blocks
    the load after it was asked for) and in a page without that policy."""
    plant = '<img src="http://example.com/x.png">'
    if protected:
        html = (write_page(tmp_path / "good.html", "p", [Section("s")])).read_text().replace("</main>", plant)
    else:
        html = f"<!DOCTYPE html><html><head><title>t</title></head><body>{plant}</body></html>"
    (tmp_path / "bad.html").write_text(html)
    with pytest.raises(AssertionError, match=r"bad.html made network requests: \['http://example.com/x.png'\]"):
        check_page_in_browser(tmp_path / "bad.html", tmp_path / "bad.png")
    assert (tmp_path / "bad.png").stat().st_size > 0  # the failing page was photographed too


def test_a_machine_without_the_browser_skips_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.setattr(browser, "CHROMEDRIVER", tmp_path / "chromedriver")
    expected = "real-browser test needs .*" + re.escape(
        f"{tmp_path / 'chromedriver'} (apt-get install chromium-driver)"
    )
    with pytest.raises(pytest.skip.Exception, match=expected):
        check_page_in_browser(tmp_path / "page.html", tmp_path / "shot.png")
