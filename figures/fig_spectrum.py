"""Energy spectrum of the CoT direction (mean difference, best layer) along the hidden dimension, the effect of
low-pass filtering, and the random-permutation null (cf. L2V-CoT Fig. 1b/c); one figure per stored per-layer
analysis whose mean-difference direction file is present.

>>> python -m cotscope.figures.fig_spectrum runs/demo          # doctest: +SKIP
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from cotscope.analyses.artifacts import DirectionSet
from cotscope.analyses.spectral import cumulative_energy, cutoff_bins, energy_spectrum, lowpass
from cotscope.figures.common import MissingInputs, figures_dir, instance_name, save_pair, skip_instance
from cotscope.figures.inputs import LAYER_ANALYSIS_INPUTS, layer_analyses

NAME = "spectrum"
TITLE = "Spectrum of the CoT direction"
SECTION = "llm"
INPUTS = LAYER_ANALYSIS_INPUTS


def null_band(v: np.ndarray, n_perm: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    curves = np.stack([cumulative_energy(v[rng.permutation(v.shape[0])]) for _ in range(n_perm)])
    return np.quantile(curves, 0.05, 0), np.median(curves, 0), np.quantile(curves, 0.95, 0)


def draw(v: np.ndarray, cutoff: int | float = 0.1, title: str = ""):
    import matplotlib.pyplot as plt
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    v = np.asarray(v, dtype=np.float64)
    d = v.shape[0]
    c = cutoff_bins(d, cutoff)
    e = energy_spectrum(v)
    cum = cumulative_energy(v)
    lo, med, hi = null_band(v)
    bins = np.arange(len(e))
    frac = bins / (len(e) - 1)
    lp = lowpass(v, c)
    fig, ax = plt.subplots(1, 3, figsize=(14, 3.8))
    ax[0].semilogy(bins, e + 1e-12, lw=0.8)
    ax[0].axvline(c, color="k", ls="--", lw=0.8, label=f"cutoff {c} bins")
    ax[0].set_xlabel("frequency bin (rfft over hidden dim)")
    ax[0].set_ylabel("energy |rfft(v)|²")
    ax[0].legend(fontsize=8)
    ax[0].set_title("energy spectrum")
    ax[1].plot(frac, cum, label="CoT direction")
    ax[1].fill_between(frac, lo, hi, color="grey", alpha=0.3, label="permuted coords (5–95%)")
    ax[1].plot(frac, med, color="grey", lw=0.8)
    ax[1].axvline(c / (len(e) - 1), color="k", ls="--", lw=0.8)
    ax[1].set_xlabel("cutoff (fraction of bins)")
    ax[1].set_ylabel("energy fraction below cutoff")
    ax[1].legend(fontsize=8)
    ax[1].set_title("cumulative energy vs null")
    idx = np.arange(d)
    ax[2].plot(idx, v, lw=0.6, alpha=0.6, label="raw")
    ax[2].plot(idx, lp, lw=1.2, label=f"low-pass ({c} bins)")
    ax[2].set_xlabel("hidden dimension")
    ax[2].legend(fontsize=8)
    ax[2].set_title(f"low-pass keeps {float(lp @ lp / (v @ v)):.0%} of energy")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    pfig = make_subplots(rows=1, cols=2, subplot_titles=["energy spectrum", "cumulative energy vs permutation null"])
    pfig.add_trace(go.Scatter(x=bins, y=e, name="energy"), row=1, col=1)
    pfig.add_trace(go.Scatter(x=frac, y=hi, line=dict(width=0), showlegend=False), row=1, col=2)
    pfig.add_trace(go.Scatter(x=frac, y=lo, fill="tonexty", line=dict(width=0), name="null 5–95%"), row=1, col=2)
    pfig.add_trace(go.Scatter(x=frac, y=cum, name="CoT direction"), row=1, col=2)
    pfig.update_yaxes(type="log", row=1, col=1)
    pfig.update_layout(title=title)
    return fig, pfig


def _cutoff(a) -> int | float:
    """The analysis' cutoff: its bin count at the best layer (every writer stores it), else its fraction."""
    row = a.data["layers"].get(str(a.data["best_layer"])) or {}
    return int(row["cutoff_bins"]) if row.get("cutoff_bins") else float(a.data.get("cutoff", 0.1))


def render(run_dir: str | Path) -> list[Path]:
    found = layer_analyses(run_dir)
    if not found:
        raise MissingInputs(f"no per-layer analysis under {run_dir}: run `cotscope analyse` or an LLM stage first")
    out = figures_dir(run_dir)
    paths: list[Path] = []
    for a in found:
        name = instance_name(NAME, a.name, "llm")
        f = a.direction_file("mean_diff")
        if f is None:
            skip_instance(name, f"{a.path}: its mean-difference direction file was not found")
            continue
        ds = DirectionSet.load(f)
        layer = a.data["best_layer"]
        fig, pfig = draw(
            ds[layer], cutoff=_cutoff(a), title=f"CoT direction (mean diff), {a.model_short} ({a.name}), layer {layer}"
        )
        paths += save_pair(fig, pfig, out, name, module=sys.modules[__name__], sources=[a.path, f], instance=a.name)
    if not paths:
        raise MissingInputs("no per-layer analysis has its mean-difference direction file beside it")
    return paths


if __name__ == "__main__":
    print("\n".join(map(str, render(sys.argv[1] if len(sys.argv) > 1 else "runs/demo"))))
