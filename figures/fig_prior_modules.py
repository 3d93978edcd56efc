"""Module-wise mean ‖Δ‖ over layers (DRIFT fig. 2), with the spread across layers.

Input: ``prior_analysis.json`` from :func:`analyses.prior.run_prior_analysis`.

    python -m cotscope.figures.fig_prior_modules runs/demo        # or: python -m cotscope.figures runs/demo
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from cotscope.figures.common import figure_main, render_each, save_figure

NAME = "prior_modules"
SOURCE = ("prior", "prior_analysis.json")  # the stage's RUN/<dir>/<file>; INPUTS finds others
TITLE = "Reasoning prior by module type"
SECTION = "prior"
INPUTS = ("prior_analysis.json", "*/prior_analysis.json")


def _rows(data: Mapping[str, Any]) -> list[dict]:
    rows = list(data["modules"])
    if not rows:
        raise ValueError("prior_analysis.json has no module rows")
    return rows


def draw(data: Mapping[str, Any]) -> Figure:
    """Bars: mean ‖Δ‖ per module type; error bars: std across layers; n = number of tensors."""
    rows = _rows(data)
    fig = Figure(figsize=(max(5, 0.9 * len(rows) + 2), 4), constrained_layout=True)
    ax = fig.subplots()
    names = [r["module"] for r in rows]
    ax.bar(names, [r["mean_delta_norm"] for r in rows], yerr=[r["std_delta_norm"] for r in rows], capsize=3, color="C0")
    for i, r in enumerate(rows):
        ax.annotate(
            f"n={r['n']}",
            (i, r["mean_delta_norm"]),
            ha="center",
            va="bottom",
            fontsize=7,
            xytext=(0, 2),
            textcoords="offset points",
        )
    ax.set(ylabel="mean ‖Δ‖₂ over layers", title="Reasoning prior by module type")
    ax.tick_params(axis="x", rotation=30)
    return fig


def draw_plotly(data: Mapping[str, Any]):
    import plotly.graph_objects as go

    rows = _rows(data)
    return go.Figure(
        go.Bar(
            x=[r["module"] for r in rows],
            y=[r["mean_delta_norm"] for r in rows],
            error_y=dict(array=[r["std_delta_norm"] for r in rows]),
            text=[f"n={r['n']}" for r in rows],
        ),
        layout=dict(title="Reasoning prior by module type", yaxis_title="mean ‖Δ‖₂ over layers"),
    )


def save(data: Mapping[str, Any], out_dir: str | Path, name: str = NAME) -> list[Path]:
    """Write ``<name>.png``/``.pdf`` (matplotlib) and ``<name>.html`` (plotly) into ``out_dir``."""
    return save_figure(data, out_dir, name, draw, draw_plotly)


def render(run_dir: str | Path) -> list[Path]:
    """Regenerate from every ``RUN/<dir>/prior_analysis.json`` (``prior/`` for the stage) into ``RUN/figures``
    (``python -m cotscope.figures RUN``)."""
    return render_each(
        run_dir,
        sys.modules[__name__],
        "prior",
        save,
        "run analyses.prior.run_prior_analysis(reason_dir, vl_dir, RUN/prior) first",
    )


def main(argv: list[str] | None = None) -> None:
    figure_main(render, argv)


if __name__ == "__main__":
    main()
