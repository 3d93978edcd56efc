"""LLM↔VLM CoT-direction cosine vs low-pass cutoff, with the permutation-null band (L2V-CoT's claim)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from cotscope.figures.common import MissingInputs, figures_dir, load_json, save_matplotlib, save_plotly

NAME = "crossmodel_cosine"


def pick_layers(res: dict[str, Any], k: int = 3) -> list[dict]:
    L = res["layers"]
    idx = sorted({0, len(L) // 2, len(L) - 1} if len(L) >= 3 else set(range(len(L))))
    return [L[i] for i in idx][:k]


def draw(results: dict[str, dict[str, Any]]):
    """``results``: condition name → :func:`analyses.crossmodel.crossmodel_analysis` output."""
    import matplotlib.pyplot as plt
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    conds = list(results)
    fig, axes = plt.subplots(1, len(conds), figsize=(6 * len(conds), 4), squeeze=False, sharey=True)
    pfig = make_subplots(rows=1, cols=len(conds), subplot_titles=[f"VLM input: {c}" for c in conds])
    colors = ["#1f77b4", "#ff7f0e", "#2ca02c"]
    for k, cond in enumerate(conds):
        ax = axes[0, k]
        for j, L in enumerate(pick_layers(results[cond])):
            x = [r.get("fraction_of_bins", r["cutoff"]) for r in L["cutoffs"]]
            col = colors[j % len(colors)]
            lab = f"LLM L{L['llm_layer']} ↔ VLM L{L['vlm_layer']}"
            ax.plot(x, [r["lowpass_cosine"] for r in L["cutoffs"]], "o-", color=col, label=f"{lab} low-pass")
            ax.plot(x, [r["highpass_cosine"] for r in L["cutoffs"]], "x:", color=col, alpha=0.7, label=f"{lab} high-pass")
            ax.fill_between(x, [r["null_q05"] for r in L["cutoffs"]], [r["null_q95"] for r in L["cutoffs"]],
                            color=col, alpha=0.12)
            ax.axhline(L["raw_cosine"], color=col, lw=0.7, ls="--")
            pfig.add_trace(go.Scatter(x=x, y=[r["lowpass_cosine"] for r in L["cutoffs"]], name=f"{lab} low-pass ({cond})",
                                      line=dict(color=col)), row=1, col=k + 1)
            pfig.add_trace(go.Scatter(x=x, y=[r["null_q95"] for r in L["cutoffs"]], name=f"{lab} null 95% ({cond})",
                                      line=dict(color=col, dash="dot")), row=1, col=k + 1)
        ax.set_xscale("log")
        ticks = [r.get("fraction_of_bins", r["cutoff"]) for r in results[cond]["layers"][0]["cutoffs"]]
        ax.set_xticks(ticks)
        ax.set_xticklabels([f"{t:.2g}" for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("low-pass cutoff (fraction of rfft bins)")
        ax.set_title(f"VLM input: {cond}  (dashed: raw cosine; band: permutation null 5–95%)", fontsize=9)
        ax.legend(fontsize=7)
    axes[0, 0].set_ylabel("cosine(LLM CoT dir, VLM CoT dir)")
    fig.tight_layout()
    pfig.update_xaxes(type="log", title="cutoff")
    pfig.update_layout(title="LLM↔VLM CoT direction cosine vs cutoff")
    return fig, pfig


def load_results(run_dir: Path) -> dict[str, Any]:
    res = {}
    for cond in ("text", "image"):
        p = run_dir / "analysis" / f"crossmodel_{cond}.json"
        if p.exists():
            res[cond] = load_json(p)
    if not res:
        raise MissingInputs(f"{run_dir}/analysis/crossmodel_*.json not found: run the VLM stage first")
    return res


def render(run_dir: str | Path) -> list[Path]:
    fig, pfig = draw(load_results(Path(run_dir)))
    out = figures_dir(run_dir)
    return save_matplotlib(fig, out, NAME) + [save_plotly(pfig, out, NAME)]


if __name__ == "__main__":
    print("\n".join(map(str, render(sys.argv[1] if len(sys.argv) > 1 else "runs/demo"))))
