"""Cosine between the LLM's and the VLM's CoT directions against the low-pass cutoff, with the permutation-null
band (L2V-CoT's claim: the shared part is low-frequency); one panel per VLM input condition.

Reads ``analysis/crossmodel_<condition>.json`` (the cross-model stage); other folders holding such files draw
``crossmodel_cosine_<folder>.png``.

>>> python -m cotscope.figures.fig_crossmodel_cosine runs/demo          # doctest: +SKIP
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from cotscope.figures.common import MissingInputs, figures_dir, instance_name, save_pair
from cotscope.figures.inputs import CROSSMODEL_INPUTS, crossmodel_groups

NAME = "crossmodel_cosine"
TITLE = "LLM ↔ VLM CoT direction cosine vs low-pass cutoff"
SECTION = "crossmodel"
INPUTS = CROSSMODEL_INPUTS


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
            ax.plot(
                x, [r["highpass_cosine"] for r in L["cutoffs"]], "x:", color=col, alpha=0.7, label=f"{lab} high-pass"
            )
            ax.fill_between(
                x, [r["null_q05"] for r in L["cutoffs"]], [r["null_q95"] for r in L["cutoffs"]], color=col, alpha=0.12
            )
            ax.axhline(L["raw_cosine"], color=col, lw=0.7, ls="--")
            pfig.add_trace(
                go.Scatter(
                    x=x,
                    y=[r["lowpass_cosine"] for r in L["cutoffs"]],
                    name=f"{lab} low-pass ({cond})",
                    line=dict(color=col),
                ),
                row=1,
                col=k + 1,
            )
            pfig.add_trace(
                go.Scatter(
                    x=x,
                    y=[r["null_q95"] for r in L["cutoffs"]],
                    name=f"{lab} null 95% ({cond})",
                    line=dict(color=col, dash="dot"),
                ),
                row=1,
                col=k + 1,
            )
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


def load_groups(run_dir: str | Path) -> dict[str, tuple[dict[str, Any], list[Path]]]:
    """``{key: ({condition: result}, [paths])}`` for every folder of cross-model analyses in the run."""
    groups = crossmodel_groups(run_dir)
    if not groups:
        raise MissingInputs(f"no analysis/crossmodel_*.json under {run_dir}: run the cross-model (VLM) stage first")
    return {k: ({c: d for c, (_, d) in g.items()}, [p for p, _ in g.values()]) for k, g in groups.items()}


def render_groups(run_dir: str | Path, module: Any, draw_fn: Any) -> list[Path]:
    """Draw ``draw_fn(results)`` once per folder of cross-model analyses (shared with the dispersion figure)."""
    out = figures_dir(run_dir)
    paths: list[Path] = []
    for key, (results, sources) in load_groups(run_dir).items():
        fig, pfig = draw_fn(results)
        paths += save_pair(
            fig,
            pfig,
            out,
            instance_name(module.NAME, key, "run"),
            module=module,
            sources=sources,
            instance="" if key == "run" else key,
        )
    return paths


def render(run_dir: str | Path) -> list[Path]:
    return render_groups(run_dir, sys.modules[__name__], draw)


if __name__ == "__main__":
    print("\n".join(map(str, render(sys.argv[1] if len(sys.argv) > 1 else "runs/demo"))))
