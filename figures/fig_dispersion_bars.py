"""Dispersion (trace of covariance of per-pair differences): LLM, VLM, VLM after low-pass
(L2V-CoT reports 176.7, 1117.8, 197.7), with the two references of the low-passed value: what an isotropic
low-pass keeps by itself (black tick, ``trace × (2c − ½)/d``) and the permutation null (5–95% bar).

Reads ``analysis/crossmodel_<condition>.json`` (the cross-model stage).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from cotscope.figures.fig_crossmodel_cosine import CROSSMODEL_INPUTS, render_groups

NAME = "dispersion_bars"
TITLE = "Dispersion of per-pair CoT differences"
SECTION = "crossmodel"
INPUTS = CROSSMODEL_INPUTS
PAPER = {"LLM": 176.7, "VLM": 1117.8, "VLM low-pass": 197.7}
PAPER_ISOTROPIC = 1117.8 * (2 * 200 - 0.5) / 3584  # c = 200 bins at d = 3584 (released cutoff, Qwen2-VL-7B)


def draw(results: dict[str, dict[str, Any]]):
    import matplotlib.pyplot as plt
    import plotly.graph_objects as go

    conds = list(results)
    fig, axes = plt.subplots(1, len(conds) + 1, figsize=(4.2 * (len(conds) + 1), 3.6))
    pfig = go.Figure()
    for k, cond in enumerate(conds):
        L = results[cond]["layers"]
        mid = L[len(L) // 2]
        vals = [mid["dispersion_llm"], mid["dispersion_vlm"], mid["dispersion_vlm_lowpass"]]
        names = ["LLM", "VLM", "VLM low-pass"]
        axes[k].bar(names, vals, color=["#1f77b4", "#d62728", "#2ca02c"])
        axes[k].set_title(f"VLM input: {cond}, LLM L{mid['llm_layer']} / VLM L{mid['vlm_layer']}", fontsize=9)
        pfig.add_trace(go.Bar(x=names, y=vals, name=f"{cond} (mid layer)"))
        for i, v in enumerate(vals):
            axes[k].text(i, v, f"{v:.1f}", ha="center", va="bottom", fontsize=8)
        axes[k].set_ylim(0, 1.3 * max(vals))  # headroom: the legend sits above the bars and their labels
        ref = mid.get("dispersion_vlm_lowpass_ref")
        if ref:
            axes[k].hlines(
                ref["isotropic_expected"],
                1.6,
                2.4,
                color="black",
                lw=2,
                label=f"isotropic expectation ({ref['isotropic_fraction']:.3f} × trace)",
            )
            if "null_q05" in ref:
                axes[k].errorbar(
                    [2.25],
                    [ref["null_mean"]],
                    yerr=[[ref["null_mean"] - ref["null_q05"]], [ref["null_q95"] - ref["null_mean"]]],
                    fmt="o",
                    color="black",
                    ms=3,
                    capsize=3,
                    label=f"permutation null (p = {ref['p_value']:.2f})",
                )
            axes[k].legend(fontsize=7, loc="upper right")
            pfig.add_trace(
                go.Scatter(
                    x=["VLM low-pass"],
                    y=[ref["isotropic_expected"]],
                    mode="markers",
                    marker=dict(symbol="line-ew-open", size=30, color="black"),
                    name=f"{cond}: isotropic expectation",
                )
            )
    axes[-1].bar(list(PAPER), list(PAPER.values()), color="grey")
    axes[-1].hlines(
        PAPER_ISOTROPIC, 1.6, 2.4, color="black", lw=2, label=f"isotropic expectation {PAPER_ISOTROPIC:.0f}"
    )
    axes[-1].legend(fontsize=7, loc="upper left")
    axes[-1].set_title("L2V-CoT paper (7B-scale models)", fontsize=9)
    axes[0].set_ylabel("trace of covariance of CoT−direct differences")
    fig.tight_layout()
    pfig.add_trace(go.Bar(x=list(PAPER), y=list(PAPER.values()), name="paper"))
    pfig.update_layout(barmode="group", title="Dispersion of per-pair CoT differences")
    return fig, pfig


def render(run_dir: str | Path) -> list[Path]:
    return render_groups(run_dir, sys.modules[__name__], draw)


if __name__ == "__main__":
    print("\n".join(map(str, render(sys.argv[1] if len(sys.argv) > 1 else "runs/demo"))))
