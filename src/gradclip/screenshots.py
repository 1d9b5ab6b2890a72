"""Screenshots of HTML reports in a real headless browser (Chromium, Debian package ``chromium``), to look at them.

    python -m gradclip.screenshots results/report.html results/main/report/report.html --out docs/screenshots

Each page gives its first screen (``<name>.png``, what a reader sees on opening it) and the whole page, its height
measured by the browser, in consecutive parts of at most ``PART`` pixels (``<name>-full.png``, ``<name>-full-2.png``,
...: Chromium draws no taller image).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--hide-scrollbars",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WIDTH, FIRST_SCREEN, PART = 1400, 1500, 15000


def browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def _chromium(page: Path, *args: str) -> str:
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run([browser(), *FLAGS, f"--user-data-dir={profile}", *args, page.resolve().as_uri()],
                              capture_output=True, text=True, timeout=180)
    if done.returncode != 0:
        raise RuntimeError(f"chromium failed on {page}: {done.stderr.strip().splitlines()[-1:]}")
    return done.stdout


def shoot(page: Path, out: Path, height: int, skip: int = 0) -> Path:
    """The page's ``height`` pixels from ``skip`` down, as a PNG (a copy beside the page, so its figures load, drawn
    shifted up)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with beside(page, f"<style>body{{transform:translateY(-{skip}px)}}</style>" if skip else "") as copy:
        _chromium(copy, f"--window-size={WIDTH},{height}", f"--screenshot={out.resolve()}")
    return out


def shoot_whole(page: Path, out_dir: Path, name: str) -> list[Path]:
    """The whole page in parts of at most PART pixels; parts left from a longer page of an earlier call removed."""
    height = full_height(page) + 40
    parts = [out_dir / (f"{name}-full.png" if i == 0 else f"{name}-full-{i + 1}.png")
             for i in range(-(-height // PART))]
    for stale in set(out_dir.glob(f"{name}-full-*.png")) - set(parts):
        stale.unlink()
    return [shoot(page, part, min(PART, height - i * PART), i * PART) for i, part in enumerate(parts)]


@contextmanager
def beside(page: Path, head: str):
    """A copy of ``page`` in its own folder with ``head`` added (removed afterwards)."""
    copy = page.with_name(f".{page.stem}.screenshot.html")
    copy.write_text(page.read_text().replace("</head>", head + "</head>", 1) if head else page.read_text())
    try:
        yield copy
    finally:
        copy.unlink(missing_ok=True)


def full_height(page: Path) -> int:
    """The rendered page's height in CSS pixels: a copy of the page writes its scroll height into the DOM after
    loading, and the browser dumps that DOM."""
    script = ('<script>window.addEventListener("load",()=>document.body.setAttribute("data-height",'
              'document.documentElement.scrollHeight))</script>')
    with beside(page, script) as copy:
        dom = _chromium(copy, f"--window-size={WIDTH},{FIRST_SCREEN}", "--virtual-time-budget=5000", "--dump-dom")
    found = re.search(r'data-height="(\d+)"', dom)
    return int(found.group(1)) if found else FIRST_SCREEN


def name_of(page: Path) -> str:
    """results/report.html -> reference; <sweep>/report/report.html -> <sweep>; else the file's stem."""
    if page.parent.name == "results":
        return "reference"
    return page.parent.parent.name if page.parent.name == "report" else page.stem


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pages", nargs="+", type=Path, help="HTML files")
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"), help="folder for the PNGs")
    args = parser.parse_args(argv)
    missing = [str(p) for p in args.pages if not p.is_file()]
    if missing:
        parser.error(f"no such file: {', '.join(missing)}")
    if browser() is None:
        sys.exit("error: no Chromium found (Debian/Ubuntu: sudo apt-get install chromium); screenshots not taken")
    for page in args.pages:
        name = name_of(page)
        first = shoot(page, args.out / f"{name}.png", FIRST_SCREEN)
        whole = shoot_whole(page, args.out, name)
        print(f"{page}: {first} (first screen), {', '.join(map(str, whole))} (whole page)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
