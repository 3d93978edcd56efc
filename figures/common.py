"""Shared figure plumbing: where figures go, and saving PNG/PDF (matplotlib) and HTML (plotly).

Every figure script under ``figures/`` exposes ``draw(...)`` (returns figures) and
``render(run_dir) -> list[Path]`` (reads stored results of a run, writes files, never recomputes
activations). ``python -m cotscope.figures RUN_DIR`` calls every ``render``. Scripts that draw one stored
file with matplotlib + plotly share their tail: :func:`save_figure`, :func:`render_stored`,
:func:`figure_main`.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable

import matplotlib

from cotscope.errors import CotscopeError

if "ipykernel" not in sys.modules:  # scripts and CI: no display. Inside Jupyter keep the inline backend.
    matplotlib.use("Agg")


class MissingInputs(CotscopeError, FileNotFoundError):
    """The run directory lacks the stored results this figure draws from."""


def figures_dir(run_dir: str | Path) -> Path:
    d = Path(run_dir) / "figures"
    d.mkdir(parents=True, exist_ok=True)
    return d


def need(path: str | Path, what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise MissingInputs(f"{p} not found: {what}")
    return p


def load_json(path: str | Path, what: str = "stored results") -> Any:
    return json.loads(need(path, what).read_text())


def save_matplotlib(fig: Any, out_dir: str | Path, name: str, pdf: bool = True) -> list[Path]:
    """Save ``name.png`` (150 dpi) and ``name.pdf``; closes the figure."""
    import matplotlib.pyplot as plt
    from cotscope.analyses.atomic import atomic_path

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "pdf") if pdf else ("png",):
        p = out_dir / f"{name}.{ext}"
        with atomic_path(p) as tmp:
            fig.savefig(tmp, dpi=150, bbox_inches="tight", format=ext)
        paths.append(p)
    plt.close(fig)
    return paths


def save_plotly(fig: Any, out_dir: str | Path, name: str) -> Path:
    """Save interactive ``name.html``; plotly.js is written once beside it (works offline)."""
    from cotscope.analyses.atomic import atomic_path

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    p = out_dir / f"{name}.html"
    with atomic_path(p) as tmp:
        fig.write_html(str(tmp), include_plotlyjs="directory", full_html=True)
    return p


def save_figure(data: Any, out_dir: str | Path, name: str, draw: Callable[[Any], Any],
                draw_plotly: Callable[[Any], Any]) -> list[Path]:
    """Write ``<name>.png``/``.pdf`` from ``draw(data)`` (matplotlib) and ``<name>.html`` from ``draw_plotly(data)``."""
    return save_matplotlib(draw(data), out_dir, name) + [save_plotly(draw_plotly(data), out_dir, name)]


def render_stored(run_dir: str | Path, source: tuple[str, str], save: Callable[[Any, Path], list[Path]],
                  what: str, load: Callable[[Path], Any] = load_json) -> list[Path]:
    """Load ``RUN/<dir>/<file>`` (``source``; JSON unless ``load`` is given) and ``save`` it into ``RUN/figures``.

    ``what`` tells how to produce the input; it is the hint of the :class:`MissingInputs` raised when it is absent.
    """
    data = load(need(Path(run_dir) / source[0] / source[1], what))
    return save(data, figures_dir(run_dir))


def figure_main(render: Callable[[str], list[Path]], argv: list[str] | None = None) -> None:
    """``python -m cotscope.figures.fig_x [RUN_DIR]``: render one figure (default ``runs/demo``) and print the paths."""
    argv = sys.argv[1:] if argv is None else argv
    print("\n".join(map(str, render(argv[0] if argv else "runs/demo"))))
