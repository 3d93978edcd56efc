"""LLM ↔ VLM comparison of CoT directions (L2V-CoT's central claim, with controls).

Both stores are streamed chunk by chunk (memory bounded by a chunk, never a whole layer or store).
Per matched layer pair: cosine between the two models' CoT directions — raw, low-passed at a sweep
of cutoffs, high-passed — and the same low-pass cosine under a random-permutation null (one shared
permutation of the coordinates, which keeps the raw cosine but scrambles "frequency"). Also the
dispersion of per-pair differences for LLM, VLM and VLM after low-pass. Hidden sizes that differ
are matched by Fourier resampling of the LLM direction; layers of models with different depths are
matched by relative depth (first block to first, last to last: ``round(l·(n_b−1)/(n_a−1))``), and the
matching is recorded.

>>> match_layers(30, 60, [0, 15, 29])
[(0, 0), (15, 31), (29, 59)]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from cotscope.analyses.directions import cosine
from cotscope.analyses.io.store import ActivationStore
from cotscope.analyses.spectral import cutoff_bins, highpass, lowpass, resample
from cotscope.analyses.streaming import PairMoments
from cotscope.errors import CotscopeError

DEFAULT_CUTOFFS = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75)


class LayerMatchError(CotscopeError):
    """Layers of the two models cannot be matched."""


def match_layers(n_a: int, n_b: int, layers_a: Sequence[int]) -> list[tuple[int, int]]:
    """Map layers of model A (``n_a`` blocks) to model B by relative depth."""
    if n_a < 1 or n_b < 1:
        raise LayerMatchError("both models need at least one decoder block")
    out = []
    for la in layers_a:
        if not 0 <= la < n_a:
            raise LayerMatchError(f"layer {la} is out of range for a {n_a}-block model")
        lb = 0 if n_a == 1 else int(round(la * (n_b - 1) / (n_a - 1)))
        out.append((int(la), lb))
    return out


def lowpass_cosine(a: np.ndarray, b: np.ndarray, c: int) -> float:
    return cosine(lowpass(a, c), lowpass(b, c))


def compare_directions(
    v_llm: np.ndarray,
    v_vlm: np.ndarray,
    cutoffs: Sequence[int | float] = DEFAULT_CUTOFFS,
    n_perm: int = 200,
    seed: int = 0,
) -> dict[str, Any]:
    """Raw / low-pass / high-pass cosines of two directions, with the permutation null per cutoff."""
    v_llm = np.asarray(v_llm, dtype=np.float64)
    v_vlm = np.asarray(v_vlm, dtype=np.float64)
    resampled = v_llm.shape[0] != v_vlm.shape[0]
    if resampled:
        v_llm = resample(v_llm, v_vlm.shape[0])
    d = v_vlm.shape[0]
    rng = np.random.default_rng(seed)
    perms = [rng.permutation(d) for _ in range(n_perm)]
    rows = []
    for cf in cutoffs:
        c = cutoff_bins(d, cf)
        obs = lowpass_cosine(v_llm, v_vlm, c)
        null = np.array([lowpass_cosine(v_llm[p], v_vlm[p], c) for p in perms])
        rows.append(
            {
                "cutoff": cf,
                "cutoff_bins": c,
                "fraction_of_bins": c / (d // 2 + 1),
                "lowpass_cosine": obs,
                "highpass_cosine": cosine(highpass(v_llm, c), highpass(v_vlm, c)),
                "null_mean": float(null.mean()),
                "null_q05": float(np.quantile(null, 0.05)),
                "null_q95": float(np.quantile(null, 0.95)),
                "p_value": float((1 + np.sum(null >= obs)) / (1 + n_perm)),
            }
        )
    return {"raw_cosine": cosine(v_llm, v_vlm), "resampled": resampled, "cutoffs": rows}


def stream_moments(store: ActivationStore, position: str, layer: int, lowpass_bins: int) -> PairMoments:
    """Mean difference and (low-passed) dispersion of one store layer, streamed chunk by chunk from disk."""
    m = PairMoments(store.hidden_size, transform=lambda D: lowpass(D, lowpass_bins))
    for _, cot, direct in store.iter_pairs(position, layer):
        m.update(cot, direct)
    if m.n < 2:
        raise LayerMatchError(f"store {store.path} has {m.n} pair(s); dispersion needs at least 2")
    return m


def crossmodel_analysis(
    llm: ActivationStore,
    vlm: ActivationStore,
    position: str = "last_prompt",
    vlm_position: str | None = None,
    layers: Sequence[int] | None = None,
    cutoffs: Sequence[int | float] = DEFAULT_CUTOFFS,
    dispersion_cutoff: int | float = 0.1,
    n_perm: int = 200,
    seed: int = 0,
    n_perm_dispersion: int | None = None,
) -> dict[str, Any]:
    """Compare the CoT directions of two stores layer by layer (see module docstring).

    Cutoffs are bin counts (int) or fractions of the target's rfft bins (float). The low-passed dispersions come
    with their isotropic expectation and a permutation null (``dispersion_*_lowpass_ref``; the null streams the
    store once more).
    """
    from cotscope.analyses.dispersion import compact, dispersion_references

    n_pd = n_perm if n_perm_dispersion is None else n_perm_dispersion

    def refs(store: ActivationStore, pos: str, layer: int, m: Any, c: int) -> dict[str, Any]:
        return compact(
            dispersion_references(
                m.dispersion(),
                m.dispersion_transformed(),
                store.hidden_size,
                c,
                chunks=lambda: ((cc, dd) for _, cc, dd in store.iter_pairs(pos, layer)),
                mean_diff=m.mean_difference(),
                n_pairs=m.n,
                n_perm=n_pd,
                seed=seed,
            )
        )

    n_l, n_v = int(llm.model["n_layers"]), int(vlm.model["n_layers"])
    wanted = list(llm.layers if layers is None else layers)
    missing = [l for l in wanted if l not in llm.layers]
    if missing:
        raise LayerMatchError(f"LLM layers {missing} are not in the LLM store (has {llm.layers})")
    pairs = [(a, b) for a, b in match_layers(n_l, n_v, wanted) if b in vlm.layers]
    if not pairs:
        raise LayerMatchError(
            f"none of the LLM layers {wanted} maps (by relative depth, {n_l}→{n_v} blocks) onto a layer stored in "
            f"the VLM store (has {vlm.layers}); collect the VLM at the matching layers "
            f"{[b for _, b in match_layers(n_l, n_v, wanted)]}"
        )
    vpos = vlm_position or position
    out_layers = []
    d_v = vlm.hidden_size
    c_v, c_l = cutoff_bins(d_v, dispersion_cutoff), cutoff_bins(llm.hidden_size, dispersion_cutoff)
    for la, lb in pairs:
        m_llm = stream_moments(llm, position, la, c_l)
        m_vlm = stream_moments(vlm, vpos, lb, c_v)
        v_llm, v_vlm = m_llm.mean_difference(), m_vlm.mean_difference()
        cmp = compare_directions(v_llm, v_vlm, cutoffs, n_perm=n_perm, seed=seed)
        out_layers.append(
            {
                "llm_layer": la,
                "vlm_layer": lb,
                **cmp,
                "dispersion_llm": m_llm.dispersion(),
                "dispersion_vlm": m_vlm.dispersion(),
                "dispersion_vlm_lowpass": m_vlm.dispersion_transformed(),
                "dispersion_llm_lowpass": m_llm.dispersion_transformed(),
                "dispersion_vlm_lowpass_ref": refs(vlm, vpos, lb, m_vlm, c_v),
                "dispersion_llm_lowpass_ref": refs(llm, position, la, m_llm, c_l),
            }
        )
    return {
        "llm_model": llm.model,
        "vlm_model": vlm.model,
        "position": position,
        "vlm_position": vpos,
        "layer_matching": {
            "rule": "relative depth: round(l * (n_vlm - 1) / (n_llm - 1))",
            "pairs": [[a, b] for a, b in pairs],
        },
        "dispersion_cutoff": dispersion_cutoff,
        "n_perm": n_perm,
        "layers": out_layers,
    }
