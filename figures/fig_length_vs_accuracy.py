"""Response length vs accuracy (and teacher-forced gold log-prob), one point per sweep cell (cf. L2V-CoT Fig. 4).

x: mean response length in tokens (free tokens before EOS or the budget); y: accuracy (top) and mean gold
log-prob (bottom). Colour = control kind; the no-injection baseline is a black star. Error bars: 95% bootstrap
CIs over prompts. Draws from stored sweep tables only.

>>> render_tables(["runs/demo/intervention/sweep_llm.csv"], "runs/demo/figures")   # doctest: +SKIP
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from cotscope.analyses.sweeps import cell_means
from cotscope.figures.common import figure_main
from cotscope.figures.fig_injection_layers import SWEEP_INPUTS, render_run, render_sweep_figure

NAME = "length_vs_accuracy"
TITLE = "Response length vs accuracy per sweep cell"
SECTION = "intervention"
INPUTS = SWEEP_INPUTS
COLORS = {
    "real": "tab:blue",
    "unfiltered": "tab:purple",
    "highpass": "tab:orange",
    "random": "tab:grey",
    "own_lowpass": "tab:green",
    "none": "black",
}
YLAB = {"correct": "accuracy", "gold_logprob": "log p(gold) after budget"}


def draw(tables: Mapping[str, list[dict]], metrics: Sequence[str] = ("correct", "gold_logprob")):
    import matplotlib.pyplot as plt
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    labels = list(tables)
    fig, axes = plt.subplots(len(metrics), len(labels), figsize=(5.2 * len(labels), 3.3 * len(metrics)), squeeze=False)
    pfig = make_subplots(rows=len(metrics), cols=len(labels), subplot_titles=[lab for m in metrics for lab in labels])
    for j, lab in enumerate(labels):
        rows = tables[lab]
        length = {r["cell_id"]: r for r in cell_means(rows, "n_tokens")}
        for i, m in enumerate(metrics):
            ax = axes[i][j]
            ys = {r["cell_id"]: r for r in cell_means(rows, m)}
            for ctrl in COLORS:
                ids = [c for c, r in ys.items() if r["control"] == ctrl]
                if not ids:
                    continue
                x = [length[c]["mean"] for c in ids]
                y = [ys[c]["mean"] for c in ids]
                ylo = [ys[c]["mean"] - ys[c]["ci_low"] if ys[c]["ci_low"] == ys[c]["ci_low"] else 0 for c in ids]
                yhi = [ys[c]["ci_high"] - ys[c]["mean"] if ys[c]["ci_high"] == ys[c]["ci_high"] else 0 for c in ids]
                kw = dict(marker="*", ms=12, zorder=5) if ctrl == "none" else dict(marker="o", ms=5)
                ax.errorbar(x, y, yerr=[ylo, yhi], ls="none", color=COLORS[ctrl], capsize=2, label=ctrl, **kw)
                pfig.add_trace(
                    go.Scatter(
                        x=x,
                        y=y,
                        mode="markers",
                        name=ctrl,
                        legendgroup=ctrl,
                        showlegend=(i == 0 and j == 0),
                        marker=dict(color=COLORS[ctrl].replace("tab:", "")),
                        error_y=dict(type="data", symmetric=False, array=yhi, arrayminus=ylo),
                        hovertext=ids,
                    ),
                    row=i + 1,
                    col=j + 1,
                )
            ax.set_xlabel("mean response length (tokens)")
            ax.set_ylabel(YLAB.get(m, m))
            ax.set_title(lab, fontsize=9)
            ax.legend(fontsize=7)
            pfig.update_xaxes(title_text="mean response length (tokens)", row=i + 1, col=j + 1)
            pfig.update_yaxes(title_text=YLAB.get(m, m), row=i + 1, col=j + 1)
    fig.suptitle("Response length vs accuracy per sweep cell", fontsize=11)
    fig.tight_layout()
    pfig.update_layout(title="Response length vs accuracy per sweep cell", height=330 * len(metrics))
    return fig, pfig


def render_tables(paths: Sequence[str | Path], out_dir: str | Path) -> list[Path]:
    return render_sweep_figure(draw, NAME, paths, out_dir, module=sys.modules[__name__])


def render(run_dir: str | Path) -> list[Path]:
    return render_run(run_dir, sys.modules[__name__])


def main(argv: list[str] | None = None) -> None:
    return figure_main(render, argv)


if __name__ == "__main__":
    raise SystemExit(main())
