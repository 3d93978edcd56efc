"""Stage ``llm``: stimuli → paired activations → per-layer analysis → direction files.

>>> from cotscope.stages.llm import run_llm_stage
>>> summary = run_llm_stage("runs/demo", n_problems=128)      # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cotscope.analyses.atomic import write_json_atomic
from cotscope.analyses.layer_sweep import analyse_store, directions_to_sets, public
from cotscope.probes.collect import collect_pairs
from cotscope.probes.models.loading import LoadedModel, load_model
from cotscope.probes.stimuli import generate_problems, make_pairs


def run_llm_stage(
    run_dir: str | Path,
    model: str | LoadedModel = "embedded:smollm2",
    *,
    n_problems: int = 128,
    seed: int = 0,
    pairing: str = "cue",
    position: str = "last_prompt",
    positions: Sequence[str] = ("last_prompt", "last", "answer_mean"),
    layers: Sequence[int] | None = None,
    batch_size: int = 16,
    cutoff: int | float = 0.1,
    n_perm: int = 200,
    device: str = "cpu",
    progress: bool = True,
    name: str = "llm",
    n_perm_dispersion: int | None = None,
) -> dict[str, Any]:
    """Collect (or reuse) paired activations, analyse every layer, write directions and ``analysis/<name>.json``.

    ``name`` keeps several LLM runs apart in one run directory (``stores/<name>``, ``directions/<name>_*``).
    """
    run_dir = Path(run_dir)
    t0 = time.perf_counter()
    lm = model if isinstance(model, LoadedModel) else load_model(model, device=device)
    t_load = time.perf_counter() - t0
    pairs = make_pairs(generate_problems(n_problems, seed=seed), pairing=pairing)
    t1 = time.perf_counter()
    store = collect_pairs(
        lm,
        pairs,
        run_dir / "stores" / name,
        layers=layers,
        positions=positions,
        batch_size=batch_size,
        progress=progress,
    )
    t_collect = time.perf_counter() - t1
    t2 = time.perf_counter()
    result = analyse_store(
        store, position, cutoff=cutoff, n_perm=n_perm, seed=seed, progress=progress, n_perm_dispersion=n_perm_dispersion
    )
    t_analyse = time.perf_counter() - t2
    sets = directions_to_sets(result, store)
    paths = {}
    for method, ds in sets.items():
        paths[method] = str(ds.save(run_dir / "directions" / f"{name}_{method}.safetensors"))
    out = public(result)
    out.update(
        {
            "model_id": lm.model_id,
            "cutoff": cutoff,
            "pairing": pairing,
            "n_problems": n_problems,
            "directions": paths,
            "store": str(store.path),
            "timings_s": {"load": t_load, "collect": t_collect, "analyse": t_analyse},
            "collect_reused": store.manifest.get("extra", {}).get("reused", False),
        }
    )
    write_json_atomic(run_dir / "analysis" / f"{name}.json", out)
    return out


def llm_summary(res: dict[str, Any]) -> dict[str, Any]:
    """The compact numbers that go into ``summary.json``."""
    L = {int(k): v for k, v in res["layers"].items()}
    best = res["best_layer"]
    return {
        "model": res["model_id"],
        "pairing": res["pairing"],
        "position": res["position"],
        "n_pairs": res["n_pairs"],
        "best_layer": best,
        "probe_test_accuracy": {l: round(v["probe"]["test_accuracy"], 4) for l, v in L.items()},
        "lat_vs_mean_diff_cosine": {l: round(v["lat_vs_mean_diff_cosine"], 4) for l, v in L.items()},
        "lowpass_cutoff_bins": L[best]["cutoff_bins"],
        "lowpass_energy_fraction": {l: round(v["lowpass_energy_fraction"], 4) for l, v in L.items()},
        "lowpass_energy_null_mean": {l: round(v["lowpass_energy_null"]["null_mean"], 4) for l, v in L.items()},
        "lowpass_energy_p_value": {l: round(v["lowpass_energy_null"]["p_value"], 4) for l, v in L.items()},
        "dispersion": {l: round(v["dispersion"], 2) for l, v in L.items()},
        "dispersion_lowpass": {l: round(v["dispersion_lowpass"], 2) for l, v in L.items()},
        "dispersion_lowpass_isotropic": {
            l: round(v["dispersion_lowpass_ref"]["isotropic_expected"], 2)
            for l, v in L.items()
            if "dispersion_lowpass_ref" in v
        },
        "dispersion_lowpass_null_mean": {
            l: round(v["dispersion_lowpass_ref"]["null_mean"], 2)
            for l, v in L.items()
            if "null_mean" in v.get("dispersion_lowpass_ref", {})
        },
        "dispersion_lowpass_p_value": {
            l: round(v["dispersion_lowpass_ref"]["p_value"], 4)
            for l, v in L.items()
            if "p_value" in v.get("dispersion_lowpass_ref", {})
        },
        "timings_s": {k: round(v, 2) for k, v in res["timings_s"].items()},
    }


def answer_pairing_summary(res: dict[str, Any]) -> dict[str, Any]:
    """The same LLM analysis on answer pairs (same question; worked vs short answer), read over the answer tokens.

    The cue pairing differs in the prompt text, so a probe separates it trivially; here both members see the same
    question and differ only in the reasoning the assistant wrote.
    """
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
        + (f" ({', '.join(f'L{l}' for l in sig)})" if sig else "")
        + ". Directions: `directions/llm_answer_*.safetensors`."
    )
    return res
