"""make screenshots: both reports rendered by a real headless Chromium (skipped where there is none)."""

import pytest

from conftest import ROOT
from gradclip import screenshots

pytestmark = pytest.mark.skipif(screenshots.browser() is None, reason="no Chromium here (apt-get install chromium)")


def test_the_reference_report_renders_whole(tmp_path):
    page = ROOT / "results" / "report.html"
    assert screenshots.main([str(page), "--out", str(tmp_path)]) == 0
    first, full = (tmp_path / "reference.png").read_bytes(), (tmp_path / "reference-full.png").read_bytes()
    assert first.startswith(b"\x89PNG") and full.startswith(b"\x89PNG")
    height = int.from_bytes(full[20:24], "big")  # the PNG's IHDR height: the whole page, far taller than one screen
    assert height > 3 * screenshots.FIRST_SCREEN


def test_names_and_a_missing_page(tmp_path, capsys):
    assert screenshots.name_of(ROOT / "results" / "calibration" / "report" / "report.html") == "calibration"
    with pytest.raises(SystemExit):
        screenshots.main([str(tmp_path / "nothing.html")])
    assert "no such file" in capsys.readouterr().err
