"""Screenshots of HTML reports in a real headless browser (Chromium, Debian package ``chromium``), to look at them.

    python -m gradclip.screenshots results/report.html results/main/report/report.html --out docs/screenshots

Each page gives two PNGs: its first screen (``<name>.png``, what a reader sees on opening it) and the whole page
(``<name>-full.png``, its height measured by the browser).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--hide-scrollbars",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WIDTH, FIRST_SCREEN = 1400, 1500


def browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def _chromium(page: Path, *args: str) -> str:
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run([browser(), *FLAGS, f"--user-data-dir={profile}", *args, page.resolve().as_uri()],
                              capture_output=True, text=True, timeout=180)
    if done.returncode != 0:
        raise RuntimeError(f"chromium failed on {page}: {done.stderr.strip().splitlines()[-1:]}")
    return done.stdout


def shoot(page: Path, out: Path, height: int) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    _chromium(page, f"--window-size={WIDTH},{height}", f"--screenshot={out.resolve()}")
    return out


def full_height(page: Path) -> int:
    """The rendered page's height in CSS pixels: a copy of the page writes its scroll height into the DOM after
    loading, and the browser dumps that DOM."""
    script = ('<script>window.addEventListener("load",()=>document.body.setAttribute("data-height",'
              'document.documentElement.scrollHeight))</script>')
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / page.name
        copy.write_text(page.read_text().replace("</body>", script + "</body>"))
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
        full = shoot(page, args.out / f"{name}-full.png", min(full_height(page) + 40, 16000))
        print(f"{page}: {first} (first screen), {full} (whole page)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
