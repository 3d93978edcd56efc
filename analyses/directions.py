"""Reading a CoT direction at one layer from paired activations (METHODS.md §2).

All functions take ``cot`` and ``direct`` arrays of shape ``[n_pairs, d]`` whose row ``i`` comes
from the same pair (see :meth:`analyses.store.ActivationStore.paired`).

* :func:`mean_difference` — ``mean_i(cot_i − direct_i)`` (L2V-CoT code).
* :func:`lat_direction` — RepE-exact LAT: shuffle order inside each pair, ``D = H[::2] − H[1::2]``,
  recentre, 1-component PCA (no whitening; computed as the top eigenvector of the centred scatter of
  ``D``, streamed over chunks), sign chosen so the CoT member scores higher in most pairs.
* :func:`probe_accuracy` — logistic-regression accuracy on held-out *pairs*.
* :func:`dispersion` — trace of the covariance of the per-pair difference vectors, computed as the sum
  of per-coordinate variances (no d×d matrix).

Mean difference, LAT and dispersion stream over chunks of pairs (:mod:`analyses.streaming`), in float64
whatever the input dtype.

>>> rng = np.random.default_rng(0); v = rng.normal(size=16); v /= np.linalg.norm(v)
>>> base = rng.normal(size=(200, 16)); cot, direct = base + 3 * v, base
>>> float(abs(cosine(lat_direction(cot, direct).direction, v))) > 0.99
True
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from cotscope.analyses.streaming import PairMoments, chunks, lat_flips, sign_agreement
from cotscope.errors import CotscopeError


class PairError(CotscopeError):
    """Paired arrays that cannot be analysed together."""


def check_pairs(
    cot: np.ndarray, direct: np.ndarray, min_pairs: int = 1, as_float64: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Validate two ``[n_pairs, d]`` arrays; returns them as float64 (or unchanged with ``as_float64=False``)."""
    cot = np.asarray(cot, dtype=np.float64) if as_float64 else np.asarray(cot)
    direct = np.asarray(direct, dtype=np.float64) if as_float64 else np.asarray(direct)
    if cot.ndim != 2 or direct.ndim != 2:
        raise PairError(f"expected 2-D [n_pairs, d] arrays, got {cot.shape} and {direct.shape}")
    if cot.shape != direct.shape:
        raise PairError(
            f"pairs of unequal count or width: CoT {cot.shape} vs direct {direct.shape}; "
            "every CoT row needs the direct row of the same pair"
        )
    if cot.shape[0] < min_pairs:
        raise PairError(f"need at least {min_pairs} pairs, got {cot.shape[0]} (empty set?)")
    return cot, direct


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return float(a @ b / (na * nb)) if na > 0 and nb > 0 else 0.0


def cosine_matrix(vectors: np.ndarray) -> np.ndarray:
    """Pairwise cosine similarity between rows (e.g. directions of several layers or methods)."""
    V = np.asarray(vectors, dtype=np.float64)
    n = np.linalg.norm(V, axis=1, keepdims=True)
    U = V / np.where(n > 0, n, 1.0)
    return U @ U.T


def mean_difference(cot: np.ndarray, direct: np.ndarray) -> np.ndarray:
    """``mean_i(cot_i − direct_i)`` in float64, streamed over chunks of pairs."""
    cot, direct = check_pairs(cot, direct, as_float64=False)
    m = PairMoments(cot.shape[1])
    for c, d in chunks(cot, direct):
        m.update(c, d)
    return m.mean_difference()


@dataclasses.dataclass
class LatResult:
    direction: np.ndarray  # unit vector, sign: CoT scores higher
    explained_variance_ratio: float
    sign_agreement: float  # fraction of pairs where CoT projects above direct
    n_pairs: int


