"""CoT vs direct activations on the top-2 principal components at one layer (cf. L2V-CoT Fig. 1a)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from cotscope.analyses.store import ActivationStore
from cotscope.figures.common import figures_dir, load_json, save_matplotlib, save_plotly

NAME = "pca_scatter"


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
            pfig.add_trace(go.Scatter(x=Z[m, 0], y=Z[m, 1], mode="markers", name=f"{name} ({title})",
                                      marker=dict(color=col, size=6)), row=1, col=k + 1)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(f"PC1 ({evr[0]:.0%} var)")
        ax.set_ylabel(f"PC2 ({evr[1]:.0%} var)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig, pfig


def render(run_dir: str | Path) -> list[Path]:
    run_dir = Path(run_dir)
    res = load_json(run_dir / "analysis" / "llm.json", "run the LLM analysis first")
    store = ActivationStore(run_dir / "stores" / "llm")
    layer, pos = res["best_layer"], res["position"]
    panels = [(f"LLM layer {layer} ({pos})", store.get(pos, layer), store.labels)]
    for cond in ("text", "image"):  # the VLM side by side (cf. L2V-CoT Fig. 2b), when the VLM stage ran
        vdir = run_dir / "stores" / f"vlm_{cond}"
        if (vdir / "manifest.json").exists():
            vs = ActivationStore(vdir)
            vl = min(vs.layers, key=lambda l: abs(l / max(1, vs.model["n_layers"] - 1)
                                                  - layer / max(1, store.model["n_layers"] - 1)))
            panels.append((f"VLM ({cond} input) layer {vl}", vs.get(pos, vl), vs.labels))
    out = figures_dir(run_dir)
    fig, pfig = draw(panels)
    return save_matplotlib(fig, out, NAME) + [save_plotly(pfig, out, NAME)]


if __name__ == "__main__":
    print("\n".join(map(str, render(sys.argv[1] if len(sys.argv) > 1 else "runs/demo"))))
