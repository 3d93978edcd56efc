"""Module-wise mean ‖Δ‖ over layers (DRIFT fig. 2), with the spread across layers.

Input: ``prior_analysis.json`` from :func:`analyses.prior.run_prior_analysis`.

    python -m figures.fig_prior_modules out/prior/prior_analysis.json out/prior/prior_modules
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Mapping

from matplotlib.figure import Figure


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
    ax.bar(names, [r["mean_delta_norm"] for r in rows], yerr=[r["std_delta_norm"] for r in rows], capsize=3,
           color="C0")
    for i, r in enumerate(rows):
        ax.annotate(f"n={r['n']}", (i, r["mean_delta_norm"]), ha="center", va="bottom", fontsize=7,
                    xytext=(0, 2), textcoords="offset points")
    ax.set(ylabel="mean ‖Δ‖₂ over layers", title="Reasoning prior by module type")
    ax.tick_params(axis="x", rotation=30)
    return fig


def draw_plotly(data: Mapping[str, Any]):
    import plotly.graph_objects as go

    rows = _rows(data)
    return go.Figure(go.Bar(x=[r["module"] for r in rows], y=[r["mean_delta_norm"] for r in rows],
                            error_y=dict(array=[r["std_delta_norm"] for r in rows]),
                            text=[f"n={r['n']}" for r in rows]),
                     layout=dict(title="Reasoning prior by module type", yaxis_title="mean ‖Δ‖₂ over layers"))


def save(data: Mapping[str, Any], stem: str | Path) -> list[Path]:
    """Write ``<stem>.png`` and ``<stem>.html`` atomically; returns both paths."""
    from analyses.atomic import atomic_path

    stem = Path(stem)
    png, html = stem.with_suffix(".png"), stem.with_suffix(".html")
    with atomic_path(png) as tmp:
        draw(data).savefig(tmp, format="png", dpi=120)
    with atomic_path(html) as tmp:
        draw_plotly(data).write_html(tmp, include_plotlyjs="directory")
    return [png, html]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("analysis_json")
    ap.add_argument("out_stem")
    a = ap.parse_args(argv)
    for p in save(json.loads(Path(a.analysis_json).read_text()), a.out_stem):
        print(p)


if __name__ == "__main__":
    main()
