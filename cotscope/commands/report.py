"""``cotscope report RUN_DIR``: draw every figure whose stored inputs exist, then write ``report.md`` and the
self-contained ``report.html`` into the run directory (works for runs made with CLI commands only).

>>> main(["--help"])                                   # doctest: +SKIP
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cotscope report", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", nargs="?", default="runs/demo", help="the run directory (default: runs/demo)")
    p.add_argument("--no-figures", action="store_true",
                   help="reuse the figures already drawn into RUN/figures instead of redrawing them")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from cotscope.errors import CotscopeError
    from cotscope.report import report_run

    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    try:
        paths = report_run(Path(args.run_dir), figures=not args.no_figures)
    except CotscopeError as e:
        print(f"cotscope report: {e}", file=sys.stderr)
        return 2
    for p in paths:
        print(p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
