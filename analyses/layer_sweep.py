"""Per-layer CoT analysis of one store: directions, probes, dispersion, spectra with a permutation null.

>>> res = analyse_store(ActivationStore("runs/demo/llm_store"), "last_prompt")   # doctest: +SKIP
>>> res.layers[12]["probe"]["test_accuracy"], res.best_layer                       # doctest: +SKIP
>>> res.directions["mean_diff"][12]          # layer 12's mean-difference vector   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from cotscope.analyses.artifacts import DirectionMeta, DirectionSet
from cotscope.analyses.directions import check_pairs, cosine, lat_from_moments, probe_accuracy
from cotscope.analyses.io.store import ActivationStore
from cotscope.analyses.results import AnalysisResult
from cotscope.analyses.spectral import cutoff_bins, lowpass, lowpass_energy_fraction, permutation_null
from cotscope.analyses.streaming import CHUNK_PAIRS, PairMoments, chunks, lat_flips

DEFAULT_CUTOFFS = (0.05, 0.1, 0.2, 0.3, 0.5)


def analyse_layer(
    cot: np.ndarray,
    direct: np.ndarray,
    cutoff: int | float = 0.1,
    n_perm: int = 200,
    seed: int = 0,
    chunk_pairs: int = CHUNK_PAIRS,
    n_perm_dispersion: int | None = None,
) -> dict:
    """Numbers for one layer; returns plain floats (JSON-ready) plus the two directions.

    One pass over chunks of pairs accumulates the mean difference, the dispersions (raw and low-passed;
    sums of per-coordinate variances) and the LAT scatter; a second pass votes the LAT sign; the probe
    fits on float64 copies of its train/test rows. ``cot``/``direct`` may be float32 (a store slice).
    ``cutoff`` is a bin count (int) or a fraction of the rfft bins (float), see :mod:`analyses.cutoff`. The
    low-passed dispersion comes with its isotropic expectation and a permutation null (``dispersion_lowpass_ref``,
    :func:`analyses.dispersion.dispersion_references`; ``n_perm_dispersion`` permutations, default ``n_perm``).
    """
    from cotscope.analyses.dispersion import (
        COV_NULL_MAX_D,
        centred_scatter,
        compact,
        dispersion_references,
        lowpass_scatter_trace,
    )

    cot, direct = check_pairs(cot, direct, min_pairs=4, as_float64=False)
    n, d = cot.shape
    c = cutoff_bins(d, cutoff)
    # Up to COV_NULL_MAX_D the LAT pass's d×d scatter serves everything quadratic: the low-passed dispersion is
    # trace(Q S) and the dispersion null reads S under permutations, so no row is low-passed and no second scatter
    # is accumulated. Above it, rows are low-passed per chunk and the null streams the pairs (memory of one chunk).
    via_scatter = d <= COV_NULL_MAX_D
    mom = PairMoments(d, transform=None if via_scatter else (lambda D: lowpass(D, c)), lat_flips=lat_flips(n, seed))
    for cc, dd in chunks(cot, direct, chunk_pairs):
        mom.update(cc, dd)
    md = mom.mean_difference()
    lat = lat_from_moments(mom, lambda: chunks(cot, direct, chunk_pairs))
    lp_null = permutation_null(lambda v: lowpass_energy_fraction(v, c), md, n_perm=n_perm, seed=seed)
    if via_scatter:
        S = centred_scatter(mom.lat.m2, mom.lat.mean, md, n)
        disp_lp = lowpass_scatter_trace(S, c) / (n - 1)
    else:
        S, disp_lp = None, mom.dispersion_transformed()
    disp = dispersion_references(
        mom.dispersion(),
        disp_lp,
        d,
        c,
        chunks=None if via_scatter else (lambda: chunks(cot, direct, chunk_pairs)),
        mean_diff=md,
        n_pairs=n,
        n_perm=n_perm if n_perm_dispersion is None else n_perm_dispersion,
        seed=seed,
        scatter=S,
    )
    return {
        "probe": probe_accuracy(cot, direct, seed=seed),
        "lat_vs_mean_diff_cosine": cosine(lat.direction, md),
        "lat_explained_variance": lat.explained_variance_ratio,
        "lat_sign_agreement": lat.sign_agreement,
        "mean_diff_norm": float(np.linalg.norm(md)),
        "dispersion": mom.dispersion(),
        "dispersion_lowpass": disp_lp,
        "dispersion_lowpass_ref": compact(disp),
        "cutoff_bins": c,
        "lowpass_energy_fraction": lp_null["observed"],
        "lowpass_energy_null": {k: lp_null[k] for k in ("null_mean", "null_q05", "null_q95", "p_value", "z")},
        "_mean_diff": md,
        "_lat": lat.direction,
    }


def analyse_store(
    store: ActivationStore,
    position: str,
    layers: Sequence[int] | None = None,
    cutoff: int | float = 0.1,
    n_perm: int = 200,
    seed: int = 0,
    progress: bool = True,
    chunk_pairs: int = CHUNK_PAIRS,
    n_perm_dispersion: int | None = None,
) -> AnalysisResult:
    """Run :func:`analyse_layer` on every stored layer; also a layer×layer cosine matrix of directions.

    ``cutoff`` is a bin count (int) or a fraction of the rfft bins (float).

    Returns an :class:`~analyses.results.AnalysisResult` (``res.best_layer``, ``res.directions["mean_diff"]`` …).

    Streams the store one layer at a time: at most two (token rule, layer) slices are in memory (the one analysed and
    the next, read ahead in a thread; reused float32 buffers, ``[n_pairs, d]`` each), whatever the number of layers.
    """
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    layers = list(store.layers if layers is None else layers)
    per_layer, md, lat = {}, {}, {}
    n, d = store.n_pairs, store.hidden_size
    # two buffer pairs: the next layer's slice is read (and on a first read verified) in a thread while this one is
    # analysed; numpy's BLAS, FFTs and file reads release the GIL, so reading overlaps computing
    buffers = [(np.empty((n, d), np.float32), np.empty((n, d), np.float32)) for _ in range(2)]
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cotscope-read") as reader:
        pending = reader.submit(store.paired, position, layers[0], out=buffers[0]) if layers else None
        for k, l in enumerate(tqdm(layers, desc=f"analyse {position}", disable=not progress)):
            cot, direct = pending.result()
            if k + 1 < len(layers):
                pending = reader.submit(store.paired, position, layers[k + 1], out=buffers[(k + 1) % 2])
            r = analyse_layer(
                cot,
                direct,
                cutoff=cutoff,
                n_perm=n_perm,
                seed=seed,
                chunk_pairs=chunk_pairs,
                n_perm_dispersion=n_perm_dispersion,
            )
            md[l], lat[l] = r.pop("_mean_diff"), r.pop("_lat")
            per_layer[l] = r
    del buffers
    M = np.stack([md[l] for l in layers])
    U = M / np.linalg.norm(M, axis=1, keepdims=True)
    best = max(layers, key=lambda l: (per_layer[l]["probe"]["test_accuracy"], -abs(l - len(layers) / 2)))
    return AnalysisResult.from_dict(
        {
            "position": position,
            "layers": per_layer,
            "layer_cosine": (U @ U.T).tolist(),
            "layer_order": layers,
            "best_layer": int(best),
            "n_pairs": int(n),
            "_directions": {"mean_diff": md, "lat": lat},
        },
        store=store,
    )


def directions_to_sets(
    result: dict[str, Any], store: ActivationStore, normalise: bool = False
) -> dict[str, DirectionSet]:
    """Turn an :func:`analyse_store` result into direction files' in-memory form, with provenance."""
    if isinstance(result, AnalysisResult):
        result = result.to_private_dict()
    model = store.model
    out = {}
    for method, vecs in result["_directions"].items():
        v = {l: (x / np.linalg.norm(x) if normalise else x) for l, x in vecs.items()}
        meta = DirectionMeta(
            model_id=model["model_id"],
            model_revision=model["revision"],
            model_type=model["model_type"],
            hidden_size=model["hidden_size"],
            n_layers=model["n_layers"],
            token_rule=result["position"],
            pairing=",".join(store.manifest.get("pairings", [])),
            method=method,
            normalisation="unit" if (normalise or method == "lat") else "none",
            sign="cot_positive",
            stimulus_hash=store.manifest["stimulus_hash"],
            n_pairs=result["n_pairs"],
            extra={"store": str(store.path)},
        )
        out[method] = DirectionSet(v, meta)
    return out


def public(result: dict[str, Any]) -> dict[str, Any]:
    """Drop private (array-valued) keys so the result is JSON-serialisable."""
    if isinstance(result, AnalysisResult):
        return result.to_dict()
    return {k: v for k, v in result.items() if not k.startswith("_")}
