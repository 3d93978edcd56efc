"""Held-out probe accuracy per layer (CoT vs direct activations) and |cos(LAT, mean difference)|, one figure per
stored per-layer analysis.

Reads ``analysis/<name>.json`` (stages, API) or ``<dir>/analysis.json`` (``cotscope analyse --out <dir>``); the
demo's ``llm`` analysis draws ``probe_accuracy.png``, any other ``probe_accuracy_<name>.png``.

>>> python -m cotscope.figures.fig_probe_accuracy runs/demo          # doctest: +SKIP
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from cotscope.figures.common import MissingInputs, figures_dir, instance_name, save_pair
from cotscope.figures.inputs import LAYER_ANALYSIS_INPUTS, layer_analyses

NAME = "probe_accuracy"
TITLE = "CoT vs direct separability per layer"
SECTION = "llm"
INPUTS = LAYER_ANALYSIS_INPUTS


def draw(result: dict[str, Any], title: str = ""):
    import matplotlib.pyplot as plt
    import plotly.graph_objects as go

    layers = sorted(int(l) for l in result["layers"])
    L = {int(k): v for k, v in result["layers"].items()}
    acc = [L[l]["probe"]["test_accuracy"] for l in layers]
    cos = [L[l]["lat_vs_mean_diff_cosine"] for l in layers]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.plot(layers, acc, "o-", label="probe accuracy (held-out pairs)")
    ax.plot(layers, [abs(c) for c in cos], "s--", alpha=0.7, label="|cos(LAT, mean diff)|")
    ax.axhline(0.5, color="grey", lw=0.8, ls=":", label="chance")
    ax.set_xlabel("decoder block (output of model.layers[i])")
    ax.set_ylim(0, 1.05)
    ax.set_title(title or f"CoT vs direct separability per layer ({result['position']})")
    ax.legend(loc="lower right", fontsize=8)
    pfig = go.Figure(
        [
            go.Scatter(x=layers, y=acc, mode="lines+markers", name="probe accuracy"),
            go.Scatter(x=layers, y=[abs(c) for c in cos], mode="lines+markers", name="|cos(LAT, mean diff)|"),
        ]
    )
    pfig.update_layout(
        title=title or "CoT vs direct separability per layer", xaxis_title="decoder block", yaxis_range=[0, 1.05]
    )
    return fig, pfig


def render(run_dir: str | Path) -> list[Path]:
    found = layer_analyses(run_dir)
    if not found:
        raise MissingInputs(f"no per-layer analysis under {run_dir}: run `cotscope analyse` or an LLM stage first")
    out = figures_dir(run_dir)
    paths: list[Path] = []
    for a in found:
        fig, pfig = draw(a.data, title=f"{a.model_short} ({a.name}, {a.data['position']}): CoT vs direct per layer")
        paths += save_pair(
            fig,
            pfig,
            out,
            instance_name(NAME, a.name, "llm"),
            module=sys.modules[__name__],
            sources=[a.path],
            instance=a.name,
        )
    return paths


if __name__ == "__main__":
    print("\n".join(map(str, render(sys.argv[1] if len(sys.argv) > 1 else "runs/demo"))))
