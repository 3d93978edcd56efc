"""The attention-shift demo: CoT vs direct on a few visual problems → stored run, analysis, figures, summary.

>>> from cotscope.probes.models.loading import load_model                                   # doctest: +SKIP
>>> summary = run_attention_demo(load_model("embedded:smolvlm"), None, "runs/demo")  # doctest: +SKIP
>>> summary["cot"]["R_per_step"][:3]                                               # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cotscope.analyses.atomic import write_json_atomic
from cotscope.analyses.attention_shift import analyse_run
from cotscope.probes.attention import CaptureRequest, capture_run
from cotscope.probes.models.loading import LoadedModel

CONDITIONS = ("cot", "direct")
ANALYSIS_FILE = "attention_shift.json"


def attention_requests(items: Sequence[Any], conditions: Sequence[str] = CONDITIONS) -> list[CaptureRequest]:
    """Two requests per visual item (``cot_prompt`` / ``direct_prompt``); the item's question marks question keys."""
    reqs = []
    for it in items:
        for cond in conditions:
            if cond not in CONDITIONS:
                raise ValueError(f"unknown condition {cond!r}; choose from {CONDITIONS}")
            prompt = it.cot_prompt if cond == "cot" else it.direct_prompt
            reqs.append(
                CaptureRequest(
                    id=f"{it.id}:{cond}",
                    prompt=prompt,
                    image=it.image,
                    question=it.question or prompt,
                    condition=cond,
                    meta={"item_id": it.id, "kind": it.kind, "answer": int(it.answer)},
                )
            )
    return reqs


def _first(vals: list, n: int) -> list:
    return [None if v is None else round(float(v), 6) for v in vals[:n]]


def _aggregate(analysis: Any) -> dict[str, Any]:
    """``aggregate`` of an :class:`~cotscope.analyses.results.AttentionResult` or of its stored dict form."""
    return analysis["aggregate"] if isinstance(analysis, dict) else analysis.aggregate


def summarise(analysis: dict[str, Any], n_steps: int = 6) -> dict[str, Any]:
    """Headline numbers per condition: mean R/F/image share per reasoning step, pooled slopes, and IVT-LR checks."""
    out: dict[str, Any] = {}
    for cond, a in _aggregate(analysis).items():
        out[cond] = {
            "n_traces": a["n_traces"],
            "mean_reasoning_steps": float(np.mean(a["n_steps"])),
            "mean_tokens": float(np.mean(a["n_tokens"])),
            "R_per_step": _first(a["step"]["R"]["mean"], n_steps),
            "F_per_step": _first(a["step"]["F"]["mean"], n_steps),
            "image_share_per_step": _first(a["step"]["image_share"]["mean"], n_steps),
            "prompts_per_step": a["step"]["R"]["n"][:n_steps],
            "slope_R_per_step": a["slope_step"]["R"],
            "slope_F_per_step": a["slope_step"]["F"],
            "slope_R_per_token": a["slope_token"]["R"],
            "slope_F_per_token": a["slope_token"]["F"],
            "F_image_per_step": _first(a["step"].get("F_image", {}).get("mean", []), n_steps),
            "slope_F_image_per_step": a["slope_step"].get("F_image"),
            "mean_R": float(np.nanmean([v for v in a["token"]["R"]["mean"] if v is not None])),
            "mean_F": float(np.nanmean([v for v in a["token"]["F"]["mean"] if v is not None])),
        }
        if "R_question" in a["step"]:  # the length-robust variants (question-text R, H / log N)
            out[cond].update(
                {
                    "R_question_per_step": _first(a["step"]["R_question"]["mean"], n_steps),
                    "F_norm_per_step": _first(a["step"]["F_norm"]["mean"], n_steps),
                    "slope_R_question_per_step": a["slope_step"]["R_question"],
                    "slope_F_norm_per_step": a["slope_step"]["F_norm"],
                    "slope_R_question_per_token": a["slope_token"]["R_question"],
                    "slope_F_norm_per_token": a["slope_token"]["F_norm"],
                }
            )
    cot = out.get("cot")
    if cot:
        R = [v for v in cot["R_per_step"] if v is not None]
        # IVT-LR (METHODS §5): explicit reasoning keeps R below 1 with flat F; latent reasoning starts visual and
        # shifts to text (R falls) while F rises. The checks state what the measured CoT curves show.
        out["ivt_lr"] = {
            "cot_R_below_1_all_steps": bool(R) and max(R) < 1.0,
            "cot_R_falls": cot["slope_R_per_step"] is not None and cot["slope_R_per_step"] < 0,
            "cot_F_rises": cot["slope_F_per_step"] is not None and cot["slope_F_per_step"] > 0,
            "cot_F_image_rises": cot["slope_F_image_per_step"] is not None and cot["slope_F_image_per_step"] > 0,
        }
        if "slope_R_question_per_step" in cot:
            out["ivt_lr"].update(
                {
                    "cot_R_question_falls": cot["slope_R_question_per_step"] is not None
                    and cot["slope_R_question_per_step"] < 0,
                    "cot_F_norm_rises": cot["slope_F_norm_per_step"] is not None and cot["slope_F_norm_per_step"] > 0,
                }
            )
    return out


