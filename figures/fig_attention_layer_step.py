"""Layer × reasoning-step heat map of the image share of attention (mean over heads and prompts), CoT vs direct.

Reads every attention-shift analysis of the run (``analysis/attention_shift.json`` from the attention stage).

>>> python -m cotscope.figures.fig_attention_layer_step runs/demo          # doctest: +SKIP
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from cotscope.figures.common import figures_dir, instance_name, save_pair
from cotscope.figures.fig_attention_ratio_focus import ATTENTION_INPUTS, DEFAULT, found, model_name

NAME = "attention_layer_step"
TITLE = "Image share of attention per layer and reasoning step"
SECTION = "attention"
INPUTS = ATTENTION_INPUTS


def _grid(a: dict[str, Any]) -> np.ndarray:
    return np.array([[np.nan if v is None else v for v in row] for row in a["layer_step_share"]], dtype=np.float64)


def draw(analysis: dict[str, Any], title: str = ""):
    """One panel per condition; shared colour scale. Returns (matplotlib, plotly)."""
    import matplotlib.pyplot as plt
    import plotly.graph_objects as go
    from matplotlib.ticker import MaxNLocator
    from plotly.subplots import make_subplots

    agg = analysis["aggregate"]
    layers = analysis.get("layers") or []
    conds = list(agg)
    grids = [_grid(agg[c]) for c in conds]
    finite = np.concatenate([g[np.isfinite(g)] for g in grids if g.size]) if grids else np.zeros(0)
    vmax = float(finite.max()) if finite.size else 1.0
    widths = [max(g.shape[1], 1) for g in grids]
    fig, axes = plt.subplots(
        1,
        len(conds),
        figsize=(3 + 0.35 * sum(widths) + 1.5 * len(conds), 4.2),
        gridspec_kw={"width_ratios": [w + 2 for w in widths]},
        squeeze=False,
    )
    pfig = make_subplots(rows=1, cols=len(conds), subplot_titles=[f"{c} (n={agg[c]['n_traces']})" for c in conds])
    im = None
    for j, (cond, g) in enumerate(zip(conds, grids)):
        ax = axes[0, j]
        if g.size:
            im = ax.imshow(
                g,
                aspect="auto",
                origin="lower",
                cmap="viridis",
                vmin=0.0,
                vmax=vmax,
                extent=(0.5, g.shape[1] + 0.5, -0.5, g.shape[0] - 0.5),
            )
        ax.set_xlabel("reasoning step")
        if g.shape[1] <= 12:
            ax.set_xticks(range(1, g.shape[1] + 1))
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"{cond} (n={agg[cond]['n_traces']})", fontsize=10)
        yt = np.arange(len(layers))
        step = max(1, len(layers) // 8)
        ax.set_yticks(yt[::step])
        ax.set_yticklabels([str(layers[i]) for i in yt[::step]])
        if j == 0:
            ax.set_ylabel("layer")
        pfig.add_trace(
            go.Heatmap(
                z=g,
                x=np.arange(1, g.shape[1] + 1),
                y=[str(l) for l in layers],
                zmin=0,
                zmax=vmax,
                colorscale="Viridis",
                showscale=j == len(conds) - 1,
                colorbar=dict(title="image share"),
                hovertemplate=f"{cond}: layer %{{y}}, step %{{x}}: %{{z:.4f}}<extra></extra>",
            ),
            row=1,
            col=j + 1,
        )
        pfig.update_xaxes(title_text="reasoning step", row=1, col=j + 1)
    if im is not None:
        fig.colorbar(im, ax=axes[0, :].tolist(), label="image share of attention", shrink=0.9)
    fig.suptitle(title or "Image share of attention per layer and reasoning step", fontsize=10)
    pfig.update_yaxes(title_text="layer", row=1, col=1)
    pfig.update_layout(
        title=title or "Image share of attention per layer and reasoning step", height=480, width=450 * len(conds) + 150
    )
    return fig, pfig


def render(run_dir: str | Path) -> list[Path]:
    out = figures_dir(run_dir)
    paths: list[Path] = []
    for key, src, analysis in found(run_dir):
        title = f"Image share of attention per layer and reasoning step, {model_name(analysis)}"
        fig, pfig = draw(analysis, title=title)
        paths += save_pair(
            fig,
            pfig,
            out,
            instance_name(NAME, key, DEFAULT),
            module=sys.modules[__name__],
            sources=[src],
            pdf=False,
            instance="" if key == DEFAULT else key,
        )
    return paths


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    print("\n".join(map(str, render(argv[0] if argv else "runs/demo"))))


if __name__ == "__main__":
    main()
