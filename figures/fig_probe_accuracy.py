"""Per-layer held-out probe accuracy, with LAT-vs-mean-difference cosine (LLM analysis)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from cotscope.figures.common import figures_dir, load_json, save_matplotlib, save_plotly

NAME = "probe_accuracy"


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
    pfig = go.Figure([go.Scatter(x=layers, y=acc, mode="lines+markers", name="probe accuracy"),
                      go.Scatter(x=layers, y=[abs(c) for c in cos], mode="lines+markers", name="|cos(LAT, mean diff)|")])
    pfig.update_layout(title=title or "CoT vs direct separability per layer", xaxis_title="decoder block",
                       yaxis_range=[0, 1.05])
    return fig, pfig


def render(run_dir: str | Path) -> list[Path]:
    res = load_json(Path(run_dir) / "analysis" / "llm.json", "run the LLM analysis first (cotscope demo / analyse)")
    fig, pfig = draw(res, title=f"{res.get('model_id', 'LLM')}: CoT vs direct per layer")
    out = figures_dir(run_dir)
    return save_matplotlib(fig, out, NAME) + [save_plotly(pfig, out, NAME)]


if __name__ == "__main__":
    print("\n".join(map(str, render(sys.argv[1] if len(sys.argv) > 1 else "runs/demo"))))