def lat_from_moments(moments: PairMoments, pairs: Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]]) -> LatResult:
    """Finish LAT from accumulated moments; ``pairs()`` streams the pairs again for the sign vote."""
    comp, ratio, _ = moments.lat_component()
    agree = sign_agreement(pairs(), comp, moments.centre())
    if agree < 0.5:
        comp, agree = -comp, 1.0 - agree
    return LatResult(
        direction=comp / np.linalg.norm(comp), explained_variance_ratio=ratio, sign_agreement=agree, n_pairs=moments.n
    )


def lat_direction(cot: np.ndarray, direct: np.ndarray, seed: int = 0) -> LatResult:
    """RepE LAT on paired states (see module docstring), streamed over chunks of pairs."""
    cot, direct = check_pairs(cot, direct, min_pairs=2, as_float64=False)
    m = PairMoments(cot.shape[1], lat_flips=lat_flips(cot.shape[0], seed))
    for c, d in chunks(cot, direct):
        m.update(c, d)
    return lat_from_moments(m, lambda: chunks(cot, direct))


def dispersion(
    cot: np.ndarray, direct: np.ndarray, transform: Callable[[np.ndarray], np.ndarray] | None = None
) -> float:
    """Trace of the covariance of per-pair differences = Σ_j var(δ_j), never forming the d×d covariance.

    ``transform`` (optional) maps chunks of difference rows row-wise first, e.g. a low-pass.
    """
    cot, direct = check_pairs(cot, direct, min_pairs=2, as_float64=False)
    m = PairMoments(cot.shape[1], transform=transform)
    for c, d in chunks(cot, direct):
        m.update(c, d)
    return m.dispersion_transformed() if transform is not None else m.dispersion()


def pair_split(n_pairs: int, test_fraction: float = 0.3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split *pair indices* into train/test so both members of a pair stay on one side."""
    if n_pairs < 4:
        raise PairError(f"a held-out probe needs at least 4 pairs, got {n_pairs}")
    rng = np.random.default_rng(seed)
    idx = rng.permutation(n_pairs)
    n_test = max(1, int(round(test_fraction * n_pairs)))
    return np.sort(idx[n_test:]), np.sort(idx[:n_test])


def probe_accuracy(
    cot: np.ndarray, direct: np.ndarray, test_fraction: float = 0.3, seed: int = 0, C: float = 1.0
) -> dict:
    """Logistic-probe accuracy on held-out pairs (features standardised on the training split)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    cot, direct = check_pairs(cot, direct, min_pairs=4, as_float64=False)
    tr, te = pair_split(cot.shape[0], test_fraction, seed)
    # float64 copies of the selected rows only (no float64 copy of the whole slice)
    Xtr = np.concatenate([cot[tr], direct[tr]]).astype(np.float64, copy=False)
    ytr = np.r_[np.ones(len(tr)), np.zeros(len(tr))]
    Xte = np.concatenate([cot[te], direct[te]]).astype(np.float64, copy=False)
    yte = np.r_[np.ones(len(te)), np.zeros(len(te))]
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000))
    clf.fit(Xtr, ytr)
    return {
        "train_accuracy": float(clf.score(Xtr, ytr)),
        "test_accuracy": float(clf.score(Xte, yte)),
        "n_train_pairs": int(len(tr)),
        "n_test_pairs": int(len(te)),
    }


def layer_directions(
    get_pair: Callable[[int], tuple[np.ndarray, np.ndarray]],
    layers: Sequence[int],
    method: str = "mean_diff",
    seed: int = 0,
) -> dict[int, np.ndarray]:
    """Directions for many layers; ``get_pair(layer) -> (cot, direct)``."""
    out = {}
    for l in layers:
        cot, direct = get_pair(l)
        if method == "mean_diff":
            out[l] = mean_difference(cot, direct)
        elif method == "lat":
            out[l] = lat_direction(cot, direct, seed=seed).direction
        else:
            raise ValueError(f"unknown method {method!r}; use 'mean_diff' or 'lat'")
    return out
