"""Regenerate every figure of a run from stored results: ``python -m cotscope.figures RUN_DIR``.

Each figure script declares the stored files it draws from (``INPUTS``: globs relative to the run directory).
A figure is drawn when its inputs exist, wherever the CLI, the API, recipes or the demo put them; the others
are skipped with the reason (logged, and listed in the result). Activations are never recomputed.

>>> import tempfile
>>> res = render_all(tempfile.mkdtemp())
>>> len(res), res.skipped[0].figure, res.skipped[0].reason.startswith("no stored file matches")
(0, 'attention_layer_step', True)
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import pkgutil
import sys
from pathlib import Path
from types import ModuleType

from cotscope import figures
from cotscope.figures.common import _SKIPPED, MissingInputs
from cotscope.figures.inputs import glob_run

log = logging.getLogger("cotscope.figures")


@dataclasses.dataclass(frozen=True)
class Skipped:
    """A figure (or one instance of it) that was not drawn, and why."""

    figure: str
    reason: str


class RenderedFigures(list):
    """The written files (``str`` paths, a list as before) plus ``.skipped``: the figures not drawn and why."""

    def __init__(self, written: list[str] = (), skipped: list[Skipped] = ()) -> None:
        super().__init__(written)
        self.skipped: list[Skipped] = list(skipped)


def figure_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(figures.__path__) if m.name.startswith("fig_"))


def load_figure_modules() -> list[ModuleType]:
    """Every figure script that can render a run (has ``render``)."""
    mods = [importlib.import_module(f"cotscope.figures.{name}") for name in figure_modules()]
    return [m for m in mods if callable(getattr(m, "render", None))]


def render_all(run_dir: str | Path, verbose: bool = True, strict: bool = False) -> RenderedFigures:
    """Draw every figure whose stored inputs exist in ``run_dir`` into ``run_dir/figures``.

    Returns the written paths (a list of ``str``) with ``.skipped``. A figure with no input is skipped; one whose
    inputs exist but cannot be drawn is skipped with the error logged (``strict=True`` raises it instead).
    ``verbose`` logs each file at INFO (else DEBUG).
    """
    run_dir = Path(run_dir)
    level = logging.INFO if verbose else logging.DEBUG
    result = RenderedFigures()
    for mod in load_figure_modules():
        name = mod.NAME
        patterns = getattr(mod, "INPUTS", None)
        if patterns is not None and not glob_run(run_dir, patterns):
            result.skipped.append(Skipped(name, f"no stored file matches {', '.join(patterns)}"))
            log.log(level, "skip %s: no stored file matches %s", name, ", ".join(patterns))
            continue
        notes: list[tuple[str, str]] = []
        token = _SKIPPED.set(notes)
        paths, reason = None, ""
        try:
            paths = mod.render(run_dir)
        except MissingInputs as e:
            reason = str(e)
            log.log(level, "skip %s: %s", name, e)
        except Exception as e:  # one broken figure must not cost the others (or the report)
            if strict:
                raise
            reason = f"failed: {type(e).__name__}: {e}"
            log.exception("figure %s failed", name)
        finally:
            _SKIPPED.reset(token)
        result.skipped += [Skipped(n, r) for n, r in notes]  # instances not drawn (others may be)
        if paths is None:
            result.skipped.append(Skipped(name, reason))
            continue
        for p in paths:
            result.append(str(p))
            log.log(level, "%s: %s", name, p)
    log.info(
        "figures: %d files written into %s, %d figures skipped", len(result), run_dir / "figures", len(result.skipped)
    )
    return result


def main(argv: list[str] | None = None) -> int:
    """``python -m cotscope.figures [RUN_DIR] [--strict]``: draw, print the files, then the skipped figures."""
    argv = sys.argv[1:] if argv is None else list(argv)
    strict = "--strict" in argv
    argv = [a for a in argv if a != "--strict"]
    run_dir = Path(argv[0] if argv else "runs/demo")
    if not run_dir.is_dir():
        print(f"no run at {run_dir}; run `make demo` (or cotscope collect/analyse into it) first", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")  # skips are printed below
    res = render_all(run_dir, verbose=False, strict=strict)
    for p in res:
        print(p)
    for s in res.skipped:
        print(f"skipped {s.figure}: {s.reason}", file=sys.stderr)
    print(f"{len(res)} files in {run_dir / 'figures'}; {len(res.skipped)} figures skipped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
