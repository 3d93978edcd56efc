"""Vision-latent reconstruction probe (modal-mixed CoT, METHODS.md §7).

Does the language model's residual stream carry the VLM's own vision embeddings? Per layer, a
ridge probe maps hidden states ``[N, D]`` to the connector outputs average-pooled to a fixed number
of tokens (the paper pools 256 → 32), trained on some images and scored on held-out images by
cosine, centred cosine, MSE and R². A baseline fits the same probe after shuffling which image goes
with which hidden state; a real reconstruction must beat it. :func:`patch_similarity` gives the data
of a heat map: the cosine of a hidden state against each image patch embedding.

Arrays in, numbers out: no model is loaded here (see :mod:`probes.vision_latents` for collection).

>>> rng = np.random.default_rng(0)
>>> H = {0: rng.normal(size=(80, 16))}
>>> V = (H[0] @ rng.normal(size=(16, 4 * 8))).reshape(80, 4, 8)
>>> res = fit_reconstruction_probes(H, V, n_tokens=2, progress=False)
>>> res.rows[0]["cos"] > 0.95 > res.rows[0]["cos_shuffled"]
True
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cotscope.errors import CotscopeError

DEFAULT_ALPHAS: tuple[float, ...] = (1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3, 1e4)


class ReconstructionError(CotscopeError):
    """Bad input to the reconstruction probe (shapes, missing layers, too few images)."""


def avg_pool_tokens(x: np.ndarray, n_out: int) -> np.ndarray:
    """Adaptive average pooling along the token axis: ``[..., T, D]`` → ``[..., n_out, D]``.

    Bin ``i`` averages tokens ``floor(i·T/n_out) … ceil((i+1)·T/n_out) − 1`` (as torch's
    ``adaptive_avg_pool1d``); with ``T`` divisible by ``n_out`` that is plain block averaging.

    >>> avg_pool_tokens(np.arange(8.0).reshape(4, 2), 2)
    array([[1., 2.],
           [5., 6.]])
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim < 2:
        raise ReconstructionError(f"expected [..., tokens, dim], got shape {x.shape}")
    T = x.shape[-2]
    if not 1 <= n_out <= T:
        raise ReconstructionError(f"cannot pool {T} connector tokens to {n_out}; pass n_tokens between 1 and {T}")
    if T % n_out == 0:
        return x.reshape(x.shape[:-2] + (n_out, T // n_out, x.shape[-1])).mean(-2)
    out = np.empty(x.shape[:-2] + (n_out, x.shape[-1]))
    for i in range(n_out):
        a, b = (i * T) // n_out, -((-(i + 1) * T) // n_out)
        out[..., i, :] = x[..., a:b, :].mean(-2)
    return out


def _as_store(hidden: Mapping[int, np.ndarray] | np.ndarray) -> dict[int, np.ndarray]:
    if isinstance(hidden, Mapping):
        return {int(k): np.asarray(v) for k, v in hidden.items()}
    h = np.asarray(hidden)
    if h.ndim != 3:
        raise ReconstructionError(
            f"hidden states must be a {{layer: [N, D]}} mapping or an [N, layers, D] array; got shape {h.shape}"
        )
    return {i: h[:, i] for i in range(h.shape[1])}


def check_layers(available: Sequence[int], requested: Sequence[int] | None) -> list[int]:
    """The requested layers, or a clear error naming those the store lacks."""
    avail = sorted(int(a) for a in available)
    if requested is None:
        return avail
    req = [int(l) for l in requested]
    missing = [l for l in req if l not in avail]
    if missing:
        raise ReconstructionError(
            f"layers {missing} are not in the hidden-state store (it has {avail}); collect them "
            "first or request only stored layers"
        )
    return req


def _split(n: int, groups: np.ndarray | None, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import GroupShuffleSplit

    if not 0.0 < test_fraction < 1.0:
        raise ReconstructionError(f"test_fraction must be in (0, 1), got {test_fraction}")
    g = np.arange(n) if groups is None else np.asarray(groups)
    if g.shape != (n,):
        raise ReconstructionError(f"groups must have one image id per sample ({n}), got shape {g.shape}")
    n_img = len(np.unique(g))
    if n_img < 4:
        raise ReconstructionError(f"need at least 4 distinct images for a held-out score, got {n_img}")
    tr, te = next(
        GroupShuffleSplit(n_splits=1, test_size=test_fraction, random_state=seed).split(np.zeros(n), groups=g)
    )
    return tr, te


def _scores(Y: np.ndarray, P: np.ndarray, mean: np.ndarray, n_tokens: int) -> dict[str, float]:
    """cos (per pooled token), centred cos (minus the training mean), MSE and R² of predictions ``P``."""
    from sklearn.metrics import r2_score

    n, k = Y.shape[0], n_tokens
    y, p, m = Y.reshape(n, k, -1), P.reshape(n, k, -1), mean.reshape(1, k, -1)

    def cos(a: np.ndarray, b: np.ndarray) -> float:
        num = (a * b).sum(-1)
        den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) + 1e-12
        return float((num / den).mean())

    return {
        "cos": cos(y, p),
        "cos_centered": cos(y - m, p - m),
        "mse": float(((Y - P) ** 2).mean()),
        "r2": float(r2_score(Y, P, multioutput="variance_weighted")),
    }


@dataclasses.dataclass
class ReconstructionResult:
    """Per-layer probe scores (``rows``) and the settings that produced them."""

    rows: list[dict]
    n_tokens: int
    n_train: int
    n_test: int
    settings: dict

    def to_dict(self) -> dict:
        return {
            "format": "cotscope.reconstruction",
            "rows": self.rows,
            "n_tokens": self.n_tokens,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "settings": self.settings,
        }

    def summary(self) -> dict:
        """Best layer by held-out R² and its margin over the shuffled baseline (for summary.json)."""
        best = max(self.rows, key=lambda r: r["r2"])
        out = {
            "recon_best_layer": best["layer"],
            "recon_best_cos": best["cos"],
            "recon_best_cos_centered": best["cos_centered"],
            "recon_best_r2": best["r2"],
            "recon_n_train": self.n_train,
            "recon_n_test": self.n_test,
            "recon_n_tokens": self.n_tokens,
        }
        if "cos_centered_shuffled" in best:
            out.update(
                recon_best_cos_shuffled=best["cos_shuffled"],
                recon_best_cos_centered_shuffled=best["cos_centered_shuffled"],
                recon_best_r2_shuffled=best["r2_shuffled"],
            )
        return out


def fit_reconstruction_probes(
    hidden: Mapping[int, np.ndarray] | np.ndarray,
    targets: np.ndarray,
    layers: Sequence[int] | None = None,
    *,
    n_tokens: int = 32,
    test_fraction: float = 0.25,
    groups: Sequence[Any] | None = None,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    standardize: bool = True,
    shuffle_baseline: bool = True,
    seed: int = 0,
    progress: bool = True,
) -> ReconstructionResult:
    """Fit one ridge probe per layer from hidden states to pooled connector outputs.

    ``hidden``: ``{layer: [N, D]}`` or ``[N, layers, D]``; ``targets``: connector outputs
    ``[N, T, Dv]`` (pooled to ``n_tokens``; if ``T < n_tokens`` pass a smaller ``n_tokens``) or
    already-pooled ``[N, Dv]`` (one token). ``groups``: the image id of each sample — train and test
    never share an image. Alpha is chosen per layer by efficient leave-one-out (``RidgeCV``).
    """
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    store = _as_store(hidden)
    layers = check_layers(store, layers)
    V = np.asarray(targets, dtype=np.float64)
    if V.ndim == 2:
        V = V[:, None, :]
        n_tokens = 1
    if V.ndim != 3:
        raise ReconstructionError(f"targets must be [N, tokens, dim] connector outputs, got shape {V.shape}")
    n = V.shape[0]
    Y = avg_pool_tokens(V, n_tokens).reshape(n, -1)
    if not np.all(np.isfinite(Y)):
        raise ReconstructionError("targets contain NaN or inf")
    for l in layers:
        if store[l].ndim != 2 or store[l].shape[0] != n:
            raise ReconstructionError(
                f"hidden states of layer {l} have shape {store[l].shape}; expected [{n}, D] (one row per target image)"
            )
    tr, te = _split(n, None if groups is None else np.asarray(groups), test_fraction, seed)
    rng = np.random.default_rng(seed)
    shuf = tr[rng.permutation(len(tr))]
    if len(tr) > 1 and np.all(shuf == tr):
        shuf = np.roll(tr, 1)
    mean = Y[tr].mean(0)
    it = layers
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(layers, desc="reconstruction probes", unit="layer")
    rows = []
    for l in it:
        X = np.asarray(store[l], dtype=np.float64)
        if not np.all(np.isfinite(X)):
            raise ReconstructionError(f"hidden states of layer {l} contain NaN or inf")

        def probe():
            steps = ([StandardScaler()] if standardize else []) + [RidgeCV(alphas=tuple(alphas))]
            return make_pipeline(*steps)

        m = probe().fit(X[tr], Y[tr])
        row = {"layer": l, "alpha": float(m[-1].alpha_), **_scores(Y[te], m.predict(X[te]), mean, n_tokens)}
        if shuffle_baseline:
            ms = probe().fit(X[tr], Y[shuf])
            row.update({f"{k}_shuffled": v for k, v in _scores(Y[te], ms.predict(X[te]), mean, n_tokens).items()})
        row.update(
            {
                f"{k}_mean_baseline": v
                for k, v in _scores(Y[te], np.broadcast_to(mean, Y[te].shape), mean, n_tokens).items()
                if k in ("cos", "mse")
            }
        )
        rows.append(row)
    return ReconstructionResult(
        rows,
        n_tokens,
        len(tr),
        len(te),
        {
            "alphas": list(alphas),
            "standardize": standardize,
            "seed": seed,
            "test_fraction": test_fraction,
            "grouped": groups is not None,
            "target_tokens": int(V.shape[1]),
            "target_dim": int(V.shape[2]),
        },
    )


def patch_similarity(hidden: np.ndarray, patches: np.ndarray, grid: tuple[int, int] | None = None) -> np.ndarray:
    """Cosine of hidden state(s) ``[D]`` or ``[L, D]`` against each patch embedding ``[P, D]``.

    Returns ``[L, h, w]`` heat-map data: ``grid=(h, w)`` with ``h·w = P``, else a square grid if
    ``P`` is a perfect square, else a ``1 × P`` strip.

    >>> patch_similarity(np.array([1.0, 0.0]), np.array([[1.0, 0], [0, 1], [-1, 0], [1, 1]])).round(2)
    array([[[ 1.  ,  0.  ],
            [-1.  ,  0.71]]])
    """
    h = np.atleast_2d(np.asarray(hidden, dtype=np.float64))
    p = np.asarray(patches, dtype=np.float64)
    if p.ndim != 2:
        raise ReconstructionError(f"patch embeddings must be [patches, dim], got shape {p.shape}")
    if h.shape[-1] != p.shape[-1]:
        raise ReconstructionError(
            f"hidden size {h.shape[-1]} differs from patch-embedding size {p.shape[-1]}; use the "
            "connector outputs (already in the language model's space), not the vision tower's"
        )
    P = p.shape[0]
    if grid is None:
        s = int(round(P**0.5))
        grid = (s, s) if s * s == P else (1, P)
    if grid[0] * grid[1] != P:
        raise ReconstructionError(f"grid {grid} does not hold {P} patches")
    hn = h / (np.linalg.norm(h, axis=-1, keepdims=True) + 1e-12)
    pn = p / (np.linalg.norm(p, axis=-1, keepdims=True) + 1e-12)
    return (hn @ pn.T).reshape(h.shape[0], *grid)
