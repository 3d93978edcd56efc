"""Streaming analyses (analyses.streaming, directions, layer_sweep, crossmodel on store v2) against the pre-v2
in-memory implementation kept in ``store_oracle`` — within tolerances derived from floating-point error bounds.

Notation: ``u = 2**-53`` (float64 unit roundoff), ``γ(k) = k·u / (1 − k·u)``, ``n`` pairs, ``d`` dimensions.

* Mean difference: both paths sum the same float64 differences (exact: they are differences of float32 values)
  in different orders; any order errs by at most ``γ(n)·Σ_i|δ_ij|`` per coordinate, so the two results differ by
  at most ``2·γ(n)·Σ_i|δ_ij| / n``.
* Dispersion: sums of ``n·d`` non-negative squares, centred on means that differ by ``e``; the centre error
  enters only as ``n·e²`` (first-order terms cancel: ``Σ_i(δ_i − μ) = 0``); Chan's merges add ``3`` roundings
  per chunk: relative bound ``2·γ(n + d + 3·chunks + 8)``. Low-passed: plus the FFT error of each row,
  ``ε = 5·log2(d)·u`` relative, entering as ``2ε·sqrt(S_lp · Σ‖δ_i‖²)/(n−1)``.
* LAT: the oracle takes the SVD of the centred differences, the stream the top eigenvector of their scatter
  ``S``. Both are backward stable, with perturbations bounded by ``(n + d)·u·trace(S)``; by Davis–Kahan the
  directions differ by at most ``4·(n + d)·u·trace(S) / (λ1 − λ2)`` (λ from the oracle's singular values).
* Everything computed from the mean difference ``v`` (energy fractions, nulls, cosines) is Lipschitz in ``v``
  with constant ``4/‖v‖`` (energy fraction) or ``2/‖v‖`` (cosine).
* Probe: both paths give sklearn bit-identical float64 inputs, so its numbers are compared exactly.
"""

from __future__ import annotations

import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

import store_oracle as O  # noqa: E402
from store_synth import synth, write_store, write_v1_store  # noqa: E402

from cotscope.analyses.crossmodel import crossmodel_analysis  # noqa: E402
from cotscope.analyses.directions import dispersion, lat_direction, mean_difference  # noqa: E402
from cotscope.analyses.layer_sweep import analyse_layer, analyse_store  # noqa: E402
from cotscope.analyses.spectral import cutoff_bins, lowpass  # noqa: E402
from cotscope.analyses.streaming import PairMoments  # noqa: E402

U = 2.0**-53


def gamma(k: float) -> float:
    return k * U / (1 - k * U)


