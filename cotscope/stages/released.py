"""Stage ``llm_released``: the CoT direction under the released L2V-CoT reading, beside the cue reading.

The released code reads its direction from about 100 problems answered twice by the assistant (long-form vs
short-form thought), at the end of the templated assistant turn. Here: cotscope's bundled long/short thought pairs
(:func:`probes.stimuli.load.load_thought_pairs`), ``answer`` pairing, token rule ``eot`` (and ``turn_end``, the
literal last token the released code reads, stored beside it). The summary puts the numbers next to the demo's cue
reading (stage ``llm``) and reports how far apart the two directions are per layer.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


def released_reading_stage(
    run_dir: str | Path,
    lm: Any,
    summary: Mapping[str, Any] | None = None,
    *,
    cutoff: int | float = 0.1,
    n_perm: int = 200,
    n_perm_dispersion: int | None = 100,
    seed: int = 0,
    batch_size: int = 8,
    limit: int | None = None,
    name: str = "llm_released",
) -> dict[str, Any]:
    """Collect the bundled thought pairs at ``eot``/``turn_end``, analyse every layer, save the directions, and
    compare with the cue reading's directions (``RUN/directions/llm_mean_diff.safetensors``) when present."""
    from cotscope.analyses.artifacts import DirectionSet
    from cotscope.analyses.atomic import write_json_atomic
    from cotscope.analyses.directions import cosine
    from cotscope.analyses.layer_sweep import analyse_store, directions_to_sets, public
    from cotscope.probes.collect import collect_pairs
    from cotscope.probes.stimuli.load import load_thought_pairs, stimulus_pairs
    from cotscope.stages.llm import llm_summary

    run_dir = Path(run_dir)
    n_all = len(load_thought_pairs())
    pairs = stimulus_pairs(load_thought_pairs(limit=limit), pairing="answer")
    t0 = time.perf_counter()
    store = collect_pairs(
        lm, pairs, run_dir / "stores" / name, positions=("eot", "turn_end"), batch_size=batch_size, progress=False
    )
    t_collect = time.perf_counter() - t0
    t1 = time.perf_counter()
    res = analyse_store(
        store, "eot", cutoff=cutoff, n_perm=n_perm, seed=seed, progress=False, n_perm_dispersion=n_perm_dispersion
    )
    paths = {
        m: str(ds.save(run_dir / "directions" / f"{name}_{m}.safetensors"))
        for m, ds in directions_to_sets(res, store).items()
    }
    full = public(res)
    full.update(
        {
            "model_id": lm.model_id,
            "pairing": "answer",
            "cutoff": cutoff,
            "n_problems": len(pairs),
            "directions": paths,
            "store": str(store.path),
            "timings_s": {"collect": t_collect, "analyse": time.perf_counter() - t1},
        }
    )
    write_json_atomic(run_dir / "analysis" / f"{name}.json", full)
    out = llm_summary(full)
    md = DirectionSet.load(paths["mean_diff"])
    # eot vs turn_end: the end-of-turn token and the token the released code literally reads (the "\n" after it)
    te = {l: np.mean(store.paired("turn_end", l)[0] - store.paired("turn_end", l)[1], axis=0) for l in store.layers}
    out["cos_eot_vs_turn_end"] = {l: round(cosine(md.vectors[l], te[l]), 4) for l in store.layers}
    out["eot_token"] = sorted({it.get("eot_token") for it in store.items if it.get("eot_token")})
    cue_path = run_dir / "directions" / "llm_mean_diff.safetensors"
    cue = (summary or {}).get("llm")
    if cue_path.is_file():
        cue_ds = DirectionSet.load(cue_path)
        common = [l for l in store.layers if l in cue_ds.vectors]
        out["cos_released_vs_cue"] = {l: round(cosine(md.vectors[l], cue_ds.vectors[l]), 4) for l in common}
    L = list(out["probe_test_accuracy"])
    sig = [l for l, p in out["lowpass_energy_p_value"].items() if p < 0.05]
    best = out["best_layer"]
    parts = [
        f"{out['n_pairs']}"
        + (f" of the {n_all}" if out["n_pairs"] < n_all else "")
        + " bundled long/short thought pairs, `answer` pairing, token rule `eot` "
        f"({', '.join(out['eot_token'])} from the model's chat template), `stores/{name}`. Held-out probe accuracy "
        f"{min(out['probe_test_accuracy'].values()):.2f}–{max(out['probe_test_accuracy'].values()):.2f}; low-pass "
        f"energy at layer {best} {out['lowpass_energy_fraction'][best]:.3f} (null "
        f"{out['lowpass_energy_null_mean'][best]:.3f}); layers beating the null at p < 0.05: {len(sig)} of {len(L)}."
    ]
    if out.get("dispersion_lowpass_isotropic"):
        parts.append(
            f"Dispersion at layer {best}: {out['dispersion'][best]:.1f} → low-pass "
            f"{out['dispersion_lowpass'][best]:.1f} (isotropic expectation "
            f"{out['dispersion_lowpass_isotropic'][best]:.1f}, permutation null "
            f"{out.get('dispersion_lowpass_null_mean', {}).get(best, float('nan')):.1f})."
        )
    if "cos_released_vs_cue" in out:
        c = out["cos_released_vs_cue"]
        parts.append(
            f"cos(released direction, cue direction): {min(c.values()):+.3f} to {max(c.values()):+.3f} over "
            f"layers (layer {best}: {c.get(best, float('nan')):+.3f}); the two readings give different "
            "directions."
        )
    if cue:
        parts.append(
            f"Cue reading (stage `llm`): probe {min(cue['probe_test_accuracy'].values()):.2f}–"
            f"{max(cue['probe_test_accuracy'].values()):.2f}."
        )
    parts.append(f"cos(eot, turn_end) at layer {best}: {out['cos_eot_vs_turn_end'][best]:+.3f}.")
    out["title"] = "CoT vs direct in the LLM, released reading (long vs short thought, end-of-turn token)"
    rows = {"released": headline(out)}
    if cue and "probe_test_accuracy" in cue:
        rows["cue"] = headline(cue)
    out["readings"] = rows
    out["report"] = " ".join(parts) + "\n\n" + readings_table(rows)
    return out


