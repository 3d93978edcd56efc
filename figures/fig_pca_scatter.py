"""CoT vs direct activations on their top-2 principal components at the analysis' best layer (cf. L2V-CoT
Fig. 1a); one figure per stored per-layer analysis whose activation store is present, with the VLM's stores
side by side for the demo's ``llm`` analysis when the cross-model stage ran.

>>> python -m cotscope.figures.fig_pca_scatter runs/demo          # doctest: +SKIP
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from cotscope.analyses.store import ActivationStore
from cotscope.figures.common import MissingInputs, figures_dir, instance_name, save_pair, skip_instance
from cotscope.figures.inputs import LAYER_ANALYSIS_INPUTS, layer_analyses

NAME = "pca_scatter"
TITLE = "CoT vs direct activations, top-2 principal components"
SECTION = "llm"
INPUTS = LAYER_ANALYSIS_INPUTS


def project(X: np.ndarray, n: int = 2) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.decomposition import PCA

    pca = PCA(n_components=n).fit(X)
    return pca.transform(X), pca.explained_variance_ratio_


def draw(panels: list[tuple[str, np.ndarray, np.ndarray]]):
    """``panels``: ``[(title, X [n, d], labels [n])]`` — one subplot each (LLM, VLM side by side)."""
    import matplotlib.pyplot as plt
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4), squeeze=False)
    pfig = make_subplots(rows=1, cols=len(panels), subplot_titles=[p[0] for p in panels])
    for k, (title, X, y) in enumerate(panels):
        Z, evr = project(X)
        ax = axes[0, k]
        for lab, name, col in ((1, "CoT", "#d62728"), (0, "direct", "#1f77b4")):
            m = y == lab
            ax.scatter(Z[m, 0], Z[m, 1], s=14, alpha=0.7, c=col, label=name)
            pfig.add_trace(
                go.Scatter(
                    x=Z[m, 0], y=Z[m, 1], mode="markers", name=f"{name} ({title})", marker=dict(color=col, size=6)
                ),
                row=1,
                col=k + 1,
            )
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(f"PC1 ({evr[0]:.0%} var)")
        ax.set_ylabel(f"PC2 ({evr[1]:.0%} var)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig, pfig


def render(run_dir: str | Path) -> list[Path]:
    run_dir = Path(run_dir)
    found = layer_analyses(run_dir)
    if not found:
        raise MissingInputs(f"no per-layer analysis under {run_dir}: run `cotscope analyse` or an LLM stage first")
    out = figures_dir(run_dir)
    paths: list[Path] = []
    for a in found:
        name = instance_name(NAME, a.name, "llm")
        sdir = a.store_dir()
        if sdir is None:
            skip_instance(name, f"{a.path}: the activation store it analysed was not found")
            continue
        store = ActivationStore(sdir)
        layer, pos = a.data["best_layer"], a.data["position"]
        if pos not in store.positions or layer not in store.layers:
            skip_instance(name, f"{sdir} holds no {pos!r} activations at layer {layer}")
            continue
        panels = [(f"{a.model_short} layer {layer} ({pos})", store.get(pos, layer), store.labels)]
        sources = [a.path, sdir / "manifest.json"]
        for cond in ("text", "image") if a.name == "llm" else ():  # the VLM side by side (L2V-CoT Fig. 2b)
            vdir = run_dir / "stores" / f"vlm_{cond}"
            if (vdir / "manifest.json").exists():
                vs = ActivationStore(vdir)
                if pos not in vs.positions:
                    continue
                vl = min(
                    vs.layers,
                    key=lambda l: abs(
                        l / max(1, vs.model["n_layers"] - 1) - layer / max(1, store.model["n_layers"] - 1)
                    ),
                )
                panels.append((f"VLM ({cond} input) layer {vl}", vs.get(pos, vl), vs.labels))
                sources.append(vdir / "manifest.json")
        fig, pfig = draw(panels)
        paths += save_pair(fig, pfig, out, name, module=sys.modules[__name__], sources=sources, instance=a.name)
    if not paths:
        raise MissingInputs("no per-layer analysis has its activation store in the run")
    return paths


if __name__ == "__main__":
    print("\n".join(map(str, render(sys.argv[1] if len(sys.argv) > 1 else "runs/demo"))))
