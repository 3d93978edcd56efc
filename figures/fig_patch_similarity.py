"""Heat maps: cosine of a hidden state against each image patch (connector output) embedding.

Input: ``reconstruction.json`` with a ``patch_similarity`` entry (``{"layers": [...], "cos":
[L, h, w]}``), as written by :func:`probes.vision_latents.run_reconstruction_analysis`; the arrays
come from :func:`analyses.reconstruction.patch_similarity`.

    python -m figures.fig_patch_similarity out/recon/reconstruction.json out/recon/patch_similarity
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from matplotlib.figure import Figure


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
    fig.suptitle(f"Hidden state vs each connector token (image {ps.get('image_index', 0)}, "
                 f"token rule {data.get('token_rule', '?')})", fontsize=11)
    return fig


def draw_plotly(data: Mapping[str, Any]):
    from plotly.subplots import make_subplots
    import plotly.graph_objects as go

    layers, cos = _maps(data)
    lim = float(np.abs(cos).max()) or 1.0
    fig = make_subplots(1, len(layers), subplot_titles=[f"layer {l}" for l in layers])
    for i, m in enumerate(cos, start=1):
        fig.add_trace(go.Heatmap(z=m[::-1], zmin=-lim, zmax=lim, colorscale="RdBu_r", showscale=i == 1), 1, i)
    fig.update_layout(title="cos(hidden state, image patch embedding)")
    return fig


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
    ap.add_argument("result_json")
    ap.add_argument("out_stem")
    a = ap.parse_args(argv)
    for p in save(json.loads(Path(a.result_json).read_text()), a.out_stem):
        print(p)


if __name__ == "__main__":
    main()
