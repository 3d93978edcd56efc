"""Per-layer ‖Δ‖ (total and per module type) and 1 − cos(θ_reason, θ_VL) of the paired backbones.

Input: ``prior_analysis.json`` from :func:`analyses.prior.run_prior_analysis`.

    python -m cotscope.figures.fig_prior_norms runs/demo        # or: python -m cotscope.figures runs/demo
"""

from __future__ import annotations

import collections
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from cotscope.figures.common import figure_main, render_each, save_figure

NAME = "prior_norms"
SOURCE = ("prior", "prior_analysis.json")  # the stage's RUN/<dir>/<file>; INPUTS finds others
TITLE = "Reasoning prior per layer"
SECTION = "prior"
INPUTS = ("prior_analysis.json", "*/prior_analysis.json")


def _per_module(data: Mapping[str, Any]) -> dict[str, tuple[list[int], list[float]]]:
    by = collections.defaultdict(dict)
    for t in data["tensors"]:
        if t["layer"] is not None:
            by[t["module"]][t["layer"]] = t["delta_norm"]
    return {m: (sorted(v), [v[l] for l in sorted(v)]) for m, v in sorted(by.items())}


def draw(data: Mapping[str, Any]) -> Figure:
    """Two panels: ‖Δ‖ per layer (total + per module), and 1 − cosine per layer (log scale)."""
    layers = data["layers"]
    if not layers:
        raise ValueError("prior_analysis.json has no per-layer rows (only non-layer tensors were selected)")
    x = [r["layer"] for r in layers]
    fig = Figure(figsize=(10, 4.2), constrained_layout=True)
    a, b = fig.subplots(1, 2)
    a.plot(x, [r["delta_norm"] for r in layers], "k-o", ms=3, lw=2, label="layer total")
    for m, (lx, ly) in _per_module(data).items():
        a.plot(lx, ly, lw=1, alpha=0.8, label=m)
    a.set(xlabel="layer (decoder block)", ylabel="‖Δ‖₂ (Frobenius)", title="Reasoning prior Δ = θ_reason − θ_VL")
    a.set_ylim(0, 1.35 * max(r["delta_norm"] for r in layers) or 1.0)
    a.legend(fontsize=7, ncol=3, loc="upper center")
    one_minus = [max(1.0 - r["cos"], 1e-16) if r["cos"] is not None else float("nan") for r in layers]
    b.semilogy(x, one_minus, "C3-o", ms=3)
    b.set(xlabel="layer (decoder block)", ylabel="1 − cos(θ_reason, θ_VL)", title="Backbone similarity per layer")
    b.grid(alpha=0.3, which="both")
    return fig


def draw_plotly(data: Mapping[str, Any]):
    """Interactive version of :func:`draw`."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    layers = data["layers"]
    x = [r["layer"] for r in layers]
    fig = make_subplots(1, 2, subplot_titles=("‖Δ‖ per layer", "1 − cos(θ_reason, θ_VL)"))
    fig.add_trace(
        go.Scatter(x=x, y=[r["delta_norm"] for r in layers], name="layer total", line=dict(color="black", width=3)),
        1,
        1,
    )
    for m, (lx, ly) in _per_module(data).items():
        fig.add_trace(go.Scatter(x=lx, y=ly, name=m, mode="lines"), 1, 1)
    fig.add_trace(go.Scatter(x=x, y=[1 - r["cos"] for r in layers], name="1 − cos", mode="lines+markers"), 1, 2)
    fig.update_yaxes(type="log", row=1, col=2)
    fig.update_xaxes(title_text="layer")
    return fig


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
