"""Regenerate every figure of a run from stored results: ``python -m cotscope.figures runs/demo``.

Figures whose inputs are absent are skipped with a note; activations are never recomputed.
"""
from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

from cotscope import figures
from cotscope.figures.common import MissingInputs


def figure_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(figures.__path__) if m.name.startswith("fig_"))


def render_all(run_dir: str | Path, verbose: bool = True) -> list[str]:
    written: list[str] = []
    for name in figure_modules():
        mod = importlib.import_module(f"cotscope.figures.{name}")
        render = getattr(mod, "render", None)
        if render is None:
            continue
        try:
            paths = render(run_dir)
        except MissingInputs as e:
            if verbose:
                print(f"[figures] skip {name}: {e}")
            continue
        for p in paths:
            written.append(str(p))
            if verbose:
                print(f"[figures] {name}: {p}")
    return written


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    run_dir = Path(argv[0] if argv else "runs/demo")
    if not run_dir.exists():
        print(f"no run at {run_dir}; run `make demo` first", file=sys.stderr)
        return 2
    render_all(run_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
