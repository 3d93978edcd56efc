"""The pre-v2 implementation, kept verbatim as a test oracle (store format v1 and the in-memory analyses).

Tests and ``benchmarks/bench_store_scale.py`` compare the streaming v2 code against it. Only names were
changed (``V1StoreWriter``, ``V1Store``, ``old_*``); cotscope itself never writes format 1 any more.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cotscope.analyses.directions import PairError
from cotscope.analyses.io.atomic import atomic_path, write_json_atomic, write_text_atomic
from cotscope.analyses.io.store import StoreError, split_pairs
from cotscope.analyses.spectral import cutoff_bins, lowpass, lowpass_energy_fraction, permutation_null

FORMAT_NAME = "cotscope.store"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
ITEMS = "items.jsonl"


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.safetensors"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def config_hash(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


class V1StoreWriter:
    """Create or resume a store. Use :meth:`done_shards` to skip finished work."""

    def __init__(
        self,
        path: str | Path,
        config: dict[str, Any],
        items: Sequence[dict[str, Any]],
        *,
        overwrite: bool = False,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.path = Path(path)
        self.config = config
        self.items = list(items)
        if not self.items:
            raise StoreError("empty stimulus set: nothing to collect; pass at least one pair")
        self.hash = config_hash({**config, "items": self.items})
        man = self.path / MANIFEST
        if man.exists() and not overwrite:
            old = json.loads(man.read_text())
            if old.get("config_hash") != self.hash:
                raise StoreError(
                    f"{self.path} already holds a store written by a different configuration "
                    f"(config hash {old.get('config_hash')} != {self.hash}: model, layers, positions, batch size or "
                    "stimuli differ). Use a new directory, or pass overwrite=True to replace it."
                )
            self.manifest = old
            self._drop_bad_shards()
        else:
            if man.exists():
                for f in self.path.glob("shard-*.safetensors"):
                    f.unlink()
            self.path.mkdir(parents=True, exist_ok=True)
            self.manifest = {
                "format": FORMAT_NAME,
                "format_version": FORMAT_VERSION,
                "config_hash": self.hash,
                **config,
                "n_items": len(self.items),
                "shards": [],
                "complete": False,
                "extra": extra or {},
            }
            write_text_atomic(self.path / ITEMS, "".join(json.dumps(it, sort_keys=True) + "\n" for it in self.items))
            write_json_atomic(man, self.manifest)

    def _drop_bad_shards(self) -> None:
        good = []
        for s in self.manifest["shards"]:
            f = self.path / s["file"]
            if f.is_file() and f.stat().st_size == s["bytes"] and sha256_file(f) == s["sha256"]:
                good.append(s)
        self.manifest["shards"] = good

    def done_shards(self) -> set[int]:
        return {int(s["index"]) for s in self.manifest["shards"]}

    def write_shard(self, index: int, rows: np.ndarray, tensors: dict[str, np.ndarray]) -> None:
        from safetensors.numpy import save_file

        data = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
        data["row"] = np.asarray(rows, dtype=np.int64)
        target = self.path / shard_name(index)
        with atomic_path(target) as tmp:
            save_file(data, str(tmp), metadata={"format": FORMAT_NAME, "shard": str(index)})
        entry = {
            "index": index,
            "file": target.name,
            "rows": [int(rows[0]), int(rows[-1]) + 1],
            "bytes": target.stat().st_size,
            "sha256": sha256_file(target),
        }
        self.manifest["shards"] = sorted(
            [s for s in self.manifest["shards"] if s["index"] != index] + [entry], key=lambda s: s["index"]
        )
        write_json_atomic(self.path / MANIFEST, self.manifest)

    def finish(self, **extra: Any) -> V1Store:
        covered = sum(s["rows"][1] - s["rows"][0] for s in self.manifest["shards"])
        if covered != len(self.items):
            raise StoreError(f"store {self.path} covers {covered} of {len(self.items)} items; collection is unfinished")
        self.manifest["complete"] = True
        self.manifest["extra"].update(extra)
        write_json_atomic(self.path / MANIFEST, self.manifest)
        return V1Store(self.path)


class V1Store:
    """Read-only view of a complete store (numpy only)."""

    def __init__(self, path: str | Path, verify: bool = False, allow_incomplete: bool = False) -> None:
        self.path = Path(path)
        man = self.path / MANIFEST
        if not man.is_file():
            raise StoreError(
                f"no activation store at {self.path} (missing {MANIFEST}); collect one first "
                "with probes.collect.collect_pairs(...) or `cotscope collect`"
            )
        try:
            self.manifest = json.loads(man.read_text())
        except json.JSONDecodeError as e:
            raise StoreError(f"{man} is corrupt ({e}); delete the store and collect again") from None
        if self.manifest.get("format") != FORMAT_NAME:
            raise StoreError(f"{self.path} is not a cotscope activation store")
        if not self.manifest.get("complete") and not allow_incomplete:
            raise StoreError(
                f"store {self.path} is incomplete (an interrupted collection?); run the same "
                "collection again to resume it"
            )
        self.items: list[dict[str, Any]] = [json.loads(l) for l in (self.path / ITEMS).read_text().splitlines() if l]
        self._cache: dict[str, np.ndarray] = {}
        if verify:
            self.verify()

    # -- metadata -------------------------------------------------------------------------------
    @property
    def layers(self) -> list[int]:
        return list(self.manifest["layers"])

    @property
    def positions(self) -> list[str]:
        return list(self.manifest["positions"])

    @property
    def model(self) -> dict[str, Any]:
        return dict(self.manifest["model"])

    @property
    def hidden_size(self) -> int:
        return int(self.manifest["model"]["hidden_size"])

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def labels(self) -> np.ndarray:
        return np.array([it["label"] for it in self.items], dtype=np.int64)

    @property
    def pair_ids(self) -> np.ndarray:
        return np.array([it["pair_id"] for it in self.items], dtype=np.int64)

    def verify(self) -> None:
        """Check every shard against its recorded size and sha256."""
        for s in self.manifest["shards"]:
            f = self.path / s["file"]
            if not f.is_file():
                raise StoreError(f"shard {f} is missing; re-run the collection to resume and rewrite it")
            if f.stat().st_size != s["bytes"] or sha256_file(f) != s["sha256"]:
                raise StoreError(
                    f"shard {f} is corrupt or truncated (size/sha256 mismatch); delete it and re-run the "
                    "same collection: only that shard will be recomputed"
                )

    # -- data -----------------------------------------------------------------------------------
    def _layer_index(self, layer: int) -> int:
        layers = self.layers
        li = layer + self.model["n_layers"] if layer < 0 else layer
        if li not in layers:
            raise StoreError(
                f"layer {layer} is not in store {self.path} (stored layers: {layers}); collect again with that layer"
            )
        return layers.index(li)

    def _read(self, key: str) -> np.ndarray:
        if key in self._cache:
            return self._cache[key]
        from safetensors import safe_open

        parts = []
        for s in self.manifest["shards"]:
            f = self.path / s["file"]
            try:
                with safe_open(str(f), framework="numpy") as fh:
                    if key not in fh.keys():
                        raise StoreError(f"{f} has no tensor {key!r}; positions in this store: {self.positions}")
                    parts.append(fh.get_tensor(key))
            except StoreError:
                raise
            except Exception as e:
                raise StoreError(
                    f"shard {f} is corrupt or truncated ({e}); delete it and re-run the same "
                    "collection to recompute just that shard"
                ) from None
        if len(parts) > 1 and parts[0].ndim == 2 and len({a.shape[1] for a in parts}) > 1:
            # per-shard token masks (image_mask) are as wide as their batch: right-pad (rows are left-aligned)
            width = max(a.shape[1] for a in parts)
            parts = [np.pad(a, ((0, 0), (0, width - a.shape[1]))) for a in parts]
        arr = np.concatenate(parts, axis=0) if parts else np.zeros((0,))
        if key != "row":
            rows = self._read("row")
            if not np.array_equal(rows, np.arange(len(rows))):
                arr = arr[np.argsort(rows)]
        self._cache[key] = arr
        return arr

    def get(self, position: str, layer: int | None = None) -> np.ndarray:
        """Activations at ``position``: ``[n_items, d]`` for one layer, else ``[n_items, n_layers, d]``."""
        if position not in self.positions:
            raise StoreError(f"position {position!r} is not in store {self.path} (has {self.positions})")
        arr = self._read(position)
        return arr if layer is None else arr[:, self._layer_index(layer)]

    def paired(self, position: str, layer: int) -> tuple[np.ndarray, np.ndarray]:
        """``(cot, direct)`` arrays of shape ``[n_pairs, d]``, row ``i`` of both from the same pair."""
        X = self.get(position, layer)
        return split_pairs(X, self.labels, self.pair_ids)

    def image_masks(self) -> list[np.ndarray]:
        mask, lens = self._read("image_mask"), self._read("seq_len")
        return [mask[i, : lens[i]].astype(bool) for i in range(len(lens))]

    def all_tokens(self, row: int) -> np.ndarray:
        """Every token's residual for one item: ``[n_layers, T, d]`` (only if collected with all tokens)."""
        from safetensors import safe_open

        for s in self.manifest["shards"]:
            if s["rows"][0] <= row < s["rows"][1]:
                with safe_open(str(self.path / s["file"]), framework="numpy") as fh:
                    if f"all.{row}" not in fh.keys():
                        raise StoreError("this store was collected without every-token residuals (all_tokens=False)")
                    return fh.get_tensor(f"all.{row}")
        raise StoreError(f"row {row} is not in store {self.path} (0..{self.n_items - 1})")


