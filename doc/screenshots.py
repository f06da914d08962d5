"""Screenshot every page of the built docs with headless Chromium, to
look at them as a reader would.

    make docs && .venv/bin/python doc/screenshots.py [OUT_DIR]

Needs Debian's ``chromium`` (``apt-get install chromium``); writes one PNG
per page (1280 px wide) to OUT_DIR (default ``doc/build/screenshots``).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HTML = Path(__file__).parent / "build" / "html"


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else HTML.parent / "screenshots"
    chromium = shutil.which("chromium")
    if chromium is None:
        print("chromium is not installed: apt-get install chromium")
        return 2
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        for page in sorted(HTML.glob("*.html")):
            if page.name in ("genindex.html", "search.html"):
                continue
            png = out / f"{page.stem}.png"
            subprocess.run(
                [
                    chromium,
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    # the closed network refuses these connections
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    f"--user-data-dir={profile}",
                    "--hide-scrollbars",
                    "--window-size=1280,2400",
                    f"--screenshot={png}",
                    page.resolve().as_uri(),
                ],
                capture_output=True,
                timeout=120,
                check=True,
            )
            print(png)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
