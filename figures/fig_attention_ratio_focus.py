"""Attention ratio R (image / text) and focus F = 1/(H+ε) per reasoning step (and per generated token), CoT vs
direct, with bands over prompts (cf. IVT-LR §4.4).

Reads every attention-shift analysis of the run (``analysis/attention_shift.json`` from the attention stage draws
``attention_ratio_focus.png``; other analyses ``attention_ratio_focus_<name>.png``).

>>> python -m cotscope.figures.fig_attention_ratio_focus runs/demo          # doctest: +SKIP
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from cotscope.figures.common import MissingInputs, figures_dir, instance_name, save_pair
from cotscope.figures.inputs import ATTENTION_INPUTS, attention_analyses

NAME = "attention_ratio_focus"
TITLE = "Attention ratio and focus per reasoning step"
SECTION = "attention"
INPUTS = ATTENTION_INPUTS
DEFAULT = "attention_shift"  # the attention stage's analysis keeps the plain file names
COLORS = {"cot": "#d62728", "direct": "#1f77b4"}
PANELS = (
    ("R", "ratio R = image / text attention"),
    ("R_question", "R against question text only"),
    ("F", "focus F = 1 / (H + ε)"),
    ("F_norm", "focus with H / log N"),
    ("F_image", "focus F, H over image keys only"),
    ("image_share", "image share of attention"),
)


def _arr(v: list) -> np.ndarray:
    return np.array([np.nan if x is None else x for x in v], dtype=np.float64)


def draw(analysis: dict[str, Any], level: str = "step", title: str = ""):
    """``level``: ``"step"`` (reasoning steps) or ``"token"`` (generated tokens). Returns (matplotlib, plotly)."""
    import matplotlib.pyplot as plt
    import plotly.graph_objects as go
    from matplotlib.ticker import MaxNLocator
    from plotly.subplots import make_subplots

    agg = analysis["aggregate"]
    panels = [p for p in PANELS if all(p[0] in a[level] for a in agg.values())]
    xlabel = "reasoning step" if level == "step" else "generated token"
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 3.6))
    pfig = make_subplots(rows=1, cols=len(panels), subplot_titles=[t for _, t in panels])
    for j, (metric, label) in enumerate(panels):
        ax = axes[j]
        for cond, a in agg.items():
            band = a[level][metric]
            m, lo, hi, n = _arr(band["mean"]), _arr(band["lo"]), _arr(band["hi"]), np.array(band["n"])
            x = np.arange(1, len(m) + 1)
            c = COLORS.get(cond, None)
            name = f"{cond} (n={a['n_traces']})"
            ax.plot(x, m, "-o", ms=3, color=c, label=name)
            ax.fill_between(x, lo, hi, color=c, alpha=0.2, lw=0)
            pfig.add_trace(
                go.Scatter(x=x, y=hi, line=dict(width=0), showlegend=False, hoverinfo="skip", legendgroup=cond),
                row=1,
                col=j + 1,
            )
            pfig.add_trace(
                go.Scatter(
                    x=x,
                    y=lo,
                    fill="tonexty",
                    line=dict(width=0),
                    showlegend=False,
                    fillcolor="rgba(214,39,40,0.2)" if cond == "cot" else "rgba(31,119,180,0.2)",
                    hoverinfo="skip",
                    legendgroup=cond,
                ),
                row=1,
                col=j + 1,
            )
            pfig.add_trace(
                go.Scatter(
                    x=x,
                    y=m,
                    mode="lines+markers",
                    name=name,
                    legendgroup=cond,
                    showlegend=j == 0,
                    line=dict(color=c),
                    customdata=n,
                    hovertemplate=f"{cond} {xlabel} %{{x}}: %{{y:.4f}} (prompts: %{{customdata}})",
                ),
                row=1,
                col=j + 1,
            )
        if metric in ("R", "R_question"):
            ax.axhline(1.0, color="k", lw=0.6, ls=":")
        ax.set_xlabel(xlabel)
        n_max = max(len(a[level][metric]["mean"]) for a in agg.values())
        if n_max <= 12:
            ax.set_xticks(range(1, n_max + 1))
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(label, fontsize=10)
        pfig.update_xaxes(title_text=xlabel, row=1, col=j + 1)
    axes[0].legend(fontsize=8)
    ch = analysis.get("choice", {})
    sub = (
        f"layers {_short(ch.get('layers'))}, heads {_short(ch.get('heads'))}, F: H over {ch.get('entropy_over')} "
        f"keys, ε={ch.get('eps')}; band: {analysis.get('band', '')}"
    )
    fig.suptitle((title + "\n" if title else "") + sub, fontsize=9)
    fig.tight_layout()
    pfig.update_layout(
        title=(title + "<br>" if title else "") + f"<sub>{sub}</sub>", height=420, width=430 * len(panels)
    )
    return fig, pfig


def _short(v: Any) -> str:
    if not v:
        return "?"
    v = list(v)
    if len(v) > 4 and v == list(range(v[0], v[-1] + 1)):
        return f"{v[0]}–{v[-1]}"
    return ",".join(map(str, v))


def model_name(analysis: dict[str, Any]) -> str:
    """A short display name for the analysed model (the last path part of a local directory)."""
    return Path(str(analysis.get("summary", {}).get("model", ""))).name


def found(run_dir: str | Path) -> list[tuple[str, Path, dict[str, Any]]]:
    """The run's attention-shift analyses; raises :class:`MissingInputs` if there is none."""
    res = attention_analyses(run_dir)
    if not res:
        raise MissingInputs(
            f"no attention-shift analysis under {run_dir}: run the attention stage "
            "(cotscope attention, or analyses.attention_shift.analyse_run on a captured run) first"
        )
    return res


def render(run_dir: str | Path) -> list[Path]:
    out = figures_dir(run_dir)
    paths: list[Path] = []
    for key, src, analysis in found(run_dir):
        model = model_name(analysis)
        base = instance_name(NAME, key, DEFAULT)
        for level in ("step", "token"):
            fig, pfig = draw(analysis, level, title=f"Attention shift, {model}")
            name = base if level == "step" else f"{base}_tokens"
            paths += save_pair(
                fig,
                pfig,
                out,
                name,
                module=sys.modules[__name__],
                sources=[src],
                pdf=False,
                title=TITLE if level == "step" else "Attention ratio and focus per generated token",
                instance="" if key == DEFAULT else key,
            )
    return paths


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    print("\n".join(map(str, render(argv[0] if argv else "runs/demo"))))


if __name__ == "__main__":
    main()