def bounds(cot: np.ndarray, direct: np.ndarray, chunk: int, cutoff: float = 0.1, seed: int = 0) -> dict:
    """The error bounds of the module docstring, computed from the data (oracle side)."""
    cot, direct = cot.astype(np.float64), direct.astype(np.float64)
    n, d = cot.shape
    delta = cot - direct
    k = -(-n // chunk)
    md_b = 2 * gamma(n) * np.abs(delta).sum(0) / n
    md = delta.mean(0)
    c = cutoff_bins(d, cutoff)
    lp = lowpass(delta, c)
    s_lp = ((lp - lp.mean(0)) ** 2).sum()
    eps = 5 * np.log2(d) * U
    flip = np.random.default_rng(seed).random(n) < 0.5
    D = np.where(flip[:, None], -delta, delta)
    s = np.linalg.svd(D - D.mean(0), compute_uv=False)
    lam = s**2
    lat_b = 4 * (n + d) * U * lam.sum() / (lam[0] - lam[1])
    v_rel = np.linalg.norm(md_b) / np.linalg.norm(md)
    return {
        "md": md_b,
        "md_rel": v_rel,
        "disp_rel": 2 * gamma(n + d + 3 * k + 8),
        "disp_lp_abs": 2 * gamma(n + d + 3 * k + 8) * s_lp / (n - 1)
        + 2 * eps * np.sqrt(s_lp * (delta**2).sum()) / (n - 1)
        + eps**2 * (delta**2).sum() / (n - 1),
        "lat": lat_b,
        "energy": 4 * v_rel + 4 * eps,
        "delta_norms": np.linalg.norm(delta, axis=1),
        "n": n,
    }


def assert_layer_matches_oracle(new: dict, old: dict, cot: np.ndarray, direct: np.ndarray, chunk: int, seed: int = 0):
    b = bounds(cot, direct, chunk, seed=seed)
    assert new["probe"] == old["probe"]  # same inputs: exact
    assert new["cutoff_bins"] == old["cutoff_bins"]
    assert np.all(np.abs(new["_mean_diff"] - old["_mean_diff"]) <= b["md"])
    assert (
        abs(new["mean_diff_norm"] - old["mean_diff_norm"]) <= np.linalg.norm(b["md"]) + 64 * U * old["mean_diff_norm"]
    )
    assert abs(new["dispersion"] - old["dispersion"]) <= b["disp_rel"] * old["dispersion"]
    assert abs(new["dispersion_lowpass"] - old["dispersion_lowpass"]) <= b["disp_lp_abs"]
    dv = np.linalg.norm(new["_lat"] - old["_lat"])
    assert dv <= 2 * b["lat"], (dv, b["lat"])
    assert abs(new["lat_explained_variance"] - old["lat_explained_variance"]) <= 8 * (b["n"] + len(cot[0])) * U
    assert (
        abs(new["lat_vs_mean_diff_cosine"] - old["lat_vs_mean_diff_cosine"]) <= 2 * b["lat"] + 2 * b["md_rel"] + 1e-14
    )
    # sign vote: may differ only by pairs whose margin lies within the direction's error
    ties = int(
        np.sum(np.abs((cot.astype(np.float64) - direct) @ old["_lat"]) <= b["delta_norms"] * 2 * b["lat"] + 1e-12)
    )
    assert abs(new["lat_sign_agreement"] - old["lat_sign_agreement"]) <= ties / b["n"]
    e = b["energy"]
    assert abs(new["lowpass_energy_fraction"] - old["lowpass_energy_fraction"]) <= e
    nn, no = new["lowpass_energy_null"], old["lowpass_energy_null"]
    for k in ("null_mean", "null_q05", "null_q95"):
        assert abs(nn[k] - no[k]) <= e
    if nn["p_value"] != no["p_value"]:  # only if a null value lies within the error of the observed one
        pytest.fail(f"p-value changed: {nn['p_value']} vs {no['p_value']}")
    std = abs(no["null_mean"] - no["null_q95"]) / 1.6 + 1e-300
    assert abs(nn["z"] - no["z"]) <= 3 * e / std * (1 + abs(no["z"])) + 1e-9


@pytest.mark.parametrize("chunk", [7, 4096])
def test_analyse_layer_matches_the_oracle(chunk):
    cfg, items, arrays = synth(n_pairs=150, layers=(0, 1), d=48, seed=3)
    X = arrays["last"]
    for li in range(2):
        cot, direct = X[0::2, li], X[1::2, li]
        new = analyse_layer(cot, direct, n_perm=50, chunk_pairs=chunk)
        old = O.old_analyse_layer(cot, direct, n_perm=50)
        assert_layer_matches_oracle(new, old, cot, direct, chunk)
    if chunk == 4096:  # one chunk: the mean difference is summed exactly as (cot - direct).mean(0) sums it
        assert np.array_equal(mean_difference(cot, direct), O.old_mean_difference(cot, direct))


def test_directions_functions_match_the_oracle():
    rng = np.random.default_rng(1)
    cot = rng.normal(size=(5000, 24)) + 0.2
    direct = rng.normal(size=(5000, 24))
    b = bounds(cot, direct, 4096)
    assert np.all(np.abs(mean_difference(cot, direct) - O.old_mean_difference(cot, direct)) <= b["md"])
    assert abs(dispersion(cot, direct) - O.old_dispersion(cot, direct)) <= b["disp_rel"] * O.old_dispersion(cot, direct)
    c = cutoff_bins(24, 0.3)
    lp = lambda D: lowpass(D, c)  # noqa: E731
    assert (
        abs(dispersion(cot, direct, lp) - O.old_dispersion(cot, direct, lp))
        <= bounds(cot, direct, 4096, 0.3)["disp_lp_abs"]
    )
    new, old = lat_direction(cot, direct, seed=4), O.old_lat_direction(cot, direct, seed=4)
    assert np.linalg.norm(new.direction - old.direction) <= 2 * bounds(cot, direct, 4096, seed=4)["lat"]
    assert new.sign_agreement == old.sign_agreement and new.n_pairs == old.n_pairs
    # one column: the oracle used np.var instead of the covariance trace; the stream needs no special case
    assert dispersion(cot[:, :1], direct[:, :1]) == pytest.approx(
        O.old_dispersion(cot[:, :1], direct[:, :1]), rel=1e-12
    )


def test_analyse_store_streams_v2_and_matches_the_oracle_on_v1(tmp_path):
    cfg, items, arrays = synth(n_pairs=120, layers=(0, 2, 5, 7), d=32, seed=5)
    v1 = write_v1_store(tmp_path / "v1", cfg, items, arrays, batch_size=10)
    v2 = write_store(tmp_path / "v2", cfg, items, arrays, batch_size=10)
    old = O.old_analyse_store(v1, "last", n_perm=40, progress=False)
    new = analyse_store(v2, "last", n_perm=40, progress=False, chunk_pairs=32).to_private_dict()
    assert new["best_layer"] == old["best_layer"] and new["n_pairs"] == old["n_pairs"] == 120
    assert new["layer_order"] == old["layer_order"]
    X = arrays["last"]
    for li, l in enumerate(cfg["layers"]):
        n_l = {
            **new["layers"][l],
            "_mean_diff": new["_directions"]["mean_diff"][l],
            "_lat": new["_directions"]["lat"][l],
        }
        o_l = {
            **old["layers"][l],
            "_mean_diff": old["_directions"]["mean_diff"][l],
            "_lat": old["_directions"]["lat"][l],
        }
        assert_layer_matches_oracle(n_l, o_l, X[0::2, li], X[1::2, li], chunk=32)
    rel = max(bounds(X[0::2, li], X[1::2, li], 32)["md_rel"] for li in range(4))
    np.testing.assert_allclose(new["layer_cosine"], old["layer_cosine"], rtol=0, atol=4 * rel + 1e-14)
    # same code path on the same arrays: a store read equals in-memory arrays exactly
    again = analyse_layer(X[0::2, 1], X[1::2, 1], n_perm=40, chunk_pairs=32)
    assert again["dispersion"] == new["layers"][2]["dispersion"] and np.array_equal(
        again["_lat"], new["_directions"]["lat"][2]
    )


def test_crossmodel_streams_and_matches_the_oracle(tmp_path):
    cfg, items, arrays = synth(n_pairs=60, layers=(0, 1, 2), d=32, seed=6)
    vcfg, _, varrays = synth(n_pairs=60, layers=(0, 2, 4), d=48, seed=7)
    llm = write_store(tmp_path / "l", cfg, items, arrays, batch_size=9)
    vlm = write_store(tmp_path / "v", vcfg, items, varrays, batch_size=9)
    res = crossmodel_analysis(llm, vlm, position="last", n_perm=20)
    for row in res["layers"]:
        la, lb = row["llm_layer"], row["vlm_layer"]
        lc, ld = arrays["last"][0::2, la], arrays["last"][1::2, la]
        vi = vcfg["layers"].index(lb)
        vc, vd = varrays["last"][0::2, vi], varrays["last"][1::2, vi]
        bl, bv = bounds(lc, ld, 4096), bounds(vc, vd, 4096)
        assert abs(row["dispersion_llm"] - O.old_dispersion(lc, ld)) <= bl["disp_rel"] * O.old_dispersion(lc, ld)
        assert abs(row["dispersion_vlm"] - O.old_dispersion(vc, vd)) <= bv["disp_rel"] * O.old_dispersion(vc, vd)
        c = cutoff_bins(48, 0.1)
        old_lp = O.old_dispersion(vc, vd, transform=lambda D: lowpass(D, c))
        assert abs(row["dispersion_vlm_lowpass"] - old_lp) <= bv["disp_lp_abs"]
        from cotscope.analyses.crossmodel import compare_directions

        ref = compare_directions(O.old_mean_difference(lc, ld), O.old_mean_difference(vc, vd), n_perm=20)
        assert abs(row["raw_cosine"] - ref["raw_cosine"]) <= 2 * (bl["md_rel"] + bv["md_rel"]) + 1e-14


def test_pair_moments_are_chunk_size_independent_and_never_build_dxd_for_dispersion():
    rng = np.random.default_rng(2)
    cot, direct = rng.normal(size=(1000, 300)), rng.normal(size=(1000, 300))
    ref = PairMoments(300)
    ref.update(cot, direct)
    for size in (1, 33, 999):
        m = PairMoments(300)
        for s in range(0, 1000, size):
            m.update(cot[s : s + size], direct[s : s + size])
        assert m.dispersion() == pytest.approx(ref.dispersion(), rel=2 * gamma(1000 + 300 + 3 * 1000 + 8))
        assert m.delta.m2.shape == (300,)  # per-coordinate: no 300×300 matrix


def _peak_traced(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_analyse_store_memory_does_not_grow_with_the_number_of_layers(tmp_path):
    """Peak traced allocations of analysing 24 layers ≈ those of 3 layers, far below the store's size.

    The next layer is read ahead in a thread, and a first read verifies each shard file (sha256 over the whole file,
    which holds every layer of its batch) while the current layer is analysed; so the 24-layer peak may exceed the
    3-layer one by the in-flight verification buffers, a small multiple of one shard file (measured: ~2.2 files),
    never by anything that grows with the number of layers analysed."""
    peaks, shard = {}, 0
    for n_layers in (3, 24):
        cfg, items, arrays = synth(n_pairs=1500, layers=tuple(range(n_layers)), d=32, seed=8)
        st = write_store(tmp_path / f"s{n_layers}", cfg, items, arrays, batch_size=64)
        analyse_store(st, "last", layers=[0], n_perm=5, progress=False)  # warm caches/imports
        peaks[n_layers] = _peak_traced(lambda: analyse_store(st, "last", n_perm=5, progress=False))
        shard = max(p.stat().st_size for p in st.path.rglob("*") if p.is_file())
    slice_bytes = 3000 * 32 * 4
    store_bytes = 24 * slice_bytes
    assert peaks[24] <= 1.15 * peaks[3] + 3 * shard, (peaks, shard)
    assert peaks[24] < store_bytes / 2, (peaks, store_bytes)
