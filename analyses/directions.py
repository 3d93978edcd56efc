"""Reading a CoT direction at one layer from paired activations (METHODS.md §2).

All functions take ``cot`` and ``direct`` arrays of shape ``[n_pairs, d]`` whose row ``i`` comes
from the same pair (see :meth:`analyses.store.ActivationStore.paired`).

* :func:`mean_difference` — ``mean_i(cot_i − direct_i)`` (L2V-CoT code).
* :func:`lat_direction` — RepE-exact LAT: shuffle order inside each pair, ``D = H[::2] − H[1::2]``,
  recentre, 1-component PCA (sklearn, no whitening), sign chosen so the CoT member scores higher in
  most pairs.
* :func:`probe_accuracy` — logistic-regression accuracy on held-out *pairs*.
* :func:`dispersion` — trace of the covariance of the per-pair difference vectors.

>>> rng = np.random.default_rng(0); v = rng.normal(size=16); v /= np.linalg.norm(v)
>>> base = rng.normal(size=(200, 16)); cot, direct = base + 3 * v, base
>>> float(abs(cosine(lat_direction(cot, direct).direction, v))) > 0.99
True
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

from cotscope.errors import CotscopeError


class PairError(CotscopeError):
    """Paired arrays that cannot be analysed together."""


def check_pairs(cot: np.ndarray, direct: np.ndarray, min_pairs: int = 1) -> tuple[np.ndarray, np.ndarray]:
    cot = np.asarray(cot, dtype=np.float64)
    direct = np.asarray(direct, dtype=np.float64)
    if cot.ndim != 2 or direct.ndim != 2:
        raise PairError(f"expected 2-D [n_pairs, d] arrays, got {cot.shape} and {direct.shape}")
    if cot.shape != direct.shape:
        raise PairError(f"pairs of unequal count or width: CoT {cot.shape} vs direct {direct.shape}; "
                        "every CoT row needs the direct row of the same pair")
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
    cot, direct = check_pairs(cot, direct)
    return (cot - direct).mean(0)


@dataclasses.dataclass
class LatResult:
    direction: np.ndarray          # unit vector, sign: CoT scores higher
    explained_variance_ratio: float
    sign_agreement: float          # fraction of pairs where CoT projects above direct
    n_pairs: int


def lat_direction(cot: np.ndarray, direct: np.ndarray, seed: int = 0) -> LatResult:
    """RepE LAT on paired states (see module docstring)."""
    from sklearn.decomposition import PCA

    cot, direct = check_pairs(cot, direct, min_pairs=2)
    n, d = cot.shape
    rng = np.random.default_rng(seed)
    flip = rng.random(n) < 0.5
    first = np.where(flip[:, None], direct, cot)
    second = np.where(flip[:, None], cot, direct)
    H = np.empty((2 * n, d))
    H[0::2], H[1::2] = first, second
    D = H[::2] - H[1::2]
    D = D - D.mean(0, keepdims=True)
    pca = PCA(n_components=1, whiten=False, svd_solver="full").fit(D)
    comp = pca.components_[0].copy()
    # sign: project recentred raw states; the CoT member should score higher in most pairs
    centre = H.mean(0)
    s_cot = (cot - centre) @ comp
    s_dir = (direct - centre) @ comp
    agree = float(np.mean(s_cot > s_dir))
    if agree < 0.5:
        comp, agree = -comp, 1.0 - agree
    return LatResult(direction=comp / np.linalg.norm(comp), explained_variance_ratio=float(pca.explained_variance_ratio_[0]),
                     sign_agreement=agree, n_pairs=n)


def dispersion(cot: np.ndarray, direct: np.ndarray, transform: Callable[[np.ndarray], np.ndarray] | None = None) -> float:
    """Trace of the covariance of per-pair difference vectors (optionally after ``transform``, e.g. a low-pass)."""
    cot, direct = check_pairs(cot, direct, min_pairs=2)
    D = cot - direct
    if transform is not None:
        D = transform(D)
    return float(np.trace(np.cov(D, rowvar=False))) if D.shape[1] > 1 else float(np.var(D, ddof=1))


def pair_split(n_pairs: int, test_fraction: float = 0.3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split *pair indices* into train/test so both members of a pair stay on one side."""
    if n_pairs < 4:
        raise PairError(f"a held-out probe needs at least 4 pairs, got {n_pairs}")
    rng = np.random.default_rng(seed)
    idx = rng.permutation(n_pairs)
    n_test = max(1, int(round(test_fraction * n_pairs)))
    return np.sort(idx[n_test:]), np.sort(idx[:n_test])


def probe_accuracy(cot: np.ndarray, direct: np.ndarray, test_fraction: float = 0.3, seed: int = 0,
                   C: float = 1.0) -> dict:
    """Logistic-probe accuracy on held-out pairs (features standardised on the training split)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    cot, direct = check_pairs(cot, direct, min_pairs=4)
    tr, te = pair_split(cot.shape[0], test_fraction, seed)
    Xtr = np.concatenate([cot[tr], direct[tr]])
    ytr = np.r_[np.ones(len(tr)), np.zeros(len(tr))]
    Xte = np.concatenate([cot[te], direct[te]])
    yte = np.r_[np.ones(len(te)), np.zeros(len(te))]
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000))
    clf.fit(Xtr, ytr)
    return {"train_accuracy": float(clf.score(Xtr, ytr)), "test_accuracy": float(clf.score(Xte, yte)),
            "n_train_pairs": int(len(tr)), "n_test_pairs": int(len(te))}


def layer_directions(get_pair: Callable[[int], tuple[np.ndarray, np.ndarray]], layers: Sequence[int],
                     method: str = "mean_diff", seed: int = 0) -> dict[int, np.ndarray]:
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
