"""`make demo`: the main job on the embedded defaults, into ``runs/demo/``.

Stages (each reuses stored results when they exist):
1. LLM: paired CoT/direct activations of SmolLM2 → per-layer analysis → direction files.
2. VLM & cross-model, injection sweep, attention shift, parameter-space prior (when available).
3. Figures (PNG + PDF + HTML) and ``summary.json`` / ``report.md``.
"""
from __future__ import annotations

import platform
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from cotscope.analyses.artifacts import library_versions
from cotscope.analyses.atomic import write_json_atomic, write_text_atomic

DEMO_DEFAULTS = dict(n_problems=160, batch_size=16, cutoff=0.1, n_perm=200, seed=0)


def _stage(name: str, fn: Callable[[], dict], summary: dict, required: bool) -> Any:
    t = time.perf_counter()
    print(f"[demo] stage {name} …", flush=True)
    try:
        out = fn()
    except Exception as e:  # optional stages report their failure in the summary; required ones abort
        if required:
            raise
        summary["stages"][name] = {"status": "failed", "error": f"{type(e).__name__}: {e}"}
        traceback.print_exc()
        return None
    summary["stages"][name] = {"status": "ok", "seconds": round(time.perf_counter() - t, 2)}
    return out


def run_demo(run_dir: str | Path = "runs/demo", **overrides: Any) -> dict[str, Any]:
    from cotscope.probes.pipeline import llm_summary, run_llm_stage

    cfg = {**DEMO_DEFAULTS, **overrides}
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"run_dir": str(run_dir), "config": cfg, "stages": {},
                               "environment": {"python": platform.python_version(), "machine": platform.machine(),
                                               "libraries": library_versions()}}
    t0 = time.perf_counter()
    llm = _stage("llm", lambda: run_llm_stage(run_dir, n_problems=cfg["n_problems"], seed=cfg["seed"],
                                              batch_size=cfg["batch_size"], cutoff=cfg["cutoff"], n_perm=cfg["n_perm"]),
                 summary, required=True)
    summary["llm"] = llm_summary(llm)
    for name, fn in extra_stages():
        res = _stage(name, lambda fn=fn: fn(run_dir, summary), summary, required=False)
        if res is not None:
            summary[name] = res
    from cotscope.figures.__main__ import render_all

    figs = _stage("figures", lambda: render_all(run_dir), summary, required=True)
    summary["figures"] = figs
    summary["total_seconds"] = round(time.perf_counter() - t0, 1)
    write_json_atomic(run_dir / "summary.json", summary)
    from cotscope.probes.report import write_report

    write_text_atomic(run_dir / "report.md", write_report(summary))
    print(f"[demo] done in {summary['total_seconds']} s → {run_dir}/summary.json, {run_dir}/report.md")
    return summary


def _vlm_stage(run_dir: Path, summary: dict) -> dict:
    from cotscope.probes.pipeline import crossmodel_summary, run_vlm_stage

    cfg = summary["config"]
    res = run_vlm_stage(run_dir, n_problems=cfg["n_problems"], seed=cfg["seed"], batch_size=cfg["batch_size"],
                        n_perm=cfg["n_perm"])
    return crossmodel_summary(res, cutoff=cfg["cutoff"])


