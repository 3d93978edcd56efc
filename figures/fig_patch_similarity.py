"""Heat maps: cosine of a hidden state against each image patch (connector output) embedding.

Input: ``reconstruction.json`` with a ``patch_similarity`` entry (``{"layers": [...], "cos":
[L, h, w]}``), as written by :func:`probes.vision_latents.run_reconstruction_analysis`; the arrays
come from :func:`analyses.reconstruction.patch_similarity`.

    python -m cotscope.figures.fig_patch_similarity runs/demo        # or: python -m cotscope.figures runs/demo
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from cotscope.figures.common import figure_main, render_each, save_figure

NAME = "patch_similarity"
SOURCE = ("reconstruction", "reconstruction.json")  # the stage's RUN/<dir>/<file>; INPUTS finds others
TITLE = "Hidden state vs image patches"
SECTION = "reconstruction"
INPUTS = ("reconstruction.json", "*/reconstruction.json")


def _maps(data: Mapping[str, Any]) -> tuple[list[int], np.ndarray]:
    ps = data.get("patch_similarity", data)
    cos = np.asarray(ps["cos"], dtype=float)
    if cos.ndim != 3 or len(ps["layers"]) != cos.shape[0]:
        raise ValueError(f"patch_similarity.cos must be [layers, h, w] with one map per layer; got {cos.shape}")
    return list(ps["layers"]), cos


def draw(data: Mapping[str, Any]) -> Figure:
    layers, cos = _maps(data)
    lim = float(np.abs(cos).max()) or 1.0
    L, h, w = cos.shape
    fig = Figure(figsize=(min(3.2 * L, 16) + 1, 3.2 * max(h / w, 0.35) + 0.8), constrained_layout=True)
    axes = fig.subplots(1, L, squeeze=False)[0]
    for ax, l, m in zip(axes, layers, cos):
        im = ax.imshow(m, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto" if h == 1 else "equal")
        ax.set(title=f"layer {l}", xticks=[], yticks=[])
    fig.colorbar(im, ax=list(axes), shrink=0.8, label="cos(hidden, patch)")
    ps = data.get("patch_similarity", data)
    fig.suptitle(
        f"Hidden state vs each connector token (image {ps.get('image_index', 0)}, "
        f"token rule {data.get('token_rule', '?')})",
        fontsize=11,
    )
    return fig


def draw_plotly(data: Mapping[str, Any]):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    layers, cos = _maps(data)
    lim = float(np.abs(cos).max()) or 1.0
    fig = make_subplots(1, len(layers), subplot_titles=[f"layer {l}" for l in layers])
    for i, m in enumerate(cos, start=1):
        fig.add_trace(go.Heatmap(z=m[::-1], zmin=-lim, zmax=lim, colorscale="RdBu_r", showscale=i == 1), 1, i)
    fig.update_layout(title="cos(hidden state, image patch embedding)")
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
        check=lambda d: None if "patch_similarity" in d else "it has no patch_similarity maps",
    )


def main(argv: list[str] | None = None) -> None:
    figure_main(render, argv)


if __name__ == "__main__":
    main()
