"""Shared figure plumbing: where figures go, what each figure reads, and saving PNG/PDF (matplotlib) and
HTML + JSON (plotly).

Every figure script under ``figures/`` declares

* ``NAME``: the stem of its files in ``RUN/figures`` (``<NAME>.png``, ``.pdf``, ``.html``, ``.plotly.json``);
  a figure drawn once per stored result adds ``_<instance>`` (e.g. ``probe_accuracy_llm_answer``);
* ``INPUTS``: glob patterns, relative to the run directory, of the stored files it draws from;
* ``SECTION``: the report section it belongs to; its docstring's first paragraph describes it;

and exposes ``draw(...)`` (returns figures) and ``render(run_dir) -> list[Path]`` (reads stored results,
writes files, never recomputes activations). ``python -m cotscope.figures RUN_DIR`` calls every ``render``
whose ``INPUTS`` match (:func:`cotscope.figures.__main__.render_all`). Each drawn figure also gets
``<name>.meta.json`` (title, description, the files it was drawn from) for the report.

>>> from cotscope.figures.common import instance_name
>>> instance_name("probe_accuracy", "llm", default="llm"), instance_name("probe_accuracy", "mine", default="llm")
('probe_accuracy', 'probe_accuracy_mine')
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

from cotscope.errors import CotscopeError

if "ipykernel" not in sys.modules:  # scripts and CI: no display. Inside Jupyter keep the inline backend.
    matplotlib.use("Agg")

log = logging.getLogger(__name__)

META_SUFFIX = ".meta.json"
PLOTLY_SUFFIX = ".plotly.json"


class MissingInputs(CotscopeError, FileNotFoundError):
    """The run directory lacks the stored results this figure draws from."""


_SKIPPED: contextvars.ContextVar[list[tuple[str, str]] | None] = contextvars.ContextVar(
    "cotscope_figure_skips", default=None
)


def skip_instance(name: str, reason: str) -> None:
    """Record that the figure ``name`` was not drawn for one stored result (others of its kind may be):
    logged, and listed by :func:`cotscope.figures.__main__.render_all`."""
    log.warning("figure %s skipped: %s", name, reason)
    rec = _SKIPPED.get()
    if rec is not None:
        rec.append((name, reason))


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


def instance_name(name: str, key: str, default: str) -> str:
    """``name`` for the demo's instance (``key == default``), else ``name_<key>``: demo file names stay stable."""
    return name if key == default else f"{name}_{key}"


def describe(module: Any) -> str:
    """A figure module's description: the first paragraph of its docstring, on one line."""
    doc = (getattr(module, "__doc__", None) or "").strip()
    return " ".join(doc.split("\n\n", 1)[0].split()).replace("``", "`")


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
    """Save interactive ``name.html`` (plotly.js is written once beside it, works offline) and the figure itself
    as ``name.plotly.json`` (what the HTML report embeds); returns the HTML path."""
    from cotscope.analyses.atomic import atomic_path, write_text_atomic

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    p = out_dir / f"{name}.html"
    with atomic_path(p) as tmp:
        fig.write_html(str(tmp), include_plotlyjs="directory", full_html=True)
    write_text_atomic(out_dir / f"{name}{PLOTLY_SUFFIX}", fig.to_json())
    return p


def write_meta(
    out_dir: str | Path,
    name: str,
    *,
    figure: str,
    title: str = "",
    description: str = "",
    sources: Sequence[str | Path] = (),
    section: str = "",
    instance: str = "",
) -> Path:
    """``<name>.meta.json``: which figure script drew it, from which stored files (paths relative to the run)."""
    from cotscope.analyses.atomic import write_json_atomic

    out_dir = Path(out_dir)
    run_dir = out_dir.parent.resolve()
    rel = []
    for s in sources:
        p = Path(s).resolve()
        rel.append(str(p.relative_to(run_dir)) if p.is_relative_to(run_dir) else str(p))
    p = out_dir / f"{name}{META_SUFFIX}"
    write_json_atomic(
        p,
        {
            "name": name,
            "figure": figure,
            "title": title or name.replace("_", " "),
            "description": description,
            "section": section,
            "instance": instance,
            "sources": sorted(set(rel)),
        },
    )
    return p


