"""Dispersion after a low-pass, with the two references it needs (METHODS.md §9).

L2V-CoT reports the dispersion (trace of the covariance of per-pair differences) of VLM CoT states before
and after a low-pass (1117.8 → 197.7). A low-pass keeps part of the trace of *any* input, so the measured
value means little alone. :func:`lowpass_dispersion` reports beside it:

* the **isotropic expectation**: ``trace × Σ_k m_k²/d`` (:func:`analyses.spectral.isotropic_lowpass_fraction`,
  ≈ 2c/d), what a filter keeps from differences with no preferred frequency;
* a **permutation null**: the same statistic after random permutations of the hidden coordinates (one
  permutation for all pairs), which keeps the covariance spectrum's eigenvalues and the trace but destroys
  any order along the hidden axis. ``p_value`` is the share of permutations keeping at least as much.

Both compare the share kept, ``dispersion_lowpass / dispersion``; a low-frequency concentration shows up as
a ratio above the isotropic fraction and above the null. They can disagree: bin 0 (the mean over the hidden
coordinates) is the same under every permutation, so differences with a large coordinate mean look
"low-frequency" to the isotropic reference but not to the null.

>>> rng = np.random.default_rng(0)
>>> r = lowpass_dispersion(rng.normal(size=(64, 128)), rng.normal(size=(64, 128)), 0.1, n_perm=50)
>>> abs(r["kept_fraction"] - r["isotropic_fraction"]) < 0.05, r["p_value"] > 0.05
(True, True)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from cotscope.analyses.directions import check_pairs
from cotscope.analyses.spectral import cutoff_bins, isotropic_lowpass_fraction, lowpass_gain


def _rfft_weights(d: int, cutoff: int | float) -> np.ndarray:
    """Weights ``w_k`` over rfft bins such that ``‖lowpass(x)‖² = Σ_k w_k |rfft(x)_k|² / d``."""
    m = lowpass_gain(d, cutoff)[: d // 2 + 1]
    w = np.full(d // 2 + 1, 2.0)
    w[0] = 1.0
    if d % 2 == 0:
        w[-1] = 1.0
    return w * m * m


def _kept(Dt: np.ndarray, w: np.ndarray) -> float:
    """``Σ_i ‖lowpass(x_i)‖²`` for the columns ``x_i`` of ``Dt`` (``[d, n]``, centred), through the rfft.

    The null calls this with float32 data (scipy's float32 FFT is several times faster than numpy's float64 one,
    and a column layout makes each permutation a row gather); the relative error of a float32 FFT (~1e-6) is far
    below the spread of any null quantile.
    """
    import scipy.fft

    d = Dt.shape[0]
    F = scipy.fft.rfft(Dt, axis=0)
    P = np.abs(F)
    P *= P
    return float(np.einsum("kn,k->", P, w.astype(P.dtype), dtype=np.float64) / d)


# Up to this hidden size the null goes through the d×d scatter matrix (float64: 128 MB at d = 4096), which makes each
# permutation an O(d²) gather instead of an FFT over every pair; above it, the FFT route keeps memory at one chunk.
COV_NULL_MAX_D = 4096


def _circulant_quadratic_form(d: int, w: np.ndarray) -> np.ndarray:
    """``Q`` (``[d, d]``, circulant) with ``xᵀ Q x = Σ_k w_k |rfft(x)_k|² / d`` for every real ``x``.

    ``|X_k|² = Σ_{a,b} x_a x_b cos(2πk(a-b)/d)``, so ``Q[a, b] = q[(a-b) mod d]`` with ``q[t] = Σ_k w_k cos(2πkt/d) / d``.
    """
    k = np.arange(w.size)
    t = np.arange(d)
    q = (w[None, :] * np.cos(2 * np.pi * np.outer(t, k) / d)).sum(1) / d
    return q[(t[:, None] - t[None, :]) % d]


def _null_kept(
    chunks: Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]] | None,
    mu: np.ndarray,
    perms: list[np.ndarray],
    w: np.ndarray,
    d: int,
    route: str,
    scatter: np.ndarray | None = None,
) -> np.ndarray:
    """``Σ_i ‖lowpass(x_i[p])‖²`` for each permutation ``p``, over the centred differences the chunks yield.

    ``route="cov"`` accumulates the scatter matrix ``S = Σ_i x_i x_iᵀ`` once and reads each permutation as
    ``Σ_{a,b} Q[a,b] S[p_a, p_b]``; ``route="fft"`` transforms every permuted pair (float32). The two agree to the
    float32 FFT's relative error (~1e-6; tests/test_dispersion.py checks it). A ``scatter`` already accumulated (the
    centred ``S``, e.g. from the LAT pass: :func:`centred_scatter`) replaces the pass over the chunks.
    """
    kept = np.zeros(len(perms))
    if route == "cov":
        if scatter is None:
            S = np.zeros((d, d))
            for cot, direct in chunks():
                X = np.asarray(cot, np.float64) - np.asarray(direct, np.float64) - mu
                S += X.T @ X
        else:
            S = scatter
        Q = _circulant_quadratic_form(d, w)
        for k, p in enumerate(perms):
            kept[k] = float(np.einsum("ab,ab->", Q, S[np.ix_(p, p)]))
        return kept
    for cot, direct in chunks():
        Dt32 = np.ascontiguousarray(
            (np.asarray(cot, np.float64) - np.asarray(direct, np.float64) - mu).T, dtype=np.float32
        )
        for k, p in enumerate(perms):
            kept[k] += _kept(Dt32[p], w)
    return kept


def centred_scatter(m2_about: np.ndarray, mean_about: np.ndarray, mean: np.ndarray, n: int) -> np.ndarray:
    """The scatter ``Σ_i (δ_i − μ)(δ_i − μ)ᵀ`` from one accumulated about another centre ``c``:
    ``S_c + n (c cᵀ − μ μᵀ)`` (rows with sign flips have the same ``Σ δ δᵀ``, so LAT's scatter of ``±δ`` serves).

    >>> rng = np.random.default_rng(0); D = rng.normal(size=(50, 3)); F = D * np.where(rng.random(50) < .5, -1, 1)[:, None]
    >>> S_f = (F - F.mean(0)).T @ (F - F.mean(0))
    >>> bool(np.allclose(centred_scatter(S_f, F.mean(0), D.mean(0), 50), (D - D.mean(0)).T @ (D - D.mean(0))))
    True
    """
    return m2_about + n * (np.outer(mean_about, mean_about) - np.outer(mean, mean))


def lowpass_scatter_trace(scatter: np.ndarray, cutoff: int | float) -> float:
    """``Σ_i ‖lowpass(x_i)‖²`` from the centred scatter of the ``x_i`` (``trace(Q S)``, ``Q`` the filter's circulant
    quadratic form): the low-passed dispersion times ``n − 1``, without transforming any row."""
    d = scatter.shape[0]
    return float(np.einsum("ab,ab->", _circulant_quadratic_form(d, _rfft_weights(d, cutoff)), scatter))


def dispersion_references(
    dispersion: float,
    dispersion_lowpass: float,
    d: int,
    cutoff: int | float,
    *,
    chunks: Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]] | None = None,
    mean_diff: np.ndarray | None = None,
    n_pairs: int | None = None,
    n_perm: int = 200,
    seed: int = 0,
    route: str | None = None,
    scatter: np.ndarray | None = None,
) -> dict[str, Any]:
    """The references of a low-passed dispersion already measured (e.g. by a streaming pass).

    The isotropic expectation needs only the trace. The permutation null streams the pairs once more:
    ``chunks()`` yields ``(cot, direct)`` blocks, ``mean_diff`` is the mean difference and ``n_pairs`` the count (the
    same permutations are applied to every block). Without ``chunks`` only the isotropic reference is returned.
    ``route``: ``"cov"`` (d×d scatter matrix, fast) or ``"fft"`` (per pair, memory of one chunk); default ``"cov"``
    up to :data:`COV_NULL_MAX_D` hidden dimensions. ``scatter``: the centred d×d scatter of the differences if the
    caller already has it (:func:`centred_scatter`); the ``"cov"`` route then reads no chunks.
    """
    iso = isotropic_lowpass_fraction(d, cutoff)
    total, obs = float(dispersion), float(dispersion_lowpass)
    out: dict[str, Any] = {
        "cutoff": cutoff,
        "cutoff_bins": cutoff_bins(d, cutoff),
        "hidden_size": int(d),
        "n_pairs": n_pairs,
        "dispersion": total,
        "dispersion_lowpass": obs,
        "kept_fraction": obs / total if total > 0 else float("nan"),
        "isotropic_fraction": iso,
        "isotropic_expected": total * iso,
        "ratio_to_isotropic": obs / (total * iso) if total > 0 else float("nan"),
        "n_perm": int(n_perm),
        "seed": seed,
    }
    if (chunks is None and scatter is None) or n_perm <= 0:
        return out
    if mean_diff is None or n_pairs is None or n_pairs < 2:
        raise ValueError("the permutation null needs mean_diff and n_pairs >= 2 beside chunks")
    w = _rfft_weights(int(d), cutoff)
    rng = np.random.default_rng(seed)
    perms = [rng.permutation(int(d)) for _ in range(int(n_perm))]
    route = route or ("cov" if d <= COV_NULL_MAX_D or chunks is None else "fft")
    if route not in ("cov", "fft"):
        raise ValueError(f"route={route!r}; use 'cov' (scatter matrix) or 'fft' (per pair)")
    if route == "fft" and chunks is None:
        raise ValueError("route='fft' streams the pairs: pass chunks")
    mu = np.asarray(mean_diff, dtype=np.float64)
    kept = _null_kept(chunks, mu, perms, w, int(d), route, scatter=scatter if route == "cov" else None)
    null = kept / (n_pairs - 1)
    out.update(
        {
            "null_mean": float(null.mean()),
            "null_q05": float(np.quantile(null, 0.05)),
            "null_q95": float(np.quantile(null, 0.95)),
            "p_value": float((1 + np.sum(null >= obs)) / (1 + n_perm)),
        }
    )
    return out


def lowpass_dispersion(
    cot: np.ndarray, direct: np.ndarray, cutoff: int | float, *, n_perm: int = 200, seed: int = 0
) -> dict[str, Any]:
    """Dispersion of the per-pair differences before and after :func:`~analyses.spectral.lowpass`, with references.

    Returns ``dispersion``, ``dispersion_lowpass``, ``kept_fraction`` (their ratio), ``isotropic_fraction`` and
    ``isotropic_expected`` (= dispersion × isotropic fraction), ``ratio_to_isotropic``, the permutation null of the
    low-passed dispersion (``null_mean``, ``null_q05``, ``null_q95``, ``p_value`` = P(null ≥ observed)), the cutoff
    (as given and in bins) and ``n_perm``/``seed``. Values equal :func:`analyses.directions.dispersion` (with and
    without ``transform=lowpass``) up to float64 rounding.
    """
    cot, direct = check_pairs(cot, direct, min_pairs=2)
    D = cot - direct
    n, d = D.shape
    mu = D.mean(0)
    Dc = D - mu
    total = float((Dc * Dc).sum() / (n - 1))
    obs = _kept(np.ascontiguousarray(Dc.T), _rfft_weights(d, cutoff)) / (n - 1)
    return dispersion_references(
        total, obs, d, cutoff, chunks=lambda: [(cot, direct)], mean_diff=mu, n_pairs=n, n_perm=n_perm, seed=seed
    )


def compact(ref: dict[str, Any], digits: int = 4) -> dict[str, Any]:
    """The rounded subset of :func:`lowpass_dispersion` that goes into ``summary.json``."""
    keys = (
        "dispersion",
        "dispersion_lowpass",
        "kept_fraction",
        "isotropic_fraction",
        "isotropic_expected",
        "ratio_to_isotropic",
        "null_mean",
        "null_q05",
        "null_q95",
        "p_value",
        "cutoff_bins",
    )
    return {k: (round(float(ref[k]), digits) if isinstance(ref[k], float) else ref[k]) for k in keys if k in ref}