def _at(d: Mapping[Any, Any], k: Any) -> Any:
    """``d[k]`` for int layer keys, also after a JSON round trip (string keys)."""
    return d[k] if k in d else d.get(str(k))


def headline(block: Mapping[str, Any]) -> dict[str, Any]:
    """The numbers one reading contributes to the side-by-side table (from an ``llm_summary`` fragment).

    >>> b = {"pairing": "cue", "position": "last", "n_pairs": 4, "best_layer": 1,
    ...      "probe_test_accuracy": {0: 0.5, 1: 1.0}, "lowpass_energy_fraction": {1: 0.2},
    ...      "lowpass_energy_null_mean": {1: 0.19}, "lowpass_energy_p_value": {0: 0.5, 1: 0.01},
    ...      "dispersion": {1: 10.0}, "dispersion_lowpass": {1: 2.0}}
    >>> headline(b)["layers_beating_null"], headline(b)["probe_min"]
    (1, 0.5)
    """
    best = block["best_layer"]
    acc = list(block["probe_test_accuracy"].values())
    pv = block["lowpass_energy_p_value"]
    h = {
        "pairing": block["pairing"],
        "token_rule": block["position"],
        "n_pairs": block["n_pairs"],
        "best_layer": best,
        "probe_min": min(acc),
        "probe_max": max(acc),
        "lowpass_energy_best": _at(block["lowpass_energy_fraction"], best),
        "lowpass_energy_null_best": _at(block["lowpass_energy_null_mean"], best),
        "layers_beating_null": sum(1 for v in pv.values() if v < 0.05),
        "n_layers": len(pv),
        "dispersion_best": _at(block["dispersion"], best),
        "dispersion_lowpass_best": _at(block["dispersion_lowpass"], best),
    }
    for k in ("dispersion_lowpass_isotropic", "dispersion_lowpass_null_mean"):
        v = _at(block.get(k) or {}, best)
        if v is not None:
            h[f"{k}_best"] = v
    return h


def readings_table(rows: Mapping[str, Mapping[str, Any]]) -> str:
    """A markdown table with one row per reading (released, cue) from :func:`headline` dicts."""

    def f(v: Any, spec: str) -> str:
        return "–" if v is None else format(v, spec)

    lines = [
        "| reading | pairing | token rule | pairs | probe acc (min–max) | best layer | low-pass energy (null) "
        "| layers beating null | dispersion → low-pass (isotropic, permutation null) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, h in rows.items():
        lines.append(
            f"| {name} | `{h['pairing']}` | `{h['token_rule']}` | {h['n_pairs']} | {h['probe_min']:.2f}–"
            f"{h['probe_max']:.2f} | {h['best_layer']} | {h['lowpass_energy_best']:.3f} "
            f"({h['lowpass_energy_null_best']:.3f}) | {h['layers_beating_null']} of {h['n_layers']} | "
            f"{h['dispersion_best']:.1f} → {h['dispersion_lowpass_best']:.1f} "
            f"({f(h.get('dispersion_lowpass_isotropic_best'), '.1f')}, "
            f"{f(h.get('dispersion_lowpass_null_mean_best'), '.1f')}) |"
        )
    return "\n".join(lines)
