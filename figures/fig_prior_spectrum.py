"""Spectrum of Δ's rows along the hidden dimension against the permutation null.

Left: share of energy per frequency bin (all selected tensors), with the exact null mean (flat).
Middle: cumulative energy against the null. Right: per-layer spectral centroid with the null's
5–95 % band (a centroid above the band = high-frequency drift).

Input: ``prior_analysis.json`` from :func:`analyses.prior.run_prior_analysis` (``spectrum=True``).

    python -m cotscope.figures.fig_prior_spectrum runs/demo        # or: python -m cotscope.figures runs/demo
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from cotscope.figures.common import figure_main, render_each, save_figure

NAME = "prior_spectrum"
SOURCE = ("prior", "prior_analysis.json")  # the stage's RUN/<dir>/<file>; INPUTS finds others
TITLE = "Is the drift high-frequency?"
SECTION = "prior"
INPUTS = ("prior_analysis.json", "*/prior_analysis.json")


def _curves(data: Mapping[str, Any]) -> dict[str, Any]:
    sp = data.get("spectrum") or {}
    if not sp:
        raise ValueError("prior_analysis.json has no spectrum; run compute_prior(..., spectrum=True)")
    E = np.asarray(sp["total"]["energy"])  # Parseval-weighted (interior bins count twice)
    N = np.asarray(sp["null_flat_energy"])
    f = np.arange(len(E)) / (len(E) - 1)
    w = np.full(len(E), 2.0)
    w[0] = 1.0
    if sp["hidden_size"] % 2 == 0:
        w[-1] = 1.0
    per_bin, null_bin = E / w, N / w  # energy per FFT bin: the null is flat
    per = {k: v for k, v in sp["per_layer"].items() if v.get("centroid") is not None}
    layers = sorted(per, key=int)
    return {
        "f": f,
        "E": per_bin / null_bin[1:].mean(),
        "N": null_bin / null_bin[1:].mean(),
        "cE": np.cumsum(E) / E.sum(),
        "cN": np.cumsum(N) / N.sum(),
        "tot": sp["total"],
        "layers": [int(l) for l in layers],
        "per": [per[l] for l in layers],
        "cutoff_f": sp["total"]["cutoff_bins"] / (len(E) - 1),
    }


def _is_zero(data: Mapping[str, Any]) -> bool:
    sp = data.get("spectrum") or {}
    return bool(sp) and sp["total"].get("centroid") is None


def _zero_figure() -> Figure:
    fig = Figure(figsize=(6, 2), constrained_layout=True)
    ax = fig.subplots()
    ax.axis("off")
    ax.text(
        0.5,
        0.5,
        "Δ is exactly zero on every selected tensor:\nthe two backbones are identical (no spectrum)",
        ha="center",
        va="center",
    )
    return fig


def draw(data: Mapping[str, Any]) -> Figure:
    if _is_zero(data):
        return _zero_figure()
    c = _curves(data)
    t = c["tot"]
    fig = Figure(figsize=(13, 4), constrained_layout=True)
    a, b, d = fig.subplots(1, 3)
    a.plot(c["f"], c["E"], lw=0.8, label="Δ (all selected tensors)")
    a.plot(c["f"], c["N"], "k--", lw=1, label="permutation null (mean)")
    a.set(
        xlabel="frequency along hidden dim (1 = Nyquist)",
        ylabel="energy per bin / null mean",
        title="Energy spectrum of Δ's hidden-dim vectors",
    )
    a.legend(fontsize=8)
    b.plot(c["f"], c["cE"], label="Δ")
    b.plot(c["f"], c["cN"], "k--", label="null")
    b.axvline(c["cutoff_f"], color="gray", lw=0.8)
    b.set(xlabel="frequency cutoff", ylabel="cumulative energy share", title="Cumulative energy")
    b.text(
        0.98,
        0.04,
        f"below cutoff: {t['lowpass_fraction']:.3f}\nnull: {t['lowpass_null_mean']:.3f}\n"
        f"p(low-frequency) = {t['p_low']:.3g}",
        transform=b.transAxes,
        ha="right",
        va="bottom",
        fontsize=8,
    )
    b.legend(fontsize=8)
    x = c["layers"]
    d.fill_between(
        x,
        [p["centroid_null_q05"] for p in c["per"]],
        [p["centroid_null_q95"] for p in c["per"]],
        color="gray",
        alpha=0.3,
        label="null 5–95 %",
    )
    d.plot(x, [p["centroid"] for p in c["per"]], "C3-o", ms=3, label="Δ centroid")
    d.set(xlabel="layer", ylabel="spectral centroid (0.5 = flat)", title="Centroid per layer")
    d.text(
        0.02,
        0.04,
        f"all layers: {t['centroid']:.4f}, null {t['centroid_null_mean']:.4f}\np(high-frequency) = {t['p_high']:.3g}",
        transform=d.transAxes,
        va="bottom",
        fontsize=8,
    )
    d.legend(fontsize=8, loc="lower right")
    fig.suptitle(f"Is the drift high-frequency? verdict: {t['verdict']}", fontsize=11)
    return fig


def draw_plotly(data: Mapping[str, Any]):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if _is_zero(data):
        return go.Figure(layout=dict(title="Δ is exactly zero: no spectrum"))
    c = _curves(data)
    fig = make_subplots(1, 3, subplot_titles=("energy share per bin", "cumulative", "centroid per layer"))
    fig.add_trace(go.Scatter(x=c["f"], y=c["E"], name="Δ (per bin / null mean)"), 1, 1)
    fig.add_trace(go.Scatter(x=c["f"], y=c["N"], name="null", line=dict(dash="dash", color="black")), 1, 1)
    fig.add_trace(go.Scatter(x=c["f"], y=c["cE"], name="Δ cumulative"), 1, 2)
    fig.add_trace(go.Scatter(x=c["f"], y=c["cN"], name="null cumulative", line=dict(dash="dash", color="black")), 1, 2)
    fig.add_trace(
        go.Scatter(x=c["layers"], y=[p["centroid_null_q95"] for p in c["per"]], line=dict(width=0), showlegend=False),
        1,
        3,
    )
    fig.add_trace(
        go.Scatter(
            x=c["layers"],
            y=[p["centroid_null_q05"] for p in c["per"]],
            fill="tonexty",
            line=dict(width=0),
            name="null 5–95 %",
        ),
        1,
        3,
    )
    fig.add_trace(go.Scatter(x=c["layers"], y=[p["centroid"] for p in c["per"]], name="Δ centroid"), 1, 3)
    fig.update_layout(title=f"verdict: {c['tot']['verdict']}")
    return fig


def save(data: Mapping[str, Any], out_dir: str | Path, name: str = NAME) -> list[Path]:
    """Write ``<name>.png``/``.pdf`` (matplotlib) and ``<name>.html`` (plotly) into ``out_dir``."""
    return save_figure(data, out_dir, name, draw, draw_plotly)


def render(run_dir: str | Path) -> list[Path]:
    """Regenerate from every ``RUN/<dir>/prior_analysis.json`` (``prior/`` for the stage) into ``RUN/figures``
    (``python -m cotscope.figures RUN``)."""
    return render_each(
        run_dir,
        sys.modules[__name__],
        "prior",
        save,
        "run analyses.prior.run_prior_analysis(reason_dir, vl_dir, RUN/prior) first",
        check=lambda d: None if d.get("spectrum") else "no spectrum in it (compute_prior(..., spectrum=True))",
    )


def main(argv: list[str] | None = None) -> None:
    figure_main(render, argv)


if __name__ == "__main__":
    main()
