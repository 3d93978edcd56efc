"""cos(g, Δ) per module type over fine-tuning steps (mean over layers, min–max band).

Input: the tidy table from :func:`probes.drift.log_gradient_alignment` (``.json`` or ``.csv``).

    python -m cotscope.figures.fig_drift_cosine runs/demo        # or: python -m cotscope.figures runs/demo
"""

from __future__ import annotations

import collections
import csv
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from cotscope.figures.common import figure_main, render_each, save_figure

NAME = "drift_cosine"
SOURCE = ("prior", "drift_cos.csv")  # the stage's RUN/<dir>/<file>; INPUTS finds others
TITLE = "cos(g, Δ) over fine-tuning steps"
SECTION = "prior"
INPUTS = ("drift_cos.csv", "*/drift_cos.csv")


def load_table(path: str | Path) -> list[dict]:
    path = Path(path)
    if path.suffix == ".csv":
        with open(path, newline="") as fh:
            return [
                {k: (float(v) if k not in ("param", "module") and v not in ("", "None") else v) for k, v in r.items()}
                for r in csv.DictReader(fh)
            ]
    return json.loads(path.read_text())


def _series(rows: Sequence[Mapping[str, Any]], key: str) -> dict[str, dict[str, np.ndarray]]:
    if not rows:
        raise ValueError("the cos(g, Δ) table is empty")
    by = collections.defaultdict(lambda: collections.defaultdict(list))
    for r in rows:
        if r.get(key) is not None and r.get(key) != "":
            by[r["module"]][int(r["step"])].append(float(r[key]))
    out = {}
    for m, steps in sorted(by.items()):
        s = sorted(steps)
        v = [steps[i] for i in s]
        out[m] = {
            "step": np.array(s),
            "mean": np.array([np.mean(x) for x in v]),
            "lo": np.array([np.min(x) for x in v]),
            "hi": np.array([np.max(x) for x in v]),
        }
    return out


def draw(rows: Sequence[Mapping[str, Any]]) -> Figure:
    """Left: raw cos(g, Δ); right (if the table has it): cos of the guided gradient."""
    guided = any("cos_guided" in r for r in rows)
    fig = Figure(figsize=(11 if guided else 6, 4), constrained_layout=True)
    axes = fig.subplots(1, 2 if guided else 1, squeeze=False)[0]
    for ax, key, title in zip(
        axes, ("cos", "cos_guided"), ("cos(g, Δ) of the raw gradient", "cos(g̃, Δ) after the rule")
    ):
        for i, (m, s) in enumerate(_series(rows, key).items()):
            ax.plot(s["step"], s["mean"], color=f"C{i}", label=m, marker="o", ms=3)
            ax.fill_between(s["step"], s["lo"], s["hi"], color=f"C{i}", alpha=0.15)
        ax.axhline(0, color="k", lw=0.6)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set(xlabel="optimizer step", ylabel="cosine (mean over layers, band = min–max)", title=title)
        ax.legend(fontsize=7, ncol=2)
    return fig


def draw_plotly(rows: Sequence[Mapping[str, Any]]):
    import plotly.graph_objects as go

    fig = go.Figure()
    for key, dash in (("cos", None), ("cos_guided", "dash")):
        if key == "cos_guided" and not any(key in r for r in rows):
            continue
        for m, s in _series(rows, key).items():
            fig.add_trace(go.Scatter(x=s["step"], y=s["mean"], name=f"{m} ({key})", line=dict(dash=dash)))
    fig.update_layout(title="cos(g, Δ) over steps", xaxis_title="step", yaxis_title="cosine (mean over layers)")
    return fig


def save(rows: Sequence[Mapping[str, Any]], out_dir: str | Path, name: str = NAME) -> list[Path]:
    """Write ``<name>.png``/``.pdf`` (matplotlib) and ``<name>.html`` (plotly) into ``out_dir``."""
    return save_figure(rows, out_dir, name, draw, draw_plotly)


def render(run_dir: str | Path) -> list[Path]:
    """Regenerate from every ``RUN/<dir>/drift_cos.csv`` (``prior/`` for the stage) into ``RUN/figures``
    (``python -m cotscope.figures RUN``)."""
    return render_each(
        run_dir,
        sys.modules[__name__],
        "prior",
        save,
        "run probes.drift.run_drift_alignment(vlm_dir, RUN/prior/prior.safetensors, RUN/prior) first",
        load=load_table,
    )


def main(argv: list[str] | None = None) -> None:
    figure_main(render, argv)


if __name__ == "__main__":
    main()