def _answer_pairing_stage(run_dir: Path, summary: dict) -> dict:
    """The same LLM analysis on answer pairs (same question; worked vs short answer), read over the answer tokens.

    The cue pairing differs in the prompt text, so a probe separates it trivially; here both members see the same
    question and differ only in the reasoning the assistant wrote.
    """
    from cotscope.probes.pipeline import llm_summary, run_llm_stage

    cfg = summary["config"]
    res = llm_summary(run_llm_stage(run_dir, n_problems=cfg["n_problems"], seed=cfg["seed"], batch_size=cfg["batch_size"],
                                    cutoff=cfg["cutoff"], n_perm=cfg["n_perm"], pairing="answer",
                                    position="answer_mean", name="llm_answer"))
    acc = list(res["probe_test_accuracy"].values())
    cos = list(res["lat_vs_mean_diff_cosine"].values())
    frac = res["lowpass_energy_fraction"]
    p = res["lowpass_energy_p_value"]
    sig = [l for l, v in p.items() if v < 0.05]
    best = res["best_layer"]
    res["title"] = "CoT vs direct in the LLM, answer pairing (same question, worked vs short answer)"
    res["report"] = (
        f"{res['n_pairs']} pairs, token rule `{res['position']}` (mean over the assistant's answer tokens), "
        f"`stores/llm_answer`. Held-out probe accuracy {min(acc):.2f}–{max(acc):.2f} over layers "
        f"(best layer {best}); cos(LAT, mean difference) {min(cos):.3f}–{max(cos):.3f}. Low-pass energy fraction at "
        f"layer {best}: {frac[best]:.3f} (null {res['lowpass_energy_null_mean'][best]:.3f}, p = {p[best]:.2f}); layers "
        f"beating the permutation null at p < 0.05: {len(sig)} of {len(p)}"
        + (f" ({', '.join(f'L{l}' for l in sig)})" if sig else "") + ". Directions: `directions/llm_answer_*.safetensors`.")
    return res


def _exports_stage(run_dir: Path, summary: dict) -> dict:
    """The LLM's CoT directions in the formats other tools read (``RUN/exports``), with their provenance."""
    from cotscope.analyses.export.dispatch import export_direction

    out: dict[str, Any] = {"files": {}}
    for method in ("mean_diff", "lat"):
        src = run_dir / "directions" / f"llm_{method}.safetensors"
        for fmt in ("gguf", "npz"):
            path, layers = export_direction(src, fmt, run_dir / "exports" / f"llm_{method}.{fmt}",
                                            target="embedded:smollm2")
            out["files"][path.name] = {"format": fmt, "layers": f"{layers[0]}..{layers[-1]}", "source": src.name}
    out["title"] = "Exported directions"
    out["report"] = ("SmolLM2's CoT directions for other tools, in `exports/`: "
                     + ", ".join(f"`{n}` ({v['format']}, layers {v['layers']})" for n, v in out["files"].items())
                     + ". The GGUF files are llama.cpp control vectors (`--control-vector-scaled FILE 0.5`, block 0 "
                       "left out: llama.cpp cannot steer it) that repeng also reads; the npz files carry a JSON "
                       "provenance sidecar. `cotscope export` writes other formats and layer ranges.")
    return out


def _intervention_stage(run_dir: Path, summary: dict) -> dict:
    from cotscope.probes.pipeline import default_vlm_spec
    from cotscope.probes.sweep import run_demo_sweep

    cfg = summary["config"]
    own = run_dir / "directions" / "vlm_image_mean_diff.safetensors"  # from the crossmodel stage, when it ran
    return run_demo_sweep("embedded:smollm2", default_vlm_spec(), run_dir / "directions" / "llm_mean_diff.safetensors",
                          run_dir / "intervention", n_prompts=int(cfg.get("sweep_prompts", 8)), seed=cfg["seed"],
                          cutoff=cfg["cutoff"], target_own=own if own.is_file() else None)


def _attention_stage(run_dir: Path, summary: dict) -> dict:
    from cotscope.probes.attention_demo import attention_stage

    return attention_stage(run_dir, summary, figures=False)


def _prior_stage(run_dir: Path, summary: dict) -> dict:
    from cotscope.probes.drift import prior_stage

    return prior_stage(run_dir, summary)


def _reconstruction_stage(run_dir: Path, summary: dict) -> dict:
    from cotscope.probes.vision_latents import reconstruction_stage

    return reconstruction_stage(run_dir, summary, seed=summary["config"]["seed"])


def extra_stages() -> list[tuple[str, Callable[[Path, dict], dict]]]:
    """Stages beyond the LLM path; each may fail without losing the others (recorded in the summary).

    The VLM stages use the shipped reference VLM (``embedded:smolvlm``), else the LLaVA-SmolLM2 stand-in;
    the prior and reconstruction stages need the reference VLM's weights.
    """
    return [("llm_answer", _answer_pairing_stage), ("exports", _exports_stage), ("crossmodel", _vlm_stage),
            ("intervention", _intervention_stage), ("attention", _attention_stage), ("prior", _prior_stage),
            ("reconstruction", _reconstruction_stage)]
