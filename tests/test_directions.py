import numpy as np
import pytest

from cotscope.analyses.directions import (
    PairError,
    cosine,
    cosine_matrix,
    dispersion,
    lat_direction,
    mean_difference,
    probe_accuracy,
)
from cotscope.analyses.spectral import lowpass


def planted(n=200, d=64, shift=2.0, seed=0):
    rng = np.random.default_rng(seed)
    v = rng.normal(size=d)
    v /= np.linalg.norm(v)
    base = rng.normal(size=(n, d))
    return base + shift * v + 0.3 * rng.normal(size=(n, d)), base, v


def test_mean_difference_equals_independent_computation():
    cot, direct, _ = planted()
    ref = np.mean([c - d for c, d in zip(cot, direct)], axis=0)
    assert np.allclose(mean_difference(cot, direct), ref)


def test_lat_equals_independent_svd_computation():
    cot, direct, _ = planted(n=50, d=16, seed=4)
    res = lat_direction(cot, direct, seed=7)
    # independent: same within-pair shuffle, differences, recentre, top right-singular vector
    rng = np.random.default_rng(7)
    flip = rng.random(len(cot)) < 0.5
    a = np.where(flip[:, None], direct, cot)
    b = np.where(flip[:, None], cot, direct)
    D = a - b
    D -= D.mean(0)
    _, _, vt = np.linalg.svd(D, full_matrices=False)
    ref = vt[0]
    centre = np.concatenate([cot, direct]).mean(0)
    if np.mean((cot - centre) @ ref > (direct - centre) @ ref) < 0.5:
        ref = -ref
    assert np.allclose(res.direction, ref, atol=1e-8)
    assert res.sign_agreement > 0.9


def test_planted_direction_is_recovered():
    cot, direct, v = planted()
    assert cosine(mean_difference(cot, direct), v) > 0.98
    assert cosine(lat_direction(cot, direct).direction, v) > 0.98  # sign: CoT side positive
    assert probe_accuracy(cot, direct)["test_accuracy"] > 0.7
    null_cot, null_dir, _ = planted(shift=0.0)
    assert probe_accuracy(null_cot, null_dir)["test_accuracy"] < 0.75


def test_dispersion_is_trace_of_covariance_and_lowpass_reduces_it():
    cot, direct, _ = planted(d=64)
    D = cot - direct
    assert np.isclose(dispersion(cot, direct), np.trace(np.cov(D.T)))
    assert dispersion(cot, direct, transform=lambda x: lowpass(x, 4)) < dispersion(cot, direct)


def test_cosine_matrix_symmetric_unit_diagonal():
    M = cosine_matrix(np.random.default_rng(0).normal(size=(5, 8)))
    assert np.allclose(M, M.T) and np.allclose(np.diag(M), 1)


def test_bad_pairs_are_refused():
    a = np.zeros((5, 4))
    with pytest.raises(PairError, match="unequal"):
        mean_difference(a, np.zeros((4, 4)))
    with pytest.raises(PairError, match="at least"):
        mean_difference(np.zeros((0, 4)), np.zeros((0, 4)))
    with pytest.raises(PairError, match="at least 4 pairs"):
        probe_accuracy(np.zeros((3, 4)), np.ones((3, 4)))
