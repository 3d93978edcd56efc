import numpy as np
import pytest

from cotscope.analyses.spectral import (
    CutoffError,
    cumulative_energy,
    cutoff_bins,
    energy_spectrum,
    highpass,
    lowpass,
    lowpass_energy_fraction,
    lowpass_mask,
    permutation_null,
    resample,
)


def released_lowpass(v, c):
    """Independent copy of the released L2V-CoT filter (torch.fft in the original; numpy here)."""
    F = np.fft.fft(v)
    d = len(v)
    mask = np.zeros(d)
    mask[:c] = 1
    mask[-c:] = 1
    return np.fft.ifft(F * mask).real


@pytest.mark.parametrize("d,c", [(576, 29), (576, 200), (3584, 200), (4096, 900), (15, 3)])
def test_lowpass_matches_released_mask(d, c):
    v = np.random.default_rng(d + c).normal(size=d)
    assert np.allclose(lowpass(v, c), released_lowpass(v, c), atol=1e-12)
    assert lowpass_mask(d, c).sum() == min(d, 2 * c)


def test_lowpass_highpass_are_exact_complements():
    v = np.random.default_rng(0).normal(size=(4, 576))
    for c in (1, 10, 0.1, 0.5, 289):
        assert np.allclose(lowpass(v, c) + highpass(v, c), v, atol=1e-12)
    assert np.allclose(lowpass(v, 289), v, atol=1e-12)  # full cutoff keeps everything


def test_cutoff_as_bins_or_fraction_and_errors():
    assert cutoff_bins(576, 29) == 29
    assert cutoff_bins(576, 0.1) == round(0.1 * 289)
    for bad in (0, 290, -1, 0.0, 1.5, float("nan")):
        with pytest.raises(CutoffError, match="outside"):
            lowpass(np.ones(576), bad)


def test_resample_identity_and_low_frequency_round_trip():
    rng = np.random.default_rng(1)
    v = rng.normal(size=576)
    assert np.allclose(resample(v, 576), v, atol=1e-12)
    smooth = lowpass(v, 40)
    back = resample(resample(smooth, 3584), 576)
    assert np.dot(back, smooth) / np.linalg.norm(back) / np.linalg.norm(smooth) > 0.99
    down = resample(resample(v, 256), 576)  # broadband content does not survive a down-up trip
    assert np.dot(down, v) / np.linalg.norm(down) / np.linalg.norm(v) < 0.9
    assert np.isclose(np.linalg.norm(resample(v, 1000)), np.linalg.norm(v))


def test_energy_and_cumulative():
    v = np.random.default_rng(2).normal(size=100)
    e = energy_spectrum(v)
    assert e.shape == (51,)
    cum = cumulative_energy(v)
    assert np.all(np.diff(cum) >= -1e-12) and np.isclose(cum[-1], 1.0)
    assert 0 <= lowpass_energy_fraction(v, 10) <= 1


def test_permutation_null_is_beaten_by_planted_low_frequency_and_not_by_noise():
    rng = np.random.default_rng(3)
    d, c = 576, 29
    smooth = lowpass(rng.normal(size=d), 10) + 0.02 * rng.normal(size=d)
    stat = lambda x: lowpass_energy_fraction(x, c)
    planted = permutation_null(stat, smooth, n_perm=200, seed=0)
    assert planted["p_value"] < 0.01 and planted["observed"] > planted["null_q95"]
    noise_ps = [permutation_null(stat, rng.normal(size=d), n_perm=100, seed=s)["p_value"] for s in range(20)]
    assert np.mean(np.array(noise_ps) < 0.05) <= 0.2  # roughly nominal: white noise rarely beats the null