def add_image_focus(analysis: dict[str, Any], image_analysis: dict[str, Any]) -> None:
    """Add ``F_image`` (focus with H over the image keys only) curves and slopes from a second analysis.

    F over all keys falls mechanically as the context grows (more keys → higher entropy); the image keys are a
    fixed set, so ``F_image`` shows focus changes without that confound.
    """
    for cond, a in _aggregate(analysis).items():
        b = _aggregate(image_analysis)[cond]
        for level in ("step", "token"):
            a[level]["F_image"] = b[level]["F"]
            a[f"slope_{level}"]["F_image"] = b[f"slope_{level}"]["F"]


def report_title(summary: dict[str, Any]) -> str:
    return f"Attention shift (IVT-LR §4.4) — {Path(str(summary.get('model', ''))).name}"


def report_markdown(summary: dict[str, Any], heading: bool = True) -> str:
    """A ``report.md`` section from :func:`run_attention_demo`'s summary: per-step table and the IVT-LR checks."""

    def fmt(v: Any) -> str:
        return "–" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ([f"## {report_title(summary)}", ""] if heading else []) + [
        f"{summary.get('n_items')} visual problems, CoT vs direct, greedy ≤ {summary.get('max_new_tokens')} "
        f"tokens; rows averaged over layers {_span(summary.get('layers'))} and heads {_span(summary.get('heads'))}; "
        f"F over {summary.get('entropy_over')} keys. Reasoning step = sentence/line (or explicit `Step k`).",
        "",
    ]
    conds = [c for c in CONDITIONS if c in summary]
    n = max((len(summary[c]["R_per_step"]) for c in conds), default=0)
    robust = all("R_question_per_step" in summary[c] for c in conds) and bool(conds)
    keys = ["R_per_step", "F_per_step", "F_image_per_step"]
    heads = ["R", "F", "F img"]
    if robust:  # the length-robust definitions beside the current ones
        keys += ["R_question_per_step", "F_norm_per_step"]
        heads += ["R_q", "F_norm"]
    keys.append("prompts_per_step")
    heads.append("n")
    lines += [
        "| step | " + " | ".join(f"{h} {c}" for c in conds for h in heads) + " |",
        "|---|" + "---|" * (len(heads) * len(conds)),
    ]
    for j in range(n):
        cells = []
        for c in conds:
            s = summary[c]
            cells += [fmt(s[k][j] if j < len(s.get(k) or []) else None) for k in keys]
        lines.append(f"| {j + 1} | " + " | ".join(cells) + " |")
    lines.append("")
    if robust:
        lines += [
            "R and F are the current (IVT-LR §4.4) definitions: R = image mass / text mass over every text key "
            "(template, attention-sink and generated tokens included), F = 1 / H. The length-robust definitions: "
            "R_q = image mass / question-text mass (template and sink keys excluded), F_norm = 1 / (H / log N) "
            "with N the number of keys H is over.",
            "",
        ]
    for c in conds:
        s = summary[c]
        lines.append(
            f"- **{c}**: {s['mean_reasoning_steps']:.2g} steps / {s['mean_tokens']:.3g} tokens on average; "
            f"slope per step R {fmt(s['slope_R_per_step'])}, F {fmt(s['slope_F_per_step'])}; "
            f"per token R {fmt(s['slope_R_per_token'])}, F {fmt(s['slope_F_per_token'])}; "
            f"F over image keys per step {fmt(s.get('slope_F_image_per_step'))}"
            + (
                f"; length-robust variants per step: R against question text {fmt(s['slope_R_question_per_step'])}"
                f" (step 1 {fmt(s['R_question_per_step'][0] if s['R_question_per_step'] else None)}), "
                f"F with H / log N {fmt(s['slope_F_norm_per_step'])}"
                if "slope_R_question_per_step" in s
                else ""
            )
            + "."
        )
    if "ivt_lr" in summary:
        chk = summary["ivt_lr"]
        lines.append(
            f"- IVT-LR explicit-reasoning pattern (R < 1 throughout, F flat): R < 1 at every CoT step: "
            f"{chk['cot_R_below_1_all_steps']}; latent-reasoning pattern (R falls, F rises): R falls "
            f"{chk['cot_R_falls']}, F rises {chk['cot_F_rises']} (H over image keys: "
            f"{chk.get('cot_F_image_rises')})"
            + (
                f"; with the length-robust definitions: R_q falls {chk['cot_R_question_falls']}, F_norm rises "
                f"{chk['cot_F_norm_rises']}"
                if "cot_R_question_falls" in chk
                else ""
            )
            + ". Note: F over all keys falls mechanically as the context grows."
        )
    return "\n".join(lines) + "\n"


