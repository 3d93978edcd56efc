"""Stage ``prior``: the DRIFT reasoning prior of the embedded pair and cos(g, Δ) during a few SFT steps."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cotscope.probes.drift import run_drift_alignment


def _fmt(x: Any, spec: str = ".3g") -> str:
    return "n/a" if x is None else format(x, spec)


def prior_stage(
    run_dir: str | Path,
    summary: Mapping[str, Any] | None = None,
    *,
    reason_dir: str | Path | None = None,
    vl_dir: str | Path | None = None,
    n_steps: int = 4,
    batch_size: int = 2,
    out_dtype: str = "float16",
) -> dict:
    """``make demo`` stage: the reasoning prior of the embedded pair and cos(g, Δ) during a few SFT steps.

    Defaults to SmolLM2 (reason) against the reference VLM (VL). Writes ``RUN/prior/prior.safetensors``
    (``out_dtype``, float16 halves the disk use), ``prior_analysis.json`` and ``drift_cos.csv``;
    figures come from ``python -m cotscope.figures RUN``. Returns summary numbers plus ``title``/``report``
    (markdown) for ``report.md``.
    """
    from cotscope.analyses.prior import PRIOR_FILENAME, run_prior_analysis

    if reason_dir is None:
        from cotscope.probes.models.embedded import smollm2_dir

        reason_dir = smollm2_dir()
    if vl_dir is None:
        from cotscope.probes.models.reference_vlm import reference_vlm_dir

        vl_dir = reference_vlm_dir()
    out = Path(run_dir) / "prior"
    p = run_prior_analysis(reason_dir, vl_dir, out, out_dtype=out_dtype, progress=False)
    d = run_drift_alignment(vl_dir, out / PRIOR_FILENAME, out, n_steps=n_steps, batch_size=batch_size)
    mods = ", ".join(f"{m} {v:.3g}" for m, v in p["module_mean_delta_norm"].items())
    by = ", ".join(f"{m} {v:+.3f}" for m, v in d["drift_cos_by_module"].items())
    report = (
        f"Δ = θ_reason − θ_VL between `{Path(reason_dir).name}` and `{Path(vl_dir).name}` over {p['n_matched']} "
        f"matched tensors (DRIFT default: attention + MLP projections; unmatched {p['n_unmatched_reason']}/"
        f"{p['n_unmatched_vl']}, shape-mismatched {p['n_shape_mismatched']}). ‖Δ‖ = {_fmt(p['delta_norm_total'])}, "
        f"largest at layer {p['delta_norm_max_layer']}; per-layer backbone cosine ≥ {_fmt(p['cos_min'], '.7f')}.\n\n"
        f"- Module-wise mean ‖Δ‖ (DRIFT fig. 2): {mods}.\n"
        f"- Spectrum of Δ's rows along the hidden dimension: centroid {_fmt(p.get('spectral_centroid'), '.4f')} "
        f"(permutation null {_fmt(p.get('spectral_centroid_null'), '.4f')}, p_high = {_fmt(p.get('spectral_p_high'))}); "
        f"share below the 10% cutoff {_fmt(p.get('spectral_lowpass_fraction'), '.4f')} (null "
        f"{_fmt(p.get('spectral_lowpass_null'), '.4f')}, p_low = {_fmt(p.get('spectral_p_low'))}). Verdict: "
        f"**{p.get('spectral_verdict')}**; per layer (BH-adjusted) {p.get('n_layers_high_frequency', 0)} high-frequency, "
        f"{p.get('n_layers_low_frequency', 0)} low-frequency.\n"
        f"- cos(g, Δ) over {d['drift_n_steps']} SFT steps on rendered visual problems ({d['drift_n_tensors']} tensors): "
        f"mean {d['drift_cos_mean']:+.4f}, mean |cos| {d['drift_cos_abs_mean']:.4f}, negative (descent already moves "
        f"towards θ_reason) in {d['drift_frac_negative']:.0%} of tensor-steps; by module: {by}."
    )
    keep = {k: v for k, v in {**p, **d}.items() if k not in ("figures", "artifact")}
    return {**keep, "artifact": p.get("artifact"), "title": "DRIFT reasoning prior (parameter space)", "report": report}
