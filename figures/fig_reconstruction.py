"""Vision-latent reconstruction score per layer, against the shuffled-pairing baseline.

Panels: raw cosine (with the predict-the-mean baseline: connector outputs share a large mean, so
raw cosine is high even for a useless probe), centred cosine, and R² on held-out images.

Input: ``reconstruction.json`` from :func:`probes.vision_latents.run_reconstruction_analysis`
(or ``ReconstructionResult.to_dict()``).

    python -m cotscope.figures.fig_reconstruction runs/demo        # or: python -m cotscope.figures runs/demo
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from cotscope.figures.common import figure_main, render_each, save_figure

NAME = "reconstruction"
SOURCE = ("reconstruction", "reconstruction.json")  # the stage's RUN/<dir>/<file>; INPUTS finds others
TITLE = "Vision-latent reconstruction per layer"
SECTION = "reconstruction"
INPUTS = ("reconstruction.json", "*/reconstruction.json")

PANELS = (("cos", "cosine (pooled tokens)"), ("cos_centered", "centred cosine"), ("r2", "R² (variance-weighted)"))


def _rows(data: Mapping[str, Any]) -> list[dict]:
    rows = sorted(data["rows"], key=lambda r: r["layer"])
    if not rows:
        raise ValueError("reconstruction result has no rows")
    return rows


def draw(data: Mapping[str, Any]) -> Figure:
    rows = _rows(data)
    x = [r["layer"] for r in rows]
    fig = Figure(figsize=(13, 3.8), constrained_layout=True)
    axes = fig.subplots(1, 3)
    for ax, (key, label) in zip(axes, PANELS):
        ax.plot(x, [r[key] for r in rows], "C0-o", ms=3, label="ridge probe")
        if f"{key}_shuffled" in rows[0]:
            ax.plot(x, [r[f"{key}_shuffled"] for r in rows], "C3--", label="shuffled image/hidden pairing")
        if f"{key}_mean_baseline" in rows[0]:
            ax.plot(x, [r[f"{key}_mean_baseline"] for r in rows], "k:", label="predict training mean")
        ax.set(xlabel="layer (decoder block)", ylabel=label, title=label)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(
        f"Reconstructing {data['n_tokens']} pooled connector tokens from the residual stream "
        f"(train {data['n_train']}, held-out {data['n_test']} images)",
        fontsize=11,
    )
    return fig


def draw_plotly(data: Mapping[str, Any]):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    rows = _rows(data)
    x = [r["layer"] for r in rows]
    fig = make_subplots(1, 3, subplot_titles=[p[1] for p in PANELS])
    for i, (key, label) in enumerate(PANELS, start=1):
        fig.add_trace(go.Scatter(x=x, y=[r[key] for r in rows], name=f"probe {key}"), 1, i)
        if f"{key}_shuffled" in rows[0]:
            fig.add_trace(
                go.Scatter(x=x, y=[r[f"{key}_shuffled"] for r in rows], name=f"shuffled {key}", line=dict(dash="dash")),
                1,
                i,
            )
    fig.update_xaxes(title_text="layer")
    return fig


def save(data: Mapping[str, Any], out_dir: str | Path, name: str = NAME) -> list[Path]:
    """Write ``<name>.png``/``.pdf`` (matplotlib) and ``<name>.html`` (plotly) into ``out_dir``."""
    return save_figure(data, out_dir, name, draw, draw_plotly)


def render(run_dir: str | Path) -> list[Path]:
    """Regenerate from every ``RUN/<dir>/reconstruction.json`` (``reconstruction/`` for the stage) into ``RUN/figures``
    (``python -m cotscope.figures RUN``)."""
    return render_each(
        run_dir,
        sys.modules[__name__],
        "reconstruction",
        save,
        "run probes.vision_latents.run_reconstruction_demo(vlm_dir, RUN/reconstruction) first",
        check=lambda d: None if d.get("rows") else "it has no per-layer rows",
    )


def main(argv: list[str] | None = None) -> None:
    figure_main(render, argv)


if __name__ == "__main__":
    main()