def _span(v: Any) -> str:
    v = list(v or [])
    if len(v) > 3 and v == list(range(v[0], v[-1] + 1)):
        return f"{v[0]}–{v[-1]}"
    return ",".join(map(str, v))


def run_attention_demo(
    model: LoadedModel | str,
    items: Sequence[Any] | None,
    out_dir: str | Path,
    *,
    n_items: int = 6,
    seed: int = 0,
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
    max_new_tokens: int = 96,
    k: int | None = None,
    max_select_steps: int = 4,
    switch: str | None = None,
    store_dtype: str = "float16",
    entropy_over: str = "all",
    figures: bool = True,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Capture CoT and direct generations for ``items`` (default: ``n_items`` bundled visual problems), analyse them
    and draw the three attention figures.

    ``switch``: how attention rows are captured (:func:`probes.attention.capture_run`; ``None`` = ``"layers"`` here,
    ``"traced"`` when ``model`` runs remotely).
    ``k``: image tokens picked per reasoning step (default: half the image tokens spread over the first
    ``max_select_steps`` steps).

    Writes ``out_dir/attention/store`` (the run), ``out_dir/analysis/attention_shift.json`` and
    ``out_dir/figures/attention_*``; returns summary numbers (also stored under ``"summary"`` in the analysis),
    with ``"title"`` and ``"report"`` (a markdown paragraph) for ``cotscope.report``.
    """
    from cotscope.probes.models.loading import load_model

    if isinstance(model, (str, Path)):
        model = load_model(model)
    if not model.is_vlm:
        raise ValueError(
            f"{model.model_id} is a text-only model; the attention-shift demo needs a VLM "
            "(e.g. load_model('embedded:smolvlm'))"
        )
    if items is None:
        from cotscope.probes.stimuli.visual import generate_visual_items

        items = generate_visual_items(n_items, seed=seed)
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    run = capture_run(
        model,
        attention_requests(items),
        out_dir / "attention" / "store",
        layers=layers,
        heads=heads,
        max_new_tokens=max_new_tokens,
        switch=switch,
        store_dtype=store_dtype,
        overwrite=overwrite,
        progress=progress,
    )
    t_capture = time.perf_counter() - t0
    n_img = min(r["n_keys_by_type"]["image"] for r in run.records)
    # default k: the first `max_select_steps` reasoning steps together pick at most half of the image tokens
    k_eff = (k if k is not None else max(1, n_img // (2 * max_select_steps))) if n_img else None
    analysis = analyse_run(
        run, conditions=list(CONDITIONS), entropy_over=entropy_over, k=k_eff, max_select_steps=max_select_steps
    )
    if entropy_over == "all" and n_img:
        add_image_focus(analysis, analyse_run(run, conditions=list(CONDITIONS), entropy_over="image"))
    summary = {
        "model": model.model_id,
        "n_items": len(items),
        "layers": run.layers,
        "heads": run.heads,
        "switch": run.manifest["switch"],
        "max_new_tokens": max_new_tokens,
        "k": k_eff,
        "entropy_over": entropy_over,
        "store": str(run.path),
        "capture_seconds": round(t_capture, 2),
        **summarise(analysis),
    }
    summary["title"] = report_title(summary)
    summary["report"] = report_markdown(summary, heading=False)
    analysis.extra["summary"] = summary
    analysis.extra["store"] = str(Path("..") / "attention" / "store")  # relative to the analysis folder
    write_json_atomic(out_dir / "analysis" / ANALYSIS_FILE, analysis)
    if figures:
        from cotscope.figures import fig_attention_layer_step, fig_attention_ratio_focus, fig_selected_patches

        paths = []
        for mod in (fig_attention_ratio_focus, fig_attention_layer_step, fig_selected_patches):
            paths += [str(p) for p in mod.render(out_dir)]
        summary["figures"] = paths
    return summary


def attention_stage(
    run_dir: str | Path, summary: dict[str, Any] | None = None, model: Any = None, **kwargs: Any
) -> dict[str, Any]:
    """``make demo`` stage: the reference VLM when shipped, else the
    LLaVA-SmolLM2 stand-in, on ``config["attention_items"]`` (default 6) bundled visual problems."""
    from cotscope.stages.crossmodel import default_vlm_spec

    cfg = (summary or {}).get("config", {})
    return run_attention_demo(
        model if model is not None else default_vlm_spec(),
        None,
        run_dir,
        n_items=int(cfg.get("attention_items", 6)),
        seed=int(cfg.get("seed", 0)),
        **kwargs,
    )
