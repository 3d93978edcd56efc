"""Stage ``crossmodel``: the VLM side of the L2V-CoT finding, compared with the LLM store of stage ``llm``."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cotscope.analyses.atomic import write_json_atomic
from cotscope.analyses.store import ActivationStore
from cotscope.probes.collect import collect_pairs
from cotscope.probes.models.loading import LoadedModel, load_model
from cotscope.probes.stimuli import generate_problems, make_pairs


def default_vlm_spec() -> str:
    """The embedded reference VLM when its weights are shipped, else the LLaVA-SmolLM2 stand-in."""
    try:
        from cotscope.probes.models.reference_vlm import SHIPPED_FILES, WEIGHTS_DIR

        if all((WEIGHTS_DIR / f).is_file() for f in SHIPPED_FILES):
            return "embedded:smolvlm"
    except ImportError:
        pass
    from cotscope.probes.models.llava_smol import llava_smol_dir

    return str(llava_smol_dir())


def run_vlm_stage(
    run_dir: str | Path,
    vlm: str | LoadedModel | None = None,
    *,
    n_problems: int = 128,
    seed: int = 0,
    position: str = "last_prompt",
    batch_size: int = 16,
    cutoffs: Sequence[float] | None = None,
    n_perm: int = 200,
    device: str = "cpu",
    progress: bool = True,
    n_perm_dispersion: int | None = None,
) -> dict[str, Any]:
    """VLM side of the cross-model finding.

    Collects the VLM on (a) the LLM's own text pairs through its language model (how the released
    L2V-CoT code reads VLM directions) and (b) the same problems rendered as images; then compares
    each with the LLM store of :func:`run_llm_stage` (which must exist in ``run_dir``).
    """
    from cotscope.analyses.artifacts import DirectionMeta, DirectionSet
    from cotscope.analyses.crossmodel import DEFAULT_CUTOFFS, crossmodel_analysis
    from cotscope.analyses.directions import mean_difference
    from cotscope.probes.stimuli.visual import generate_visual_items
    from cotscope.probes.stimuli.visual_pairs import make_visual_pairs

    run_dir = Path(run_dir)
    llm_store = ActivationStore(run_dir / "stores" / "llm")
    t0 = time.perf_counter()
    vm = vlm if isinstance(vlm, LoadedModel) else load_model(vlm or default_vlm_spec(), device=device)
    if not vm.is_vlm:
        raise ValueError(f"{vm.model_id} is not a vision-language model")
    t_load = time.perf_counter() - t0
    text_pairs = make_pairs(generate_problems(n_problems, seed=seed), pairing=llm_store.manifest["pairings"][0])
    image_pairs = make_visual_pairs(generate_visual_items(n_problems, seed=seed, kinds=("problem",)))
    t1 = time.perf_counter()
    stores = {
        "text": collect_pairs(
            vm,
            text_pairs,
            run_dir / "stores" / "vlm_text",
            positions=(position,),
            batch_size=batch_size,
            progress=progress,
        ),
        "image": collect_pairs(
            vm,
            image_pairs,
            run_dir / "stores" / "vlm_image",
            positions=(position, "image_mean"),
            batch_size=batch_size,
            progress=progress,
        ),
    }
    t_collect = time.perf_counter() - t1
    out: dict[str, Any] = {"vlm_model": vm.provenance(), "timings_s": {"load": t_load, "collect": t_collect}}
    for cond, st in stores.items():
        res = crossmodel_analysis(
            llm_store,
            st,
            position=position,
            cutoffs=cutoffs or DEFAULT_CUTOFFS,
            n_perm=n_perm,
            seed=seed,
            n_perm_dispersion=n_perm_dispersion,
        )
        write_json_atomic(run_dir / "analysis" / f"crossmodel_{cond}.json", res)
        vecs = {l: mean_difference(*st.paired(position, l)) for l in st.layers}
        meta = DirectionMeta(
            model_id=vm.model_id,
            model_revision=vm.revision,
            model_type=vm.model_type,
            hidden_size=vm.hidden_size,
            n_layers=vm.n_layers,
            token_rule=position,
            pairing="cue",
            method="mean_diff",
            sign="cot_positive",
            stimulus_hash=st.manifest["stimulus_hash"],
            n_pairs=len(text_pairs),
            extra={"input": cond, "store": str(st.path)},
        )
        DirectionSet(vecs, meta).save(run_dir / "directions" / f"vlm_{cond}_mean_diff.safetensors")
        out[cond] = res
    write_json_atomic(run_dir / "analysis" / "vlm.json", {"vlm_model": out["vlm_model"], "timings_s": out["timings_s"]})
    return out


def crossmodel_summary(res: dict[str, Any], cutoff: int | float = 0.1) -> dict[str, Any]:
    """Compact cross-model numbers for ``summary.json``: per matched layer, at one cutoff (bins or fraction; the
    stored cutoff with the nearest number of bins is used)."""
    from cotscope.analyses.spectral import cutoff_bins

    s: dict[str, Any] = {"vlm_model": res["vlm_model"]["model_id"], "timings_s": res["timings_s"]}
    for cond in ("text", "image"):
        rows = {}
        for L in res[cond]["layers"]:
            want = cutoff_bins(int(res["vlm_model"]["hidden_size"]), cutoff)
            c = min(L["cutoffs"], key=lambda r: abs(r["cutoff_bins"] - want))
            rows[L["llm_layer"]] = {
                "vlm_layer": L["vlm_layer"],
                "raw_cosine": round(L["raw_cosine"], 4),
                "lowpass_cosine": round(c["lowpass_cosine"], 4),
                "lowpass_null_mean": round(c["null_mean"], 4),
                "lowpass_null_q95": round(c["null_q95"], 4),
                "lowpass_p_value": round(c["p_value"], 4),
                "highpass_cosine": round(c["highpass_cosine"], 4),
                "dispersion_llm": round(L["dispersion_llm"], 2),
                "dispersion_vlm": round(L["dispersion_vlm"], 2),
                "dispersion_vlm_lowpass": round(L["dispersion_vlm_lowpass"], 2),
            }
            ref = L.get("dispersion_vlm_lowpass_ref")
            if ref:
                rows[L["llm_layer"]].update(
                    {
                        "dispersion_vlm_lowpass_isotropic": round(ref["isotropic_expected"], 2),
                        "dispersion_vlm_lowpass_kept_fraction": round(ref["kept_fraction"], 4),
                        "dispersion_isotropic_fraction": round(ref["isotropic_fraction"], 4),
                        "dispersion_vlm_lowpass_null_mean": round(ref.get("null_mean", float("nan")), 2),
                        "dispersion_vlm_lowpass_p_value": round(ref.get("p_value", float("nan")), 4),
                    }
                )
        n_beat = sum(1 for r in rows.values() if r["lowpass_p_value"] < 0.05 and r["lowpass_cosine"] > r["raw_cosine"])
        s[cond] = {
            "cutoff": cutoff,
            "per_layer": rows,
            "layers_lowpass_beats_null_and_raw": n_beat,
            "n_layers": len(rows),
            "layer_matching": res[cond]["layer_matching"]["rule"],
        }
    return s
