"""Per-layer CoT analysis of one store: directions, probes, dispersion, spectra with a permutation null.

>>> res = analyse_store(ActivationStore("runs/demo/llm_store"), "last_prompt")   # doctest: +SKIP
>>> res.layers[12]["probe"]["test_accuracy"], res.best_layer                       # doctest: +SKIP
>>> res.directions["mean_diff"][12]          # layer 12's mean-difference vector   # doctest: +SKIP
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from cotscope.analyses.artifacts import DirectionMeta, DirectionSet
from cotscope.analyses.results import AnalysisResult
from cotscope.analyses.directions import cosine, dispersion, lat_direction, mean_difference, probe_accuracy
from cotscope.analyses.spectral import cutoff_bins, lowpass, lowpass_energy_fraction, permutation_null
from cotscope.analyses.store import ActivationStore

DEFAULT_CUTOFFS = (0.05, 0.1, 0.2, 0.3, 0.5)


def analyse_layer(cot: np.ndarray, direct: np.ndarray, cutoff: int | float = 0.1, n_perm: int = 200, seed: int = 0,
                  n_perm_dispersion: int | None = None) -> dict:
    """Numbers for one layer; returns plain floats (JSON-ready) plus the two directions.

    ``cutoff`` is a bin count (int) or a fraction of the rfft bins (float), see :mod:`analyses.cutoff`. The
    low-passed dispersion comes with its isotropic expectation and a permutation null
    (``dispersion_lowpass_ref``, :func:`analyses.dispersion.lowpass_dispersion`; ``n_perm_dispersion``
    permutations, default ``n_perm``).
    """
    from cotscope.analyses.dispersion import compact, lowpass_dispersion

    md = mean_difference(cot, direct)
    lat = lat_direction(cot, direct, seed=seed)
    d = md.shape[0]
    c = cutoff_bins(d, cutoff)
    lp_null = permutation_null(lambda v: lowpass_energy_fraction(v, c), md, n_perm=n_perm, seed=seed)
    disp = lowpass_dispersion(cot, direct, c, n_perm=n_perm if n_perm_dispersion is None else n_perm_dispersion,
                              seed=seed)
    return {
        "probe": probe_accuracy(cot, direct, seed=seed),
        "lat_vs_mean_diff_cosine": cosine(lat.direction, md),
        "lat_explained_variance": lat.explained_variance_ratio,
        "lat_sign_agreement": lat.sign_agreement,
        "mean_diff_norm": float(np.linalg.norm(md)),
        "dispersion": disp["dispersion"],
        "dispersion_lowpass": disp["dispersion_lowpass"],
        "dispersion_lowpass_ref": compact(disp),
        "cutoff_bins": c,
        "lowpass_energy_fraction": lp_null["observed"],
        "lowpass_energy_null": {k: lp_null[k] for k in ("null_mean", "null_q05", "null_q95", "p_value", "z")},
        "_mean_diff": md, "_lat": lat.direction,
    }


def analyse_store(store: ActivationStore, position: str, layers: Sequence[int] | None = None,
                  cutoff: int | float = 0.1, n_perm: int = 200, seed: int = 0, progress: bool = True,
                  n_perm_dispersion: int | None = None) -> AnalysisResult:
    """Run :func:`analyse_layer` on every stored layer; also a layer×layer cosine matrix of directions.

    ``cutoff`` is a bin count (int) or a fraction of the rfft bins (float). Returns an
    :class:`~analyses.results.AnalysisResult` (``res.best_layer``, ``res.directions["mean_diff"]`` …).
    """
    from tqdm.auto import tqdm

    layers = list(store.layers if layers is None else layers)
    per_layer, md, lat = {}, {}, {}
    for l in tqdm(layers, desc=f"analyse {position}", disable=not progress):
        cot, direct = store.paired(position, l)
        r = analyse_layer(cot, direct, cutoff=cutoff, n_perm=n_perm, seed=seed, n_perm_dispersion=n_perm_dispersion)
        md[l], lat[l] = r.pop("_mean_diff"), r.pop("_lat")
        per_layer[l] = r
    M = np.stack([md[l] for l in layers])
    U = M / np.linalg.norm(M, axis=1, keepdims=True)
    best = max(layers, key=lambda l: (per_layer[l]["probe"]["test_accuracy"], -abs(l - len(layers) / 2)))
    return AnalysisResult.from_dict(
        {"position": position, "cutoff": cutoff, "layers": per_layer, "layer_cosine": (U @ U.T).tolist(),
         "layer_order": layers, "best_layer": int(best), "n_pairs": int(store.paired(position, layers[0])[0].shape[0]),
         "_directions": {"mean_diff": md, "lat": lat}}, store=store)


def directions_to_sets(result: dict[str, Any], store: ActivationStore, normalise: bool = False) -> dict[str, DirectionSet]:
    """Turn an :func:`analyse_store` result into direction files' in-memory form, with provenance."""
    if isinstance(result, AnalysisResult):
        result = result.to_private_dict()
    model = store.model
    out = {}
    for method, vecs in result["_directions"].items():
        v = {l: (x / np.linalg.norm(x) if normalise else x) for l, x in vecs.items()}
        meta = DirectionMeta(model_id=model["model_id"], model_revision=model["revision"], model_type=model["model_type"],
                             hidden_size=model["hidden_size"], n_layers=model["n_layers"], token_rule=result["position"],
                             pairing=",".join(store.manifest.get("pairings", [])), method=method,
                             normalisation="unit" if (normalise or method == "lat") else "none",
                             sign="cot_positive", stimulus_hash=store.manifest["stimulus_hash"],
                             n_pairs=result["n_pairs"], extra={"store": str(store.path)})
        out[method] = DirectionSet(v, meta)
    return out


def public(result: dict[str, Any]) -> dict[str, Any]:
    """Drop private (array-valued) keys so the result is JSON-serialisable."""
    if isinstance(result, AnalysisResult):
        return result.to_dict()
    return {k: v for k, v in result.items() if not k.startswith("_")}
