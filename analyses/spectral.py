"""Spectral view of directions along the hidden dimension (METHODS.md §3).

* :func:`energy_spectrum` — ``|rfft(v)|²`` per bin, and :func:`cumulative_energy`.
* :func:`lowpass` / :func:`highpass` — the released L2V-CoT mask: keep FFT bins ``[0, c)`` and the
  mirrored ``[d−c, d)``; high-pass is the exact complement ``v − lowpass(v)``.
* :func:`resample` — Fourier resampling between hidden sizes (zero bins ≥ c, truncate or zero-pad
  the rfft, ``irfft(n=d_out)``, rescale to the original norm).
* :func:`permutation_null` — the same statistic after random coordinate permutations: any
  low-frequency claim must beat it, because "frequency" over neuron index depends on an arbitrary order.

>>> v = np.cos(2 * np.pi * 3 * np.arange(64) / 64)
>>> float(np.abs(lowpass(v, 4) - v).max()) < 1e-12
True
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from cotscope.errors import CotscopeError


class CutoffError(CotscopeError):
    """A cutoff outside the spectrum."""


def n_bins(d: int) -> int:
    """Number of rfft bins for a length-``d`` signal."""
    return d // 2 + 1


def cutoff_bins(d: int, cutoff: int | float) -> int:
    """Convert a cutoff to a bin count ``c`` (keep rfft bins ``0..c-1``).

    ``cutoff`` is an ``int`` bin count in ``[1, d//2 + 1]`` or a ``float`` fraction in ``(0, 1]`` of the
    rfft bins (``1.0`` keeps everything).
    """
    nb = n_bins(d)
    if isinstance(cutoff, (bool, np.bool_)):
        raise CutoffError("cutoff must be a bin count (int) or a fraction (float), not a bool")
    if isinstance(cutoff, (int, np.integer)):
        c = int(cutoff)
        if not 1 <= c <= nb:
            raise CutoffError(
                f"cutoff of {c} bins is outside the spectrum of a {d}-dim vector "
                f"(valid 1..{nb} bins, or a fraction in (0, 1])"
            )
        return c
    f = float(cutoff)
    if not (0.0 < f <= 1.0) or not np.isfinite(f):
        raise CutoffError(
            f"cutoff fraction {cutoff} is outside (0, 1]; pass a fraction like 0.1 or a bin count in 1..{nb}"
        )
    return max(1, min(nb, int(round(f * nb))))


def lowpass_mask(d: int, cutoff: int | float) -> np.ndarray:
    """Full-FFT boolean mask of the released code: bins ``[0, c)`` and ``[d-c, d)``."""
    c = cutoff_bins(d, cutoff)
    mask = np.zeros(d, dtype=bool)
    mask[:c] = True
    mask[d - c :] = True
    return mask


def lowpass(v: np.ndarray, cutoff: int | float, axis: int = -1) -> np.ndarray:
    """Keep the lowest ``cutoff`` frequency bins along ``axis`` (real output).

    Implemented with the full FFT and the released mask, so it reproduces L2V-CoT exactly. Note the
    released mask keeps FFT bin ``d-c`` (the mirror of bin ``c``) but not bin ``c`` itself, so after
    ``.real`` the output is rfft bins ``0..c-1`` plus *half* of bin ``c``; METHODS.md's "equivalent to
    rfft bins 0..c-1" is only approximately true. ``c = d//2 + 1`` keeps everything.
    """
    v = np.asarray(v, dtype=np.float64)
    d = v.shape[axis]
    mask = lowpass_mask(d, cutoff)
    shape = [1] * v.ndim
    shape[axis] = d
    F = np.fft.fft(v, axis=axis)
    return np.fft.ifft(F * mask.reshape(shape), axis=axis).real


def lowpass_gain(d: int, cutoff: int | float) -> np.ndarray:
    """Per full-FFT bin gain of :func:`lowpass` as a real operator: ``m_k = (M_k + M_{-k}) / 2``.

    ``lowpass(v) = Re(ifft(M·fft(v)))`` equals ``ifft(m·fft(v))`` for real ``v``: the released mask keeps bin
    ``d−c`` but not its mirror ``c``, so those two bins pass at half amplitude and every other kept bin at 1.

    >>> lowpass_gain(8, 2).tolist()
    [1.0, 1.0, 0.5, 0.0, 0.0, 0.0, 0.5, 1.0]
    """
    M = lowpass_mask(int(d), cutoff).astype(np.float64)
    return 0.5 * (M + M[(-np.arange(int(d))) % int(d)])


def isotropic_lowpass_fraction(d: int, cutoff: int | float) -> float:
    """Share of the energy (or of a covariance trace) that :func:`lowpass` keeps from an **isotropic** input.

    For ``x`` with covariance ``σ²I``, ``E‖lowpass(x)‖² / E‖x‖² = Σ_k m_k² / d`` (:func:`lowpass_gain`). With
    ``1 ≤ c < d/2`` this is exactly ``(2c − 1/2)/d`` (bin 0, ``c−1`` interior bins and their mirrors at gain 1,
    bins ``c`` and ``d−c`` at gain ½); ``c = d//2 + 1`` keeps everything. It is the value a dispersion after a
    low-pass takes *by the filter alone*: 0.1115 of the trace at ``c = 200, d = 3584``.

    >>> isotropic_lowpass_fraction(3584, 200) == (2 * 200 - 0.5) / 3584
    True
    """
    m = lowpass_gain(d, cutoff)
    return float((m * m).sum() / int(d))


def highpass(v: np.ndarray, cutoff: int | float, axis: int = -1) -> np.ndarray:
    """Exact complement of :func:`lowpass`: ``v - lowpass(v)``."""
    v = np.asarray(v, dtype=np.float64)
    return v - lowpass(v, cutoff, axis=axis)


def energy_spectrum(v: np.ndarray, axis: int = -1) -> np.ndarray:
    """Energy per rfft bin, ``|rfft(v)|²``."""
    return np.abs(np.fft.rfft(np.asarray(v, dtype=np.float64), axis=axis)) ** 2


def cumulative_energy(v: np.ndarray) -> np.ndarray:
    """Fraction of (one-sided, Parseval-weighted) energy in bins ``< c`` for every ``c = 1..n_bins``.

    Interior bins count twice (they stand for a pair of mirrored FFT bins), so the last entry is 1.
    """
    v = np.asarray(v, dtype=np.float64)
    d = v.shape[-1]
    e = energy_spectrum(v)
    w = np.full(e.shape[-1], 2.0)
    w[0] = 1.0
    if d % 2 == 0:
        w[-1] = 1.0
    e = e * w
    total = e.sum(-1, keepdims=True)
    return np.cumsum(e, -1) / np.where(total > 0, total, 1.0)


def lowpass_energy_fraction(v: np.ndarray, cutoff: int | float) -> float:
    """Share of ``‖v‖²`` that survives :func:`lowpass` at ``cutoff`` (Parseval)."""
    v = np.asarray(v, dtype=np.float64)
    tot = float(v @ v)
    if tot == 0:
        return 0.0
    lp = lowpass(v, cutoff)
    return float(lp @ lp) / tot


def resample(v: np.ndarray, n_out: int, cutoff: int | float | None = None, keep_norm: bool = True) -> np.ndarray:
    """Fourier-resample a vector (or rows of a matrix) to length ``n_out``.

    ``X = rfft(v)``; bins ≥ ``cutoff`` are zeroed (``None`` keeps all); the spectrum is truncated
    or zero-padded to ``n_out//2 + 1`` bins; ``irfft(n=n_out)``; rescaled to the original norm.
    Resampling to the same size with no cutoff is the identity.
    """
    v = np.asarray(v, dtype=np.float64)
    d = v.shape[-1]
    if n_out < 2:
        raise ValueError(f"n_out must be at least 2, got {n_out}")
    X = np.fft.rfft(v, axis=-1)
    if cutoff is not None:
        c = cutoff_bins(d, cutoff)
        X[..., c:] = 0
    nb_out = n_out // 2 + 1
    Y = np.zeros(v.shape[:-1] + (nb_out,), dtype=complex)
    k = min(nb_out, X.shape[-1])
    Y[..., :k] = X[..., :k]
    out = np.fft.irfft(Y, n=n_out, axis=-1)
    if keep_norm:
        n_in = np.linalg.norm(v, axis=-1, keepdims=True)
        n_o = np.linalg.norm(out, axis=-1, keepdims=True)
        out = out * np.where(n_o > 0, n_in / np.where(n_o > 0, n_o, 1.0), 0.0)
    elif n_out != d:
        out = out * (n_out / d)
    return out


def permutation_null(
    stat: Callable[[np.ndarray], float], *vectors: np.ndarray, n_perm: int = 200, seed: int = 0
) -> dict:
    """Null distribution of ``stat(*permuted_vectors)`` under random coordinate permutations.

    The same permutation is applied to every vector in a call (so cosines between two directions
    are preserved and only the notion of "frequency" is destroyed). Returns observed value, null
    mean/std/quantiles and the one-sided p-value ``(1 + #{null >= obs}) / (1 + n_perm)``.
    """
    if not vectors:
        raise ValueError("permutation_null needs at least one vector")
    d = np.asarray(vectors[0]).shape[-1]
    rng = np.random.default_rng(seed)
    observed = float(stat(*vectors))
    null = np.empty(n_perm)
    for i in range(n_perm):
        p = rng.permutation(d)
        null[i] = stat(*[np.asarray(v)[..., p] for v in vectors])
    return {
        "observed": observed,
        "null_mean": float(null.mean()),
        "null_std": float(null.std(ddof=1)) if n_perm > 1 else 0.0,
        "null_q05": float(np.quantile(null, 0.05)),
        "null_q95": float(np.quantile(null, 0.95)),
        "p_value": float((1 + np.sum(null >= observed)) / (1 + n_perm)),
        "n_perm": n_perm,
        "seed": seed,
        "z": float((observed - null.mean()) / (null.std(ddof=1) + 1e-12)) if n_perm > 1 else 0.0,
    }
