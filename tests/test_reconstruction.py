"""analyses.reconstruction: pooling, the ridge probe and its shuffled baseline, patch-similarity data."""

from __future__ import annotations

import numpy as np
import pytest

from cotscope.analyses import reconstruction as R


def test_avg_pool_matches_block_means_and_adaptive_bins():
    x = np.arange(2 * 256 * 3, dtype=float).reshape(2, 256, 3)
    y = R.avg_pool_tokens(x, 32)  # the paper's 256 → 32
    assert y.shape == (2, 32, 3)
    np.testing.assert_allclose(y[1, 5], x[1, 40:48].mean(0))
    z = R.avg_pool_tokens(np.arange(5.0)[:, None], 2)  # bins [0, 3) and [2, 5), as adaptive_avg_pool1d
    np.testing.assert_allclose(z[:, 0], [1.0, 3.0])
    np.testing.assert_allclose(R.avg_pool_tokens(x, 256), x)
    with pytest.raises(R.ReconstructionError, match="cannot pool 256"):
        R.avg_pool_tokens(x, 300)


def _planted(n=160, d=24, k=8, dv=6, noise=0.05, seed=0):
    rng = np.random.default_rng(seed)
    H = {l: rng.normal(size=(n, d)) for l in range(3)}
    W = rng.normal(size=(d, k * dv)) / np.sqrt(d)
    V = (H[1] @ W).reshape(n, k, dv) + noise * rng.normal(size=(n, k, dv)) + 2.0  # shared mean offset
    return H, V


def test_ridge_probe_recovers_a_planted_linear_map_and_shuffling_does_not():
    H, V = _planted()
    res = R.fit_reconstruction_probes(H, V, n_tokens=8, progress=False)
    rows = {r["layer"]: r for r in res.rows}
    good = rows[1]
    assert good["r2"] > 0.9 and good["cos_centered"] > 0.95 and good["cos"] > 0.99
    assert good["r2_shuffled"] < 0.1 and good["cos_centered_shuffled"] < 0.3
    assert good["mse"] < 0.1 * good["mse_shuffled"]
    for l in (0, 2):  # layers without the signal stay at the baseline
        assert rows[l]["r2"] < 0.1 and rows[l]["cos_centered"] < 0.3
    # the raw cosine alone is misleading: predicting the training mean already scores high
    assert good["cos_mean_baseline"] > 0.8
    s = res.summary()
    assert s["recon_best_layer"] == 1 and s["recon_n_train"] + s["recon_n_test"] == 160


def test_pooling_happens_before_fitting():
    H, V = _planted(k=8)
    res = R.fit_reconstruction_probes(H, V, layers=[1], n_tokens=2, progress=False)
    assert res.n_tokens == 2 and res.rows[0]["r2"] > 0.9
    assert res.settings["target_tokens"] == 8


def test_groups_keep_images_out_of_training():
    tr, te = R._split(12, np.repeat(np.arange(6), 2), 0.34, 0)
    groups = np.repeat(np.arange(6), 2)
    assert set(groups[tr]).isdisjoint(groups[te]) and len(te) > 0
    H, V = _planted(n=120)
    res = R.fit_reconstruction_probes(H, V, layers=[1], n_tokens=8, groups=np.repeat(np.arange(60), 2), progress=False)
    assert res.settings["grouped"] and res.rows[0]["r2"] > 0.8


def test_bad_inputs_give_clear_errors():
    H, V = _planted(n=40)
    with pytest.raises(R.ReconstructionError, match=r"layers \[7\] are not in the hidden-state store"):
        R.fit_reconstruction_probes(H, V, layers=[1, 7], n_tokens=8, progress=False)
    with pytest.raises(R.ReconstructionError, match="one row per target image"):
        R.fit_reconstruction_probes({0: H[0][:30]}, V, n_tokens=8, progress=False)
    with pytest.raises(R.ReconstructionError, match="cannot pool 8"):
        R.fit_reconstruction_probes(H, V, n_tokens=32, progress=False)
    with pytest.raises(R.ReconstructionError, match="at least 4 distinct images"):
        R.fit_reconstruction_probes(H, V, n_tokens=8, groups=[0, 1] * 20, progress=False)
    with pytest.raises(R.ReconstructionError, match="mapping or an"):
        R.fit_reconstruction_probes(np.zeros((40, 5)), V, n_tokens=8, progress=False)
    # an [N, layers, D] array is a store too
    arr = np.stack([H[l] for l in range(3)], 1)
    assert [
        r["layer"] for r in R.fit_reconstruction_probes(arr, V, n_tokens=4, progress=False, shuffle_baseline=False).rows
    ] == [0, 1, 2]


def test_patch_similarity_values_and_grids():
    rng = np.random.default_rng(0)
    P = rng.normal(size=(16, 8))
    h = np.stack([P[5], -P[2]])
    m = R.patch_similarity(h, P)
    assert m.shape == (2, 4, 4)
    assert m[0, 1, 1] == pytest.approx(1.0) and m[1, 0, 2] == pytest.approx(-1.0)
    manual = P[3] @ P[5] / np.linalg.norm(P[3]) / np.linalg.norm(P[5])
    assert m[0, 0, 3] == pytest.approx(manual)
    assert R.patch_similarity(P[0], P[: 20 - 8], grid=(3, 4)).shape == (1, 3, 4)
    assert R.patch_similarity(P[0], P[:5]).shape == (1, 1, 5)
    with pytest.raises(R.ReconstructionError, match="hidden size 9 differs"):
        R.patch_similarity(np.zeros(9), P)
    with pytest.raises(R.ReconstructionError, match="does not hold"):
        R.patch_similarity(P[0], P, grid=(3, 3))


def test_figures_draw_from_stored_results(tmp_path):
    from cotscope.figures import fig_patch_similarity, fig_reconstruction

    H, V = _planted()
    data = R.fit_reconstruction_probes(H, V, n_tokens=4, progress=False).to_dict()
    data["patch_similarity"] = {
        "layers": [0, 2],
        "cos": R.patch_similarity(np.stack([H[0][0][:6], H[2][0][:6]]), V[0]).tolist(),
    }
    fig = fig_reconstruction.draw(data)
    assert len(fig.axes) == 3 and len(fig.axes[1].lines) == 2  # probe + shuffled baseline
    assert len(fig_patch_similarity.draw(data).axes) == 3  # two maps + colour bar
    for mod in (fig_reconstruction, fig_patch_similarity):
        assert all(p.stat().st_size > 1000 for p in mod.save(data, tmp_path))
