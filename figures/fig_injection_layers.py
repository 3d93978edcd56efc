"""Gain from injecting the CoT direction vs the injection layer, relative to no injection (cf. L2V-CoT Fig. 5).

Reads every injection sweep table of the run (``<table>.csv`` + its ``cotscope.sweep`` sidecar, e.g. the demo's
``intervention/sweep_*.csv``); one figure per folder of tables (``injection_layers.png`` for ``intervention/``,
``injection_layers_<folder>.png`` otherwise). One column per sweep table (e.g. SmolLM2 → SmolLM2, SmolLM2 → VLM),
one row per metric (teacher-forced gold log-prob, accuracy); one line per strength λ; error bars are 95% bootstrap
CIs over prompts (paired with the no-injection row of the same prompt). Draws from stored sweep tables only.

>>> figs = render_tables(["runs/demo/intervention/sweep_llm.csv"], "runs/demo/figures")   # doctest: +SKIP
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cotscope.analyses.sweeps import paired_gains, read_table, table_config
from cotscope.figures.common import (
    MissingInputs,
    figure_main,
    figures_dir,
    instance_name,
    save_matplotlib,
    save_pair,
    save_plotly,
)
from cotscope.figures.inputs import SWEEP_INPUTS, sweep_tables

NAME = "injection_layers"
TITLE = "Gain over no injection vs injection layer"
SECTION = "intervention"
INPUTS = SWEEP_INPUTS
METRICS = {"gold_logprob": "Δ log p(gold) after budget", "correct": "Δ accuracy", "n_tokens": "Δ length (tokens)"}


def short(model_id: str) -> str:
    """``HuggingFaceTB/SmolLM2-135M-Instruct (…)`` → ``SmolLM2-135M-Instruct``; paths → last component."""
    return str(model_id).split(" (")[0].rstrip("/").split("/")[-1]


def table_label(path: str | Path) -> str:
    cfg = table_config(path)
    src = (cfg.get("direction") or {}).get("model_id", "?")
    tgt = (cfg.get("target") or {}).get("model_id", "?")
    return f"{short(src)} → {short(tgt)}"


def load_tables(paths: Sequence[str | Path]) -> dict[str, list[dict]]:
    out = {}
    for p in paths:
        if not Path(p).is_file():
            raise MissingInputs(f"{p} not found: run a sweep first (probes.sweep.run_sweep)")
        out[f"{table_label(p)} [{Path(p).stem}]"] = read_table(p)
    if not out:
        raise MissingInputs("no sweep tables given")
    return out


def find_tables(run_dir: str | Path) -> dict[str, list[Path]]:
    """The run's sweep tables by folder (``intervention`` for the demo's); raises :class:`MissingInputs` if none."""
    groups = sweep_tables(run_dir)
    if not groups:
        raise MissingInputs(
            f"no injection sweep table (<table>.csv + .csv.meta.json) under {run_dir}; "
            "run a sweep first (cotscope sweep, cs.sweep or the intervention stage)"
        )
    return groups


def draw(tables: Mapping[str, list[dict]], metrics: Sequence[str] = ("gold_logprob", "correct"), control: str = "real"):
    import matplotlib.pyplot as plt
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    labels = list(tables)
    fig, axes = plt.subplots(len(metrics), len(labels), figsize=(5.2 * len(labels), 3.3 * len(metrics)), squeeze=False)
    pfig = make_subplots(
        rows=len(metrics), cols=len(labels), subplot_titles=[f"{lab}" for m in metrics for lab in labels]
    )
    for j, lab in enumerate(labels):
        rows = tables[lab]
        for i, m in enumerate(metrics):
            ax = axes[i][j]
            gains = [g for g in paired_gains(rows, m) if g["control"] == control and g["layer"] is not None]
            lams = sorted({g["lam"] for g in gains})
            for k, lam in enumerate(lams):
                gs = sorted((g for g in gains if g["lam"] == lam), key=lambda g: g["layer"])
                x = [g["layer"] + (k - (len(lams) - 1) / 2) * 0.25 for g in gs]
                y = [g["gain"] for g in gs]
                lo = [g["gain"] - g["ci_low"] if g["ci_low"] == g["ci_low"] else 0 for g in gs]
                hi = [g["ci_high"] - g["gain"] if g["ci_high"] == g["ci_high"] else 0 for g in gs]
                ax.errorbar(x, y, yerr=[lo, hi], marker="o", ms=4, capsize=3, lw=1.2, label=f"λ={lam:g}")
                pfig.add_trace(
                    go.Scatter(
                        x=[g["layer"] for g in gs],
                        y=y,
                        mode="lines+markers",
                        name=f"λ={lam:g}",
                        legendgroup=f"{lam}",
                        showlegend=(i == 0 and j == 0),
                        error_y=dict(type="data", symmetric=False, array=hi, arrayminus=lo),
                        hovertext=[f"{g['cell_id']} n={g['n']}" for g in gs],
                    ),
                    row=i + 1,
                    col=j + 1,
                )
            ax.axhline(0, color="k", lw=0.8, ls="--")
            ax.set_xlabel("injection layer")
            ax.set_ylabel(METRICS.get(m, f"Δ {m}"))
            n = max((g["n"] for g in gains), default=0)
            ax.set_title(f"{lab}\n(n={n} prompts, 95% CI)", fontsize=9)
            if lams:
                ax.legend(fontsize=7)
            pfig.update_xaxes(title_text="injection layer", row=i + 1, col=j + 1)
            pfig.update_yaxes(title_text=METRICS.get(m, m), row=i + 1, col=j + 1)
    fig.suptitle(f"Gain over no injection vs layer ({control} vector)", fontsize=11)
    fig.tight_layout()
    pfig.update_layout(title=f"Gain over no injection vs layer ({control} vector)", height=330 * len(metrics))
    return fig, pfig


def render_sweep_figure(
    draw_fn, name: str, paths: Sequence[str | Path], out_dir: str | Path, module: Any = None, instance: str = ""
) -> list[Path]:
    """Draw one sweep figure from stored tables and save PNG + HTML (shared by the four injection figures);
    with ``module``, also ``<name>.meta.json`` naming the tables."""
    if not paths:
        return []
    fig, pfig = draw_fn(load_tables(paths))
    if module is None:
        return save_matplotlib(fig, out_dir, name, pdf=False) + [save_plotly(pfig, out_dir, name)]
    return save_pair(
        fig,
        pfig,
        out_dir,
        name,
        module=module,
        instance=instance,
        pdf=False,
        sources=[q for p in paths for q in (Path(p), Path(f"{p}.meta.json"))],
    )


def render_run(run_dir: str | Path, module: Any) -> list[Path]:
    """One figure of ``module`` per folder of sweep tables in the run."""
    out = figures_dir(run_dir)
    return [
        p
        for key, tables in find_tables(run_dir).items()
        for p in render_sweep_figure(
            module.draw,
            instance_name(module.NAME, key, "intervention"),
            tables,
            out,
            module=module,
            instance="" if key == "intervention" else key,
        )
    ]


def render_tables(paths: Sequence[str | Path], out_dir: str | Path) -> list[Path]:
    return render_sweep_figure(draw, NAME, paths, out_dir, module=sys.modules[__name__])


def render(run_dir: str | Path) -> list[Path]:
    return render_run(run_dir, sys.modules[__name__])


def main(argv: list[str] | None = None) -> None:
    return figure_main(render, argv)


if __name__ == "__main__":
    raise SystemExit(main())