def save_pair(
    fig: Any,
    pfig: Any,
    out_dir: str | Path,
    name: str,
    *,
    module: Any,
    sources: Sequence[str | Path],
    title: str = "",
    instance: str = "",
    pdf: bool = True,
) -> list[Path]:
    """Save a matplotlib figure and its plotly twin under ``name`` plus ``<name>.meta.json`` (drawn by
    ``module``, from ``sources``); returns the PNG/PDF/HTML paths."""
    paths = save_matplotlib(fig, out_dir, name, pdf=pdf) + [save_plotly(pfig, out_dir, name)]
    write_meta(
        out_dir,
        name,
        figure=module.NAME,
        title=title or getattr(module, "TITLE", ""),
        description=describe(module),
        sources=sources,
        section=getattr(module, "SECTION", ""),
        instance=instance,
    )
    return paths


def save_figure(
    data: Any, out_dir: str | Path, name: str, draw: Callable[[Any], Any], draw_plotly: Callable[[Any], Any]
) -> list[Path]:
    """Write ``<name>.png``/``.pdf`` from ``draw(data)`` (matplotlib) and ``<name>.html`` from ``draw_plotly(data)``."""
    return save_matplotlib(draw(data), out_dir, name) + [save_plotly(draw_plotly(data), out_dir, name)]


def render_each(
    run_dir: str | Path,
    module: Any,
    default: str,
    save: Callable[[Any, Path, str], list[Path]],
    what: str,
    load: Callable[[Path], Any] = load_json,
    check: Callable[[Any], str | None] = lambda data: None,
) -> list[Path]:
    """Draw one figure per stored file matching ``module.INPUTS`` (the instance in folder ``default`` keeps
    the plain ``module.NAME``; others get ``_<folder>``); ``save(data, out_dir, name)`` writes the files.

    ``what`` tells how to produce the input; it is the hint of the :class:`MissingInputs` raised when none exists.
    ``check(data)`` returns why a stored file cannot be drawn (that file is skipped), or ``None``.
    """
    from cotscope.figures.inputs import folder_key, glob_run

    run_dir = Path(run_dir)
    found = glob_run(run_dir, module.INPUTS)
    if not found:
        raise MissingInputs(f"no {' or '.join(module.INPUTS)} under {run_dir}: {what}")
    out = figures_dir(run_dir)
    paths: list[Path] = []
    for src in found:
        key = folder_key(run_dir, src)
        name = instance_name(module.NAME, key, default)
        data = load(src)
        why = check(data)
        if why:
            skip_instance(name, f"{src}: {why}")
            continue
        paths += save(data, out, name)
        write_meta(
            out,
            name,
            figure=module.NAME,
            title=getattr(module, "TITLE", ""),
            description=describe(module),
            sources=[src],
            section=getattr(module, "SECTION", ""),
            instance="" if key == default else key,
        )
    if not paths:
        raise MissingInputs(f"none of {', '.join(map(str, found))} can be drawn (see the warnings above)")
    return paths


def render_stored(
    run_dir: str | Path,
    source: tuple[str, str],
    save: Callable[[Any, Path], list[Path]],
    what: str,
    load: Callable[[Path], Any] = load_json,
) -> list[Path]:
    """Load ``RUN/<dir>/<file>`` (``source``; JSON unless ``load`` is given) and ``save`` it into ``RUN/figures``.

    ``what`` tells how to produce the input; it is the hint of the :class:`MissingInputs` raised when it is absent.
    """
    data = load(need(Path(run_dir) / source[0] / source[1], what))
    return save(data, figures_dir(run_dir))


def figure_main(render: Callable[[str], list[Path]], argv: list[str] | None = None) -> None:
    """``python -m cotscope.figures.fig_x [RUN_DIR]``: render one figure (default ``runs/demo``) and print the paths."""
    argv = sys.argv[1:] if argv is None else argv
    print("\n".join(map(str, render(argv[0] if argv else "runs/demo"))))