# ------------------------------------------------------------------ analyses (old analyses/directions.py)
def old_check_pairs(cot: np.ndarray, direct: np.ndarray, min_pairs: int = 1) -> tuple[np.ndarray, np.ndarray]:
    cot = np.asarray(cot, dtype=np.float64)
    direct = np.asarray(direct, dtype=np.float64)
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


def old_mean_difference(cot: np.ndarray, direct: np.ndarray) -> np.ndarray:
    cot, direct = old_check_pairs(cot, direct)
    return (cot - direct).mean(0)


@dataclasses.dataclass
class LatResult:
    direction: np.ndarray  # unit vector, sign: CoT scores higher
    explained_variance_ratio: float
    sign_agreement: float  # fraction of pairs where CoT projects above direct
    n_pairs: int


def old_lat_direction(cot: np.ndarray, direct: np.ndarray, seed: int = 0) -> LatResult:
    """RepE LAT on paired states (see module docstring)."""
    from sklearn.decomposition import PCA

    cot, direct = old_check_pairs(cot, direct, min_pairs=2)
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
    return LatResult(
        direction=comp / np.linalg.norm(comp),
        explained_variance_ratio=float(pca.explained_variance_ratio_[0]),
        sign_agreement=agree,
        n_pairs=n,
    )


def old_dispersion(
    cot: np.ndarray, direct: np.ndarray, transform: Callable[[np.ndarray], np.ndarray] | None = None
) -> float:
    """Trace of the covariance of per-pair difference vectors (optionally after ``transform``, e.g. a low-pass)."""
    cot, direct = old_check_pairs(cot, direct, min_pairs=2)
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


