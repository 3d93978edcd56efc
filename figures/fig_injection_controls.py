"""Low-pass (real) vs high-pass vs random vs unfiltered (vs the VLM's own low-passed) injection (cf. L2V-CoT Fig. 2a).

Grouped bars per layer at the strength where the controls were run (the largest such λ): the gain of each
vector kind over no injection, with 95% bootstrap CIs over prompts. Draws from stored sweep tables only.

>>> render_tables(["runs/demo/intervention/sweep_llm.csv"], "runs/demo/figures")   # doctest: +SKIP
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from cotscope.analyses.sweeps import paired_gains
from cotscope.figures.common import figure_main
from cotscope.figures.fig_injection_layers import METRICS, SWEEP_INPUTS, render_run, render_sweep_figure

NAME = "injection_controls"
TITLE = "Low-pass vs high-pass vs random injection"
SECTION = "intervention"
INPUTS = SWEEP_INPUTS
ORDER = ("real", "own_lowpass", "highpass", "unfiltered", "random")
LABEL = {
    "real": "low-pass (real)",
    "own_lowpass": "own low-pass",
    "highpass": "high-pass",
    "unfiltered": "unfiltered",
    "random": "random (equal norm)",
}
COLORS = {
    "real": "tab:blue",
    "own_lowpass": "tab:green",
    "highpass": "tab:orange",
    "unfiltered": "tab:purple",
    "random": "tab:grey",
}


def control_lam(gains: Sequence[dict]) -> float | None:
    """The largest λ at which a non-real control was run (controls are compared there)."""
    lams = [g["lam"] for g in gains if g["control"] not in ("real", "none") and g["lam"] is not None]
    return max(lams) if lams else None


def draw(tables: Mapping[str, list[dict]], metrics: Sequence[str] = ("gold_logprob", "correct")):
    import matplotlib.pyplot as plt
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    labels = list(tables)
    fig, axes = plt.subplots(len(metrics), len(labels), figsize=(5.6 * len(labels), 3.3 * len(metrics)), squeeze=False)
    pfig = make_subplots(rows=len(metrics), cols=len(labels), subplot_titles=[lab for m in metrics for lab in labels])
    for j, lab in enumerate(labels):
        for i, m in enumerate(metrics):
            ax = axes[i][j]
            gains = [g for g in paired_gains(tables[lab], m) if g["layer"] is not None]
            lam = control_lam(gains)
            sel = [g for g in gains if g["lam"] == lam]
            layers = sorted({g["layer"] for g in sel})
            kinds = [k for k in ORDER if any(g["control"] == k for g in sel)]
            w = 0.8 / max(1, len(kinds))
            for k, kind in enumerate(kinds):
                by = {g["layer"]: g for g in sel if g["control"] == kind}
                xs = np.arange(len(layers)) + (k - (len(kinds) - 1) / 2) * w
                y = [by[l]["gain"] if l in by else np.nan for l in layers]
                lo = [
                    by[l]["gain"] - by[l]["ci_low"] if l in by and by[l]["ci_low"] == by[l]["ci_low"] else 0
                    for l in layers
                ]
                hi = [
                    by[l]["ci_high"] - by[l]["gain"] if l in by and by[l]["ci_high"] == by[l]["ci_high"] else 0
                    for l in layers
                ]
                ax.bar(xs, y, width=w, yerr=[lo, hi], capsize=2, color=COLORS[kind], label=LABEL[kind])
                pfig.add_trace(
                    go.Bar(
                        x=[f"L{l}" for l in layers],
                        y=y,
                        name=LABEL[kind],
                        legendgroup=kind,
                        marker_color=COLORS[kind].replace("tab:", ""),
                        showlegend=(i == 0 and j == 0),
                        error_y=dict(type="data", symmetric=False, array=hi, arrayminus=lo),
                    ),
                    row=i + 1,
                    col=j + 1,
                )
            ax.axhline(0, color="k", lw=0.8)
            ax.set_xticks(np.arange(len(layers)), [f"L{l}" for l in layers])
            ax.set_xlabel("injection layer")
            ax.set_ylabel(METRICS.get(m, f"Δ {m}"))
            ax.set_title(f"{lab}\n(λ={lam:g})" if lam is not None else f"{lab}\n(no controls run)", fontsize=9)
            if kinds:
                ax.legend(fontsize=7)
    fig.suptitle("Which part of the direction carries the effect: low-pass vs high-pass vs random", fontsize=11)
    fig.tight_layout()
    pfig.update_layout(barmode="group", title="Low-pass vs high-pass vs random injection", height=330 * len(metrics))
    return fig, pfig


def render_tables(paths: Sequence[str | Path], out_dir: str | Path) -> list[Path]:
    return render_sweep_figure(draw, NAME, paths, out_dir, module=sys.modules[__name__])


def render(run_dir: str | Path) -> list[Path]:
    return render_run(run_dir, sys.modules[__name__])


def main(argv: list[str] | None = None) -> None:
    return figure_main(render, argv)


if __name__ == "__main__":
    raise SystemExit(main())
