"""Streaming statistics of paired activations: one pass over chunks of pairs, memory O(chunk + d²).

:class:`PairMoments` accumulates, over chunks of ``(cot, direct)`` pairs, in float64:

* the sum of the differences ``δ = cot − direct`` (→ the mean difference, summed then divided like
  ``δ.mean(0)``; with one chunk the result is bit-identical to it);
* per-coordinate centred sums of squares of ``δ`` (→ dispersion = Σ_j var(δ_j) = trace of the covariance,
  without ever forming the d×d covariance), optionally also of a row-wise transform of ``δ`` such as a low-pass;
* optionally the centred d×d scatter of the LAT differences ``±δ`` (→ the LAT direction as the top
  eigenvector of that scatter: the PCA of the differences, as sklearn's ``covariance_eigh`` solver does it).

Chunks are merged with Chan et al.'s pairwise update (mean and centred sums of squares of two
blocks combine exactly in exact arithmetic), so the result does not depend on the chunk size beyond
rounding.

>>> rng = np.random.default_rng(0); cot = rng.normal(size=(300, 8)); direct = rng.normal(size=(300, 8))
>>> m = PairMoments(8)
>>> for s in range(0, 300, 64): m.update(cot[s:s + 64], direct[s:s + 64])
>>> bool(np.allclose(m.mean_difference(), (cot - direct).mean(0)))
True
>>> bool(np.isclose(m.dispersion(), np.trace(np.cov(cot - direct, rowvar=False))))
True
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np

CHUNK_PAIRS = 4096


class _Moments:
    """Count, mean and centred sum of squares (per coordinate, or the full d×d scatter) of rows."""

    def __init__(self, d: int, full: bool = False) -> None:
        self.n = 0
        self.mean = np.zeros(d)
        self.m2 = np.zeros((d, d) if full else d)
        self.full = full

    def update(self, X: np.ndarray) -> None:
        m = X.shape[0]
        if m == 0:
            return
        mean_b = X.sum(0) / m
        Xc = X - mean_b
        m2_b = Xc.T @ Xc if self.full else np.einsum("ij,ij->j", Xc, Xc)
        if self.n == 0:
            self.n, self.mean, self.m2 = m, mean_b, m2_b
            return
        n = self.n + m
        delta = mean_b - self.mean
        w = self.n * m / n
        self.m2 = self.m2 + m2_b + (np.outer(delta, delta) if self.full else delta * delta) * w
        self.mean = self.mean + delta * (m / n)
        self.n = n


class PairMoments:
    """One-pass moments of paired differences (see the module docstring).

    Args:
        d: width of the rows.
        transform: optional row-wise map of ``δ`` chunks (e.g. ``lambda D: lowpass(D, c)``) whose dispersion
            is also wanted.
        lat_flips: boolean ``[n_pairs]``: pair ``i``'s LAT difference is ``direct − cot`` where ``True``; pass it to
            accumulate the LAT scatter.
    """

    def __init__(
        self,
        d: int,
        *,
        transform: Callable[[np.ndarray], np.ndarray] | None = None,
        lat_flips: np.ndarray | None = None,
    ) -> None:
        self.d = d
        self.n = 0
        self.sum_delta = np.zeros(d)
        self.sum_cot = np.zeros(d)
        self.sum_direct = np.zeros(d)
        self.delta = _Moments(d)
        self.transform = transform
        self.transformed = _Moments(d) if transform is not None else None
        self.lat_flips = None if lat_flips is None else np.asarray(lat_flips, dtype=bool)
        self.lat = _Moments(d, full=True) if lat_flips is not None else None

    def update(self, cot: np.ndarray, direct: np.ndarray) -> None:
        """Add the next chunk of pairs (rows in the order the pairs are numbered)."""
        cot = np.asarray(cot, dtype=np.float64)
        direct = np.asarray(direct, dtype=np.float64)
        if cot.shape != direct.shape or cot.ndim != 2 or cot.shape[1] != self.d:
            raise ValueError(f"chunks must both be [m, {self.d}], got {cot.shape} and {direct.shape}")
        m = cot.shape[0]
        delta = cot - direct
        self.sum_delta += delta.sum(0)
        self.sum_cot += cot.sum(0)
        self.sum_direct += direct.sum(0)
        self.delta.update(delta)
        if self.transformed is not None:
            self.transformed.update(np.asarray(self.transform(delta), dtype=np.float64))
        if self.lat is not None:
            flips = self.lat_flips[self.n : self.n + m]
            if len(flips) != m:
                raise ValueError(f"lat_flips has {len(self.lat_flips)} entries but more pairs arrived")
            self.lat.update(np.where(flips[:, None], -delta, delta))
        self.n += m

    # -- results -----------------------------------------------------------------------------
    def mean_difference(self) -> np.ndarray:
        """``mean_i(cot_i − direct_i)``."""
        return self.sum_delta / self.n

    def dispersion(self) -> float:
        """Σ_j var(δ_j) (ddof=1) = trace of the covariance of the differences."""
        return float(self.delta.m2.sum() / (self.n - 1))

    def dispersion_transformed(self) -> float:
        if self.transformed is None:
            raise ValueError("no transform was given to PairMoments")
        return float(self.transformed.m2.sum() / (self.n - 1))

    def centre(self) -> np.ndarray:
        """Mean of all 2n rows (CoT and direct)."""
        return (self.sum_cot + self.sum_direct) / (2 * self.n)

    def lat_component(self) -> tuple[np.ndarray, float, np.ndarray]:
        """``(unit top eigenvector, explained variance ratio, eigenvalues)`` of the LAT scatter.

        The sign follows sklearn's ``svd_flip(u_based_decision=False)`` (largest-magnitude entry positive);
        callers then orient it by the CoT-above-direct vote.
        """
        if self.lat is None:
            raise ValueError("pass lat_flips to PairMoments to compute LAT")
        from scipy.linalg import eigh

        S = self.lat.m2
        d = S.shape[0]
        vals, vecs = eigh(S, subset_by_index=[d - 1, d - 1])
        comp = vecs[:, 0]
        if comp[np.argmax(np.abs(comp))] < 0:
            comp = -comp
        total = float(np.trace(S))
        ratio = float(max(vals[0], 0.0) / total) if total > 0 else 0.0
        return comp / np.linalg.norm(comp), ratio, vals


def chunks(cot: np.ndarray, direct: np.ndarray, size: int = CHUNK_PAIRS) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Chunks of ``size`` pairs of two in-memory arrays."""
    for s in range(0, cot.shape[0], size):
        yield cot[s : s + size], direct[s : s + size]


def lat_flips(n_pairs: int, seed: int = 0) -> np.ndarray:
    """The within-pair order shuffle of RepE's LAT: ``True`` = the direct member comes first."""
    return np.random.default_rng(seed).random(n_pairs) < 0.5


def sign_agreement(pairs: Iterable[tuple[np.ndarray, np.ndarray]], comp: np.ndarray, centre: np.ndarray) -> float:
    """Fraction of pairs whose CoT member projects above its direct member (after centring)."""
    above = n = 0
    for cot, direct in pairs:
        c = np.asarray(cot, dtype=np.float64)
        dr = np.asarray(direct, dtype=np.float64)
        above += int(np.sum((c - centre) @ comp > (dr - centre) @ comp))
        n += c.shape[0]
    return above / n
