"""make screenshots: both reports rendered by a real headless Chromium (skipped where there is none)."""

import pytest

from conftest import ROOT
from gradclip import screenshots

pytestmark = pytest.mark.skipif(screenshots.browser() is None, reason="no Chromium here (apt-get install chromium)")


def test_the_reference_report_renders_whole(tmp_path):
    page = ROOT / "results" / "report.html"
    assert screenshots.main([str(page), "--out", str(tmp_path)]) == 0
    first = (tmp_path / "reference.png").read_bytes()
    parts = [(tmp_path / "reference-full.png").read_bytes()] + [
        (tmp_path / f"reference-full-{i}.png").read_bytes() for i in range(2, 9)
        if (tmp_path / f"reference-full-{i}.png").exists()]
    assert first.startswith(b"\x89PNG") and all(part.startswith(b"\x89PNG") for part in parts)
    heights = [int.from_bytes(part[20:24], "big") for part in parts]  # each PNG's IHDR height
    assert all(h == screenshots.PART for h in heights[:-1]) and 0 < heights[-1] <= screenshots.PART
    assert sum(heights) == screenshots.full_height(page) + 40  # the whole page, none of it left out
    assert not list(page.parent.glob(".*.screenshot.html"))  # the page's copies are gone


def test_a_shorter_page_leaves_no_stale_parts(tmp_path):
    page = tmp_path / "short.html"
    page.write_text("<html><head></head><body><p>one line</p></body></html>")
    (tmp_path / "short-full-2.png").write_bytes(b"left from a longer page")
    assert [p.name for p in screenshots.shoot_whole(page, tmp_path, "short")] == ["short-full.png"]
    assert not (tmp_path / "short-full-2.png").exists()


def test_names_and_a_missing_page(tmp_path, capsys):
    assert screenshots.name_of(ROOT / "results" / "calibration" / "report" / "report.html") == "calibration"
    with pytest.raises(SystemExit):
        screenshots.main([str(tmp_path / "nothing.html")])
    assert "no such file" in capsys.readouterr().err
