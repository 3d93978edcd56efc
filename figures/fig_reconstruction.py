"""Vision-latent reconstruction score per layer, against the shuffled-pairing baseline.

Panels: raw cosine (with the predict-the-mean baseline: connector outputs share a large mean, so
raw cosine is high even for a useless probe), centred cosine, and R² on held-out images.

Input: ``reconstruction.json`` from :func:`probes.vision_latents.run_reconstruction_analysis`
(or ``ReconstructionResult.to_dict()``).

    python -m figures.fig_reconstruction out/recon/reconstruction.json out/recon/reconstruction
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Mapping

from matplotlib.figure import Figure

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
    fig.suptitle(f"Reconstructing {data['n_tokens']} pooled connector tokens from the residual stream "
                 f"(train {data['n_train']}, held-out {data['n_test']} images)", fontsize=11)
    return fig


def draw_plotly(data: Mapping[str, Any]):
    from plotly.subplots import make_subplots
    import plotly.graph_objects as go

    rows = _rows(data)
    x = [r["layer"] for r in rows]
    fig = make_subplots(1, 3, subplot_titles=[p[1] for p in PANELS])
    for i, (key, label) in enumerate(PANELS, start=1):
        fig.add_trace(go.Scatter(x=x, y=[r[key] for r in rows], name=f"probe {key}"), 1, i)
        if f"{key}_shuffled" in rows[0]:
            fig.add_trace(go.Scatter(x=x, y=[r[f"{key}_shuffled"] for r in rows], name=f"shuffled {key}",
                                     line=dict(dash="dash")), 1, i)
    fig.update_xaxes(title_text="layer")
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
