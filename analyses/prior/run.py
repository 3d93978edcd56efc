"""Compute the prior, write ``prior.safetensors`` + ``prior_analysis.json`` (``cotscope figures`` draws them)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cotscope.analyses.prior.artifact import PRIOR_FILENAME
from cotscope.analyses.prior.compute import compute_prior

ANALYSIS_FILENAME = "prior_analysis.json"


def run_prior_analysis(
    reason_dir: str | Path,
    vl_dir: str | Path,
    out_dir: str | Path,
    modules: str | Sequence[str] | None = "default",
    *,
    write_artifact: bool = True,
    n_perm: int = 200,
    **kw: Any,
) -> dict:
    """Compute the prior, write ``prior.safetensors`` + ``prior_analysis.json``, return summary numbers.

    ``cotscope figures RUN`` draws the prior figures from ``RUN/prior/prior_analysis.json`` when ``out_dir``
    is ``RUN/prior``. Extra keywords go to
    :func:`compute_prior`.

    >>> s = run_prior_analysis(smollm2_dir(), reference_vlm_dir(), "out/prior")   # doctest: +SKIP
    >>> sorted(s)[:3]                                                            # doctest: +SKIP
    """
    from cotscope.analyses.atomic import write_json_atomic

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    res = compute_prior(
        reason_dir, vl_dir, modules, out_path=out_dir / PRIOR_FILENAME if write_artifact else None, n_perm=n_perm, **kw
    )
    data = res.to_dict()
    write_json_atomic(out_dir / ANALYSIS_FILENAME, data)
    return summarize(data, artifact=res.artifact)


def summarize(data: Mapping[str, Any], **extra: Any) -> dict:
    """Flat summary numbers of a ``prior_analysis.json`` dict (for summary.json / report.md)."""
    layers = data["layers"]
    tot2 = sum(t["delta_norm"] ** 2 for t in data["tensors"])
    m = data["match"]
    out = {
        "n_matched": m["n_matched"],
        "n_unmatched_reason": len(m["unmatched_reason"]),
        "n_unmatched_vl": len(m["unmatched_vl"]),
        "n_shape_mismatched": len(m["shape_mismatched"]),
        "delta_norm_total": tot2**0.5,
        "delta_norm_max_layer": max(layers, key=lambda r: r["delta_norm"])["layer"] if tot2 > 0 and layers else None,
        "cos_min": min((r["cos"] for r in layers if r["cos"] is not None), default=None),
        "cos_mean": float(np.mean([r["cos"] for r in layers if r["cos"] is not None])) if layers else None,
        "module_mean_delta_norm": {r["module"]: r["mean_delta_norm"] for r in data["modules"]},
    }
    sp = data.get("spectrum") or {}
    if sp:
        t = sp["total"]
        out.update(
            spectral_centroid=t["centroid"],
            spectral_centroid_null=t["centroid_null_mean"],
            spectral_p_high=t["p_high"],
            spectral_lowpass_fraction=t["lowpass_fraction"],
            spectral_lowpass_null=t["lowpass_null_mean"],
            spectral_p_low=t["p_low"],
            spectral_verdict=t["verdict"],
            n_layers_high_frequency=sum(1 for v in sp["per_layer"].values() if v["verdict"] == "high-frequency"),
            n_layers_low_frequency=sum(1 for v in sp["per_layer"].values() if v["verdict"] == "low-frequency"),
        )
    out.update(extra)
    return out
