"""Cutoffs as bins or fractions (analyses.cutoff) and the released L2V-CoT values."""

import numpy as np
import pytest

from cotscope.analyses.cutoff import argparse_cutoff, cutoff_kind, describe_cutoff, parse_cutoff
from cotscope.analyses.spectral import CutoffError, cutoff_bins, lowpass


@pytest.mark.parametrize(
    "text,expected",
    [
        ("200", 200),
        ("200b", 200),
        ("200 bins", 200),
        ("bins:900", 900),
        ("bin=1", 1),
        ("0.1", 0.1),
        (".25", 0.25),
        ("10%", 0.1),
        ("frac:0.05", 0.05),
        ("fraction=1.0", 1.0),
        ("1e-1", 0.1),
    ],
)
def test_strings(text, expected):
    got = parse_cutoff(text)
    assert got == expected and type(got) is type(expected)


def test_python_values_keep_their_kind():
    assert parse_cutoff(np.int64(200)) == 200 and isinstance(parse_cutoff(np.int64(200)), int)
    assert isinstance(parse_cutoff(np.float32(0.5)), float)
    assert cutoff_kind(1) == "bins" and cutoff_kind(1.0) == "fraction"


@pytest.mark.parametrize(
    "bad,words",
    [
        (0, "keeps nothing"),
        (-3, "keeps nothing"),
        (1.5, "outside (0, 1]"),
        (200.0, "pass the integer 200"),
        ("abc", "cannot read"),
        (True, "not a cutoff"),
        (None, "not a cutoff"),
        ([1], "not supported"),
        ("0%", "outside"),
    ],
)
def test_errors_name_the_forms(bad, words):
    with pytest.raises(CutoffError, match="bin count") as e:
        parse_cutoff(bad)
    assert words in str(e.value)
    assert isinstance(e.value, ValueError)


def test_argparse_type():
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("--cutoff", type=argparse_cutoff)
    assert p.parse_args(["--cutoff", "900"]).cutoff == 900
    with pytest.raises(SystemExit):
        p.parse_args(["--cutoff", "lots"])


def test_released_cutoffs_as_bins():
    # the released code keeps FFT bins [:c] and [-c:]: c = 200 at d = 3584 and c = 900 at d = 4096
    for d, c, frac in [(3584, 200, 0.1115), (4096, 900, 0.4392)]:
        rec = describe_cutoff(c, d)
        assert rec["bins"] == c and rec["kind"] == "bins" and rec["fraction_of_bins"] == frac
        v = np.random.default_rng(0).normal(size=d)
        F = np.fft.fft(v)
        mask = np.zeros(d)
        mask[:c] = 1
        mask[-c:] = 1
        assert np.allclose(lowpass(v, c), np.fft.ifft(F * mask).real, atol=1e-12)
    # the same fraction means different bins at different widths; the same bin count does not
    assert cutoff_bins(576, 0.1) == 29 and cutoff_bins(3584, 0.1) == 179
