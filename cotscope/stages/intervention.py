"""Stage ``intervention``: SmolLM2's CoT direction injected into SmolLM2 and into a VLM (layer × λ sweep with controls).

Results: ``RUN/intervention/{sweep_llm,sweep_vlm}.csv`` and ``intervention.json``; figures come from
``cotscope figures RUN``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cotscope.analyses.artifacts import DirectionSet
from cotscope.analyses.sweeps import paired_gains, read_table
from cotscope.probes.models.loading import LoadedModel
from cotscope.probes.sweep import SweepConfig, direct_prompts, run_sweep, timing, visual_prompts


def ensure_direction(
    llm: LoadedModel,
    path: str | Path,
    *,
    n_pairs: int = 32,
    layers: Sequence[int] | None = None,
    seed: int = 0,
    batch_size: int = 16,
    progress: bool = True,
) -> DirectionSet:
    """Load the direction file at ``path``, or compute a mean-difference CoT direction and save it there.

    The direction is ``mean(cot − direct)`` at the last prompt token of cue pairs (CoT cue vs direct cue) of
    ``n_pairs`` seeded arithmetic problems, per layer (default: every layer), via
    :func:`probes.collect.collect_pairs`.
    """
    from cotscope.analyses.artifacts import DirectionMeta
    from cotscope.probes.collect import collect_pairs
    from cotscope.probes.stimuli import generate_problems, make_pairs

    path = Path(path)
    if path.is_file():
        return DirectionSet.load(path)
    try:
        from cotscope.analyses.directions import mean_difference
    except ImportError:  # the analysis module is optional here

        def mean_difference(cot, direct):
            return (np.asarray(cot, np.float64) - np.asarray(direct, np.float64)).mean(0)

    problems = generate_problems(n_pairs, seed=seed)
    pairs = make_pairs(problems, pairing="cue", with_answers=False)
    layers = llm.check_layers(range(llm.n_layers) if layers is None else layers)
    store = collect_pairs(
        llm,
        pairs,
        path.parent / f".store-{path.stem}",
        layers=layers,
        positions=("last_prompt",),
        batch_size=batch_size,
        progress=progress,
    )
    vecs = {l: mean_difference(*store.paired("last_prompt", l)).astype(np.float32) for l in layers}
    from cotscope.probes.stimuli.arithmetic import problems_hash

    meta = DirectionMeta(
        model_id=llm.model_id,
        model_revision=llm.revision,
        model_type=llm.model_type,
        hidden_size=llm.hidden_size,
        n_layers=llm.n_layers,
        token_rule="last_prompt",
        pairing="cue",
        method="mean_diff",
        sign="cot_positive",
        stimulus_hash=problems_hash(problems)[:16],
        n_pairs=n_pairs,
        extra={"made_by": "probes.sweep.ensure_direction"},
    )
    ds = DirectionSet(vecs, meta)
    ds.save(path)
    return ds


def _load(spec: Any) -> LoadedModel:
    from cotscope.probes.models.loading import load_model

    return spec if isinstance(spec, LoadedModel) else load_model(spec)


def gains_by_layer(table: str | Path, metric: str = "gold_logprob", control: str = "real", **kw: Any) -> list[dict]:
    """Paired gains of ``metric`` over no injection for ``control`` cells, sorted by (layer, λ)."""
    g = [r for r in paired_gains(read_table(table), metric, **kw) if r["control"] == control]
    return sorted(g, key=lambda r: (r["layer"] if r["layer"] is not None else -1, r["lam"] or 0.0))


def summarise_table(table: str | Path, res: dict[str, Any]) -> dict[str, Any]:
    rows = read_table(table)
    base = [r for r in rows if r["control"] == "none"]
    out: dict[str, Any] = {
        "table": str(table),
        "rows": len(rows),
        "prompts": len({r["prompt_id"] for r in rows}),
        "cells": len({r["cell_id"] for r in rows}),
        "seconds": round(res.seconds, 2),
    }
    t = timing(table)
    if t:
        out["seconds_per_row"] = round(t["seconds_per_row"], 3)
        out["seconds_per_cell"] = round(t["seconds_per_row"] * out["prompts"], 2)
    if base:
        out["baseline"] = {
            "accuracy": float(np.mean([r["correct"] for r in base])),
            "gold_logprob": float(np.mean([r["gold_logprob"] for r in base])),
            "n_tokens": float(np.mean([r["n_tokens"] for r in base])),
        }
    for metric in ("gold_logprob", "correct", "n_tokens"):
        gains = paired_gains(rows, metric, method="bootstrap", n_boot=2000, seed=0)
        out[f"gain_{metric}"] = [
            {
                k: (round(v, 4) if isinstance(v, float) else v)
                for k, v in g.items()
                if k in ("cell_id", "control", "layer", "lam", "n", "gain", "ci_low", "ci_high")
            }
            for g in sorted(gains, key=lambda r: (r["control"], r["layer"] or -1, r["lam"] or 0))
        ]
    real = [g for g in out["gain_gold_logprob"] if g["control"] == "real"]
    if real:
        best = max(real, key=lambda g: g["gain"])
        out["best_real_cell"] = best
    return out


def run_demo_sweep(
    llm: Any = "embedded:smollm2",
    target: Any = None,
    direction_path: str | Path | None = None,
    out_dir: str | Path = "runs/demo/intervention",
    *,
    n_prompts: int = 8,
    budget: int = 12,
    layers: Sequence[int] = (6, 12, 18, 24),
    lams: Sequence[float] = (0.3, 0.9),
    controls: Sequence[str] = ("none", "random", "highpass", "unfiltered"),
    control_lams: Sequence[float] | None = (0.9,),
    positions: Sequence[str] = ("first",),
    cutoff: float = 0.1,
    seed: int = 0,
    target_own: Any = None,
    match_norm: bool = True,
    figures: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """The small sweep of ``make demo``: SmolLM2's CoT direction injected into SmolLM2 itself (direct-answer
    text prompts) and into ``target`` (a VLM spec or :class:`LoadedModel`; image prompts of rendered
    expressions; ``None`` skips it). Writes ``sweep_llm.csv``, ``sweep_vlm.csv`` and ``intervention.json``
    under ``out_dir`` (use ``RUN/intervention``: ``python -m cotscope.figures RUN`` then draws the four figures from
    there; ``figures=True`` draws them into ``out_dir/figures`` right away). A missing direction file is
    computed first (:func:`ensure_direction`). Rerunning resumes the tables. ``target_own`` (the target's own CoT
    direction, e.g. ``RUN/directions/vlm_image_mean_diff.safetensors``) adds the paper's ablation control
    ``own_lowpass`` to the target sweep. ``match_norm`` (default on here) rescales every control to the real
    vector's norm, so "which part carries the effect" is not confounded by size (the high-pass part of a CoT
    direction is ~3× the norm of its low-pass part).

    Returns ``{"llm": summary, "vlm": summary | None, "direction": path, "seconds", "title", "report"}``:
    each summary has the baseline, per-cell paired gains with 95% bootstrap CIs (gold log-prob, accuracy,
    length), the best real cell and the cost per row/cell; ``report`` is a markdown paragraph.

    >>> res = run_demo_sweep("embedded:smollm2", llava_smol_dir(), "runs/demo/directions/llm_mean_diff.safetensors",
    ...                      "runs/demo/intervention")                                         # doctest: +SKIP
    """
    from cotscope.analyses.atomic import write_json_atomic
    from cotscope.probes.stimuli import generate_problems
    from cotscope.probes.stimuli.visual import generate_visual_items

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    src = _load(llm)
    dpath = Path(direction_path) if direction_path is not None else out_dir / "llm_mean_diff.safetensors"
    ds = ensure_direction(src, dpath, progress=progress)
    cfg = SweepConfig(
        layers=tuple(layers),
        lams=tuple(lams),
        controls=tuple(controls),
        control_lams=tuple(control_lams) if control_lams is not None else None,
        positions=tuple(positions),
        budget=budget,
        cutoff=cutoff,
        seed=seed,
        rows_per_batch=48,
        match_norm=match_norm,
    )
    problems = generate_problems(n_prompts, seed=seed + 1000, difficulties=("easy",))
    res_llm = run_sweep(src, ds, direct_prompts(problems), out_dir / "sweep_llm.csv", cfg, progress=progress)
    summary: dict[str, Any] = {
        "direction": str(dpath),
        "config": cfg.to_dict(),
        "llm": summarise_table(out_dir / "sweep_llm.csv", res_llm),
        "vlm": None,
    }
    summary["llm"]["model"] = src.model_id
    if target is not None:
        tgt = _load(target)
        items = generate_visual_items(n_prompts, seed=seed + 2000, kinds=("expression",))
        tcfg = cfg if target_own is None else dataclasses.replace(cfg, controls=tuple(cfg.controls) + ("own_lowpass",))
        res_vlm = run_sweep(
            tgt, ds, visual_prompts(items), out_dir / "sweep_vlm.csv", tcfg, own=target_own, progress=progress
        )
        summary["vlm"] = summarise_table(out_dir / "sweep_vlm.csv", res_vlm)
        summary["vlm"]["model"] = tgt.model_id
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    summary["title"] = "Latent intervention: injecting the CoT direction (layer × λ sweep with controls)"
    summary["report"] = demo_report(summary)
    if figures:
        summary["figures"] = [str(p) for p in render_figures(out_dir)]
    write_json_atomic(out_dir / "intervention.json", summary)
    return summary


def render_figures(out_dir: str | Path) -> list[Path]:
    """Draw the four intervention figures for every sweep table in ``out_dir`` (into ``out_dir/figures``)."""
    import importlib

    paths: list[Path] = []
    for name in ("fig_injection_layers", "fig_injection_strength", "fig_length_vs_accuracy", "fig_injection_controls"):
        mod = importlib.import_module(f"cotscope.figures.{name}")
        paths += mod.render_tables(sorted(Path(out_dir).glob("sweep_*.csv")), Path(out_dir) / "figures")
    return paths


def _fmt_gain(g: dict[str, Any] | None, digits: int = 3) -> str:
    if not g:
        return "n/a"
    return f"{g['gain']:+.{digits}f} [{g['ci_low']:+.{digits}f}, {g['ci_high']:+.{digits}f}]"


def _part(name: str, s: dict[str, Any] | None, cfg: dict[str, Any]) -> str:
    if not s:
        return f"- {name}: not run."
    lam_max = max(cfg["lams"])
    lp = {(g["control"], g["layer"], g["lam"]): g for g in s["gain_gold_logprob"]}
    acc = {(g["control"], g["layer"], g["lam"]): g for g in s["gain_correct"]}
    layers = sorted({g["layer"] for g in s["gain_gold_logprob"] if g["control"] == "real" and g["layer"] is not None})
    per_layer = "; ".join(f"L{l}: {_fmt_gain(lp.get(('real', l, lam_max)))}" for l in layers)
    ctrl_lam = max(cfg["control_lams"] or cfg["lams"])
    ctrls = []
    for c in ("random", "highpass", "unfiltered", "own_lowpass"):
        gs = [g for g in s["gain_gold_logprob"] if g["control"] == c and g["lam"] == ctrl_lam]
        if gs:
            ctrls.append(
                f"{c} " + ", ".join(f"L{g['layer']} {g['gain']:+.3f}" for g in sorted(gs, key=lambda g: g["layer"]))
            )
    b = s.get("baseline", {})
    best = s.get("best_real_cell")
    n_sig = sum(1 for g in s["gain_gold_logprob"] if g["control"] == "real" and (g["ci_low"] > 0 or g["ci_high"] < 0))
    n_real = sum(1 for g in s["gain_gold_logprob"] if g["control"] == "real")
    acc_best = acc.get(("real", best["layer"], best["lam"])) if best else None
    return (
        f"- **{name}** ({s['model']}; {s['prompts']} prompts × {s['cells']} cells): no-injection accuracy "
        f"{b.get('accuracy', float('nan')):.2f}, log p(gold) {b.get('gold_logprob', float('nan')):.2f}, length "
        f"{b.get('n_tokens', float('nan')):.1f} tokens. Δ log p(gold) at λ={lam_max:g} per layer (95% bootstrap CI "
        f"over prompts): {per_layer}. Best real cell {best['cell_id'] if best else 'n/a'}: {_fmt_gain(best)} "
        f"(Δ accuracy {_fmt_gain(acc_best, 2)}). CIs excluding 0: {n_sig}/{n_real} real cells. Controls at "
        f"λ={ctrl_lam:g}: {'; '.join(ctrls) or 'none run'}. Cost: {s.get('seconds_per_row', float('nan')):.2f} s per "
        f"row, {s.get('seconds_per_cell', float('nan')):.1f} s per cell ({s['prompts']} prompts)."
    )


def demo_report(summary: dict[str, Any]) -> str:
    """Markdown paragraph for ``report.md`` from :func:`run_demo_sweep`'s summary."""
    cfg = summary["config"]
    head = (
        f"SmolLM2's CoT direction (`{Path(summary['direction']).name}`, per-layer mean difference) was injected "
        f"during generation at positions {'+'.join(cfg['positions'])} with norm preservation "
        f"{'on' if cfg['renorm'] else 'off'}, low-passed at {cfg['cutoff']} of the bins ({cfg['filter']}), layers "
        f"{cfg['layers']} × λ {cfg['lams']}, with a reasoning budget of {cfg['budget']} tokens followed by the "
        f"teacher-forced answer (score = log p of the gold digits). Gains are paired with the same prompt's "
        f"no-injection row. Controls are "
        f"{'rescaled to the norm of the real vector' if cfg.get('match_norm') else 'at their natural norms'}."
    )
    return "\n".join(
        [
            head,
            "",
            _part("SmolLM2 → SmolLM2 (direct-answer prompts)", summary.get("llm"), cfg),
            _part("SmolLM2 → VLM (image prompts)", summary.get("vlm"), cfg),
        ]
    )
