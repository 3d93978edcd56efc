"""Screenshot a run's report.html in headless Chromium (for docs/gallery/report.png).

    python scripts/screenshot_report.py runs/demo docs/gallery/report.png [--height 1600]

Opens ``RUN/report.html``, waits for every figure image, and writes a PNG of the top of the page (``--height``
pixels of a 1400-px-wide window). Exits non-zero when the page logs console errors or an image does not decode.
Uses the same DevTools driver as tests/test_report_html.py (Debian's ``chromium`` + ``websocket-client``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from chromium_cdp import Chromium  # noqa: E402  (a test helper, shared)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--width", type=int, default=1400)
    ap.add_argument("--height", type=int, default=1600)
    args = ap.parse_args(argv)
    html = args.run_dir / "report.html"
    if not html.is_file():
        print(f"{html} not found: run `make demo` or `cotscope report {args.run_dir}` first", file=sys.stderr)
        return 2
    with Chromium(width=args.width, height=args.height) as page:
        page.open(html.resolve().as_uri())
        bad = page.evaluate(
            "Array.from(document.querySelectorAll('img.fig-img'))"
            ".filter(i => !(i.complete && i.naturalWidth > 0)).length"
        )
        args.out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(args.out)
        errors = list(page.errors)
    print(args.out)
    if bad or errors:
        print(f"{bad} images did not decode; console errors: {errors}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
