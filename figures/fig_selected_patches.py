"""IVT-LR visual token selection drawn on the input image: the top-k image tokens picked at each reasoning step
(earlier picks excluded) and the step-averaged attention over the image tokens.

Grid layouts are drawn over the image region the tokens cover; resampler latents (e.g. Idefics2's perceiver) have
no grid position, so they are drawn as a strip of token cells, and the image shows the vision patches the picked
latents read (perceiver attention, when the run stored the latent → patch map). Reads every attention-shift
analysis of the run (``analysis/attention_shift.json``) that has a token selection, and the input images stored in
the attention run it analysed.

>>> python -m cotscope.figures.fig_selected_patches runs/demo          # doctest: +SKIP
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cotscope.figures.common import MissingInputs, figures_dir, instance_name, save_pair, skip_instance
from cotscope.figures.fig_attention_ratio_focus import ATTENTION_INPUTS, DEFAULT, found, model_name

NAME = "selected_patches"
TITLE = "Visual token selection (IVT-LR)"
SECTION = "attention"
INPUTS = ATTENTION_INPUTS


def _cells(shape: Sequence[int], region: Sequence[float]) -> list[tuple[float, float, float, float]]:
    r, c = int(shape[0]), int(shape[1])
    x0, y0, x1, y1 = region
    w, h = (x1 - x0) / c, (y1 - y0) / r
    return [(x0 + j * w, y0 + i * h, w, h) for i in range(r) for j in range(c)]


def draw(images: Sequence[Any], selections: Sequence[dict[str, Any]], labels: Sequence[str], title: str = ""):
    """One row per trace: image with picked cells (colour = step) | attention over the image tokens."""
    import matplotlib.pyplot as plt
    import plotly.graph_objects as go
    from matplotlib.patches import Rectangle
    from plotly.subplots import make_subplots

    n = len(images)
    if n == 0:
        raise ValueError("no traces with a visual token selection to draw")
    aspect = max(im.size[0] / im.size[1] for im in images)
    fig, axes = plt.subplots(
        n,
        2,
        figsize=(min(16.0, max(7.0, 5.6 * aspect + 2.5)), 2.9 * n + 0.8),
        squeeze=False,
        gridspec_kw={"width_ratios": [1.0, 1.1]},
    )
    pfig = make_subplots(
        rows=n, cols=2, subplot_titles=[t for lab in labels for t in (lab, "attention on image tokens")]
    )
    cmap = plt.get_cmap("autumn")
    for i, (img, sel, lab) in enumerate(zip(images, selections, labels)):
        lay = sel.get("layout", {})
        kind, shape = lay.get("kind", "sequence"), lay.get("shape") or [1, len(np.ravel(sel["attention_map"]))]
        heat = np.asarray(sel["heatmap"], dtype=np.float64)
        att = np.asarray(sel["attention_map"], dtype=np.float64)
        n_steps = max(int(heat.max()), 1)
        W, H = img.size
        ax, ax2 = axes[i]
        ax.imshow(img)
        ax.set_title(lab, fontsize=9)
        ax.axis("off")
        pfig.add_trace(go.Image(z=np.asarray(img)), row=i + 1, col=1)
        if kind == "grid":
            region = lay.get("region") or [0, 0, W, H]
            for (x, y, w, h), v in zip(_cells(shape, region), heat.ravel()):
                if v > 0:
                    col = cmap((v - 1) / max(n_steps - 1, 1))
                    ax.add_patch(Rectangle((x, y), w, h, fill=True, alpha=0.45, color=col, lw=0))
                    ax.add_patch(Rectangle((x, y), w, h, fill=False, ec="k", lw=0.6))
                    ax.text(x + w / 2, y + h / 2, str(int(v)), ha="center", va="center", fontsize=7)
                    pfig.add_shape(
                        type="rect",
                        x0=x,
                        y0=y,
                        x1=x + w,
                        y1=y + h,
                        line=dict(color="black", width=1),
                        fillcolor=f"rgba(255,{int(200 * (v - 1) / max(n_steps - 1, 1))},0,0.45)",
                        row=i + 1,
                        col=1,
                    )
            rx0, ry0, rx1, ry1 = region
            ax.add_patch(Rectangle((rx0, ry0), rx1 - rx0, ry1 - ry0, fill=False, ec="w", ls="--", lw=0.8))
            ext = (rx0, rx1, ry1, ry0)
            ax2.imshow(img, alpha=0.35)
            im = ax2.imshow(att, extent=ext, cmap="magma", alpha=0.75)
            ax2.set_xlim(0, W), ax2.set_ylim(H, 0)
            note = f"{shape[0]}×{shape[1]} token grid over the region the model sees (dashed); left numbers = pick step"
        else:
            if sel.get("patch_read") is not None:  # resampler latents: what the picked latents read, on the image
                read = np.asarray(sel["patch_read"], dtype=np.float64)
                region = lay.get("region") or [0, 0, W, H]
                ext = (region[0], region[2], region[3], region[1])
                ax.imshow(read, extent=ext, cmap="autumn_r", alpha=0.55, interpolation="nearest")
                ax.set_xlim(0, W), ax.set_ylim(H, 0)
                ax.set_title(f"{lab}\ncolour: vision patches the picked latents read (perceiver attention)", fontsize=8)
                pfig.add_trace(
                    go.Heatmap(
                        z=read,
                        x0=region[0] + (region[2] - region[0]) / read.shape[1] / 2,
                        dx=(region[2] - region[0]) / read.shape[1],
                        y0=region[1] + (region[3] - region[1]) / read.shape[0] / 2,
                        dy=(region[3] - region[1]) / read.shape[0],
                        opacity=0.5,
                        showscale=False,
                        colorscale="YlOrRd",
                        hovertemplate="read %{z:.3g}<extra></extra>",
                    ),
                    row=i + 1,
                    col=1,
                )
            im = ax2.imshow(att.reshape(shape), cmap="magma", aspect="auto")
            for j, v in enumerate(heat.ravel()):
                if v > 0:
                    r, c = divmod(j, int(shape[1]))
                    ax2.text(c, r, str(int(v)), ha="center", va="center", fontsize=8, color="cyan")
            note = (
                f"{int(np.prod(shape))} {'resampler latents' if kind == 'latent' else 'image tokens'} "
                "(no grid position: a strip; numbers = pick step)"
            )
        ax2.set_title(f"attention on the image tokens; k={sel['k']} picked per step", fontsize=8)
        ax2.set_xlabel(note, fontsize=7)
        ax2.set_yticks([])
        cb = fig.colorbar(im, ax=ax2, fraction=0.04, format="%.2g")
        cb.set_label("mean attention", fontsize=7)
        cb.ax.yaxis.get_offset_text().set_visible(False)
        pfig.add_trace(
            go.Heatmap(
                z=att.reshape(shape),
                colorscale="Magma",
                showscale=False,
                text=heat.reshape(shape),
                hovertemplate="token %{x},%{y}: attn %{z:.4g}, picked at step %{text}<extra></extra>",
            ),
            row=i + 1,
            col=2,
        )
    fig.suptitle(title or "Visual token selection (top-k per reasoning step, picks excluded later)", fontsize=10)
    fig.tight_layout()
    pfig.update_layout(title=title or "Visual token selection", height=300 * n + 80, width=1100)
    return fig, pfig


def render(run_dir: str | Path, max_traces: int = 3) -> list[Path]:
    from cotscope.analyses.attention_store import AttentionRun

    out = figures_dir(run_dir)
    paths: list[Path] = []
    for key, src, analysis in found(run_dir):
        name = instance_name(NAME, key, DEFAULT)
        store = (src.parent / analysis.get("store", "../attention/store")).resolve()
        if not (store / "manifest.json").is_file():
            skip_instance(name, f"{store} not found: the attention run with the input images")
            continue
        picked = [t for t in analysis["traces"] if t.get("selection")]
        picked = sorted(picked, key=lambda t: (t.get("condition") != "cot", t["index"]))[:max_traces]
        if not picked:
            skip_instance(name, f"no trace in {src} has a visual token selection (analyse with k=...)")
            continue
        run = AttentionRun(store)
        images = [run.image(t["index"]) for t in picked]
        labels = [f"{t['id']} ({len(t['selection']['indices'])} steps)" for t in picked]
        fig, pfig = draw(
            images,
            [t["selection"] for t in picked],
            labels,
            title=f"Visual token selection (IVT-LR), {model_name(analysis)}",
        )
        paths += save_pair(
            fig,
            pfig,
            out,
            name,
            module=sys.modules[__name__],
            sources=[src, store / "manifest.json"],
            pdf=False,
            instance="" if key == DEFAULT else key,
        )
    if not paths:
        raise MissingInputs("no attention-shift analysis with a visual token selection and its stored images")
    return paths


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    print("\n".join(map(str, render(argv[0] if argv else "runs/demo"))))


if __name__ == "__main__":
    main()