def old_probe_accuracy(
    cot: np.ndarray, direct: np.ndarray, test_fraction: float = 0.3, seed: int = 0, C: float = 1.0
) -> dict:
    """Logistic-probe accuracy on held-out pairs (features standardised on the training split)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    cot, direct = old_check_pairs(cot, direct, min_pairs=4)
    tr, te = pair_split(cot.shape[0], test_fraction, seed)
    Xtr = np.concatenate([cot[tr], direct[tr]])
    ytr = np.r_[np.ones(len(tr)), np.zeros(len(tr))]
    Xte = np.concatenate([cot[te], direct[te]])
    yte = np.r_[np.ones(len(te)), np.zeros(len(te))]
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000))
    clf.fit(Xtr, ytr)
    return {
        "train_accuracy": float(clf.score(Xtr, ytr)),
        "test_accuracy": float(clf.score(Xte, yte)),
        "n_train_pairs": int(len(tr)),
        "n_test_pairs": int(len(te)),
    }


# ------------------------------------------------------------------ old analyses/layer_sweep.py
def old_analyse_layer(
    cot: np.ndarray, direct: np.ndarray, cutoff: float = 0.1, n_perm: int = 200, seed: int = 0
) -> dict:
    """Numbers for one layer; returns plain floats (JSON-ready) plus the two directions."""
    md = old_mean_difference(cot, direct)
    lat = old_lat_direction(cot, direct, seed=seed)
    d = md.shape[0]
    c = cutoff_bins(d, cutoff)
    lp_null = permutation_null(lambda v: lowpass_energy_fraction(v, c), md, n_perm=n_perm, seed=seed)
    return {
        "probe": old_probe_accuracy(cot, direct, seed=seed),
        "lat_vs_mean_diff_cosine": cosine(lat.direction, md),
        "lat_explained_variance": lat.explained_variance_ratio,
        "lat_sign_agreement": lat.sign_agreement,
        "mean_diff_norm": float(np.linalg.norm(md)),
        "dispersion": old_dispersion(cot, direct),
        "dispersion_lowpass": old_dispersion(cot, direct, transform=lambda D: lowpass(D, c)),
        "cutoff_bins": c,
        "lowpass_energy_fraction": lp_null["observed"],
        "lowpass_energy_null": {k: lp_null[k] for k in ("null_mean", "null_q05", "null_q95", "p_value", "z")},
        "_mean_diff": md,
        "_lat": lat.direction,
    }


def old_analyse_store(
    store: V1Store,
    position: str,
    layers: Sequence[int] | None = None,
    cutoff: float = 0.1,
    n_perm: int = 200,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Run :func:`analyse_layer` on every stored layer; also a layer×layer cosine matrix of directions."""
    from tqdm.auto import tqdm

    layers = list(store.layers if layers is None else layers)
    per_layer, md, lat = {}, {}, {}
    for l in tqdm(layers, desc=f"analyse {position}", disable=not progress):
        cot, direct = store.paired(position, l)
        r = old_analyse_layer(cot, direct, cutoff=cutoff, n_perm=n_perm, seed=seed)
        md[l], lat[l] = r.pop("_mean_diff"), r.pop("_lat")
        per_layer[l] = r
    M = np.stack([md[l] for l in layers])
    U = M / np.linalg.norm(M, axis=1, keepdims=True)
    best = max(layers, key=lambda l: (per_layer[l]["probe"]["test_accuracy"], -abs(l - len(layers) / 2)))
    return {
        "position": position,
        "layers": per_layer,
        "layer_cosine": (U @ U.T).tolist(),
        "layer_order": layers,
        "best_layer": int(best),
        "n_pairs": int(store.paired(position, layers[0])[0].shape[0]),
        "_directions": {"mean_diff": md, "lat": lat},
    }
