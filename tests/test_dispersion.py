"""Dispersion after a low-pass with its isotropic expectation and permutation null (analyses.dispersion)."""

import numpy as np
import pytest

from cotscope.analyses.directions import dispersion
from cotscope.analyses.dispersion import lowpass_dispersion
from cotscope.analyses.spectral import isotropic_lowpass_fraction, lowpass, lowpass_gain


@pytest.mark.parametrize("d,c", [(576, 29), (3584, 200), (4096, 900), (9, 4), (10, 3), (64, 1)])
def test_isotropic_fraction_is_exact(d, c):
    # closed form for 2c < d, and equal to the trace of the low-pass operator built column by column
    assert isotropic_lowpass_fraction(d, c) == pytest.approx((2 * c - 0.5) / d, abs=1e-12) if c > 0 else True
    if d <= 600:
        P = lowpass(np.eye(d), c, axis=0)  # the operator's matrix
        assert np.trace(P.T @ P) / d == pytest.approx(isotropic_lowpass_fraction(d, c), abs=1e-10)


def test_full_band_keeps_everything():
    assert isotropic_lowpass_fraction(10, 6) == 1.0 and np.all(lowpass_gain(10, 6) == 1.0)


def test_matches_directions_dispersion():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(40, 96)), rng.normal(size=(40, 96))
    r = lowpass_dispersion(a, b, 10, n_perm=20)
    assert r["dispersion"] == pytest.approx(dispersion(a, b), rel=1e-12)
    assert r["dispersion_lowpass"] == pytest.approx(dispersion(a, b, transform=lambda D: lowpass(D, 10)), rel=1e-12)
    assert r["kept_fraction"] == pytest.approx(r["dispersion_lowpass"] / r["dispersion"])


def test_isotropic_differences_sit_at_both_references():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 256))
    r = lowpass_dispersion(a, np.zeros_like(a), 0.1, n_perm=100)
    # 400 isotropic draws: the kept share is within a few percent of (2c - 1/2)/d, and the null agrees
    assert abs(r["ratio_to_isotropic"] - 1) < 0.05
    assert abs(r["null_mean"] / r["isotropic_expected"] - 1) < 0.05
    assert r["p_value"] > 0.05


def test_smooth_differences_beat_the_null():
    rng = np.random.default_rng(1)
    smooth = np.cumsum(rng.normal(size=(60, 256)), axis=1)  # random walks: energy at low frequency
    r = lowpass_dispersion(smooth, np.zeros_like(smooth), 0.1, n_perm=100)
    assert r["kept_fraction"] > 0.8 > r["null_q95"] / r["dispersion"]
    assert r["p_value"] == pytest.approx(1 / 101)


def test_the_null_keeps_what_a_permutation_cannot_move():
    # Random walks drift, so much of their energy sits in bin 0 (the mean over coordinates), which no coordinate
    # permutation changes. After scrambling the order the isotropic reference still calls them "low-frequency"
    # (ratio > 2), the permutation null does not (p > 0.01): the reason both references are reported.
    rng = np.random.default_rng(2)
    smooth = np.cumsum(rng.normal(size=(60, 128)), axis=1)
    p = rng.permutation(128)
    r = lowpass_dispersion(smooth[:, p], np.zeros_like(smooth), 0.1, n_perm=50)
    assert r["ratio_to_isotropic"] > 2 and r["p_value"] > 0.01


@pytest.mark.parametrize("d", [64, 75])  # even d has a Nyquist bin, odd d has none
def test_scatter_matrix_null_equals_the_fft_null(d):
    """Two routes to the same permutation null: the d×d scatter matrix (quadratic form of a circulant) and a
    float32 FFT per permuted pair. The FFT's relative error is ~1e-6 per transform; 1e-5 leaves 10× margin."""
    from cotscope.analyses.dispersion import dispersion_references

    rng = np.random.default_rng(3)
    cot, direct = rng.normal(size=(40, d)), rng.normal(size=(40, d))
    mu = (cot - direct).mean(0)
    kw = dict(chunks=lambda: [(cot[:25], direct[:25]), (cot[25:], direct[25:])], mean_diff=mu, n_pairs=40)
    a = dispersion_references(1.0, 0.2, d, 0.1, route="cov", n_perm=30, **kw)
    b = dispersion_references(1.0, 0.2, d, 0.1, route="fft", n_perm=30, **kw)
    for k in ("null_mean", "null_q05", "null_q95"):
        assert a[k] == pytest.approx(b[k], rel=1e-5), k
    assert a["p_value"] == b["p_value"]
    with pytest.raises(ValueError, match="route="):
        dispersion_references(1.0, 0.2, d, 0.1, route="svd", **kw)


def test_lat_scatter_serves_the_lowpassed_dispersion_and_its_null():
    """analyse_layer reads the low-passed dispersion (trace(Q S)) and the null from LAT's scatter of ±δ, re-centred;
    the streamed route low-passes every row and accumulates its own scatter. Same numbers in float64: both are sums
    of the same ~n·d products in another order, so rel 1e-9 (far above 1e-16·n·d, far below any null spread)."""
    from cotscope.analyses.dispersion import centred_scatter, dispersion_references, lowpass_scatter_trace
    from cotscope.analyses.streaming import PairMoments, chunks, lat_flips

    rng = np.random.default_rng(7)
    cot = rng.normal(size=(300, 64)) + np.sin(np.arange(64) / 5)  # a low-frequency shift: a non-zero mean
    direct = rng.normal(size=(300, 64))
    m = PairMoments(64, transform=lambda D: lowpass(D, 6), lat_flips=lat_flips(300, 0))
    for c, d in chunks(cot, direct, 64):
        m.update(c, d)
    S = centred_scatter(m.lat.m2, m.lat.mean, m.mean_difference(), 300)
    assert lowpass_scatter_trace(S, 6) / 299 == pytest.approx(m.dispersion_transformed(), rel=1e-9)
    kw = dict(mean_diff=m.mean_difference(), n_pairs=300, n_perm=30, seed=1, route="cov")
    streamed = dispersion_references(m.dispersion(), m.dispersion_transformed(), 64, 6,
                                     chunks=lambda: chunks(cot, direct, 64), **kw)  # fmt: skip
    shared = dispersion_references(m.dispersion(), m.dispersion_transformed(), 64, 6, scatter=S, **kw)
    for k in ("null_mean", "null_q05", "null_q95"):
        assert shared[k] == pytest.approx(streamed[k], rel=1e-9), k
    assert shared["p_value"] == streamed["p_value"]
