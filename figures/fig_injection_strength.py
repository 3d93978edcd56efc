"""Gain from injection vs strength λ, one line per layer, relative to no injection.

Error bars: 95% bootstrap CIs over prompts (paired with the same prompt's no-injection row).
Draws from stored sweep tables only.

>>> render_tables(["runs/demo/intervention/sweep_llm.csv"], "runs/demo/figures")   # doctest: +SKIP
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from cotscope.analyses.sweeps import paired_gains
from cotscope.figures.common import figure_main
from cotscope.figures.fig_injection_layers import METRICS, SWEEP_INPUTS, render_run, render_sweep_figure

NAME = "injection_strength"
TITLE = "Gain over no injection vs strength"
SECTION = "intervention"
INPUTS = SWEEP_INPUTS


def draw(tables: Mapping[str, list[dict]], metrics: Sequence[str] = ("gold_logprob", "correct"), control: str = "real"):
    import matplotlib.pyplot as plt
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    labels = list(tables)
    fig, axes = plt.subplots(len(metrics), len(labels), figsize=(5.2 * len(labels), 3.3 * len(metrics)), squeeze=False)
    pfig = make_subplots(rows=len(metrics), cols=len(labels), subplot_titles=[lab for m in metrics for lab in labels])
    for j, lab in enumerate(labels):
        for i, m in enumerate(metrics):
            ax = axes[i][j]
            gains = [g for g in paired_gains(tables[lab], m) if g["control"] == control and g["layer"] is not None]
            for layer in sorted({g["layer"] for g in gains}):
                gs = sorted((g for g in gains if g["layer"] == layer), key=lambda g: g["lam"])
                x, y = [g["lam"] for g in gs], [g["gain"] for g in gs]
                lo = [g["gain"] - g["ci_low"] if g["ci_low"] == g["ci_low"] else 0 for g in gs]
                hi = [g["ci_high"] - g["gain"] if g["ci_high"] == g["ci_high"] else 0 for g in gs]
                ax.errorbar(x, y, yerr=[lo, hi], marker="o", ms=4, capsize=3, lw=1.2, label=f"layer {layer}")
                pfig.add_trace(
                    go.Scatter(
                        x=x,
                        y=y,
                        mode="lines+markers",
                        name=f"layer {layer}",
                        legendgroup=str(layer),
                        showlegend=(i == 0 and j == 0),
                        error_y=dict(type="data", symmetric=False, array=hi, arrayminus=lo),
                    ),
                    row=i + 1,
                    col=j + 1,
                )
            ax.axhline(0, color="k", lw=0.8, ls="--")
            ax.set_xlabel("strength λ")
            ax.set_ylabel(METRICS.get(m, f"Δ {m}"))
            ax.set_title(lab, fontsize=9)
            if gains:
                ax.legend(fontsize=7)
            pfig.update_xaxes(title_text="strength λ", row=i + 1, col=j + 1)
            pfig.update_yaxes(title_text=METRICS.get(m, m), row=i + 1, col=j + 1)
    fig.suptitle(f"Gain over no injection vs strength ({control} vector)", fontsize=11)
    fig.tight_layout()
    pfig.update_layout(title=f"Gain over no injection vs strength ({control} vector)", height=330 * len(metrics))
    return fig, pfig


def render_tables(paths: Sequence[str | Path], out_dir: str | Path) -> list[Path]:
    return render_sweep_figure(draw, NAME, paths, out_dir, module=sys.modules[__name__])


def render(run_dir: str | Path) -> list[Path]:
    return render_run(run_dir, sys.modules[__name__])


def main(argv: list[str] | None = None) -> None:
    return figure_main(render, argv)


if __name__ == "__main__":
    raise SystemExit(main())
