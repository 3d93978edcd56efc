"""Sharded on-disk activation store: safetensors shards plus a JSON manifest.

Layout of a store directory::

    manifest.json              format, model provenance, layers, positions, stimulus hash, shard list
    items.jsonl                one row per collected prompt (pair id, label, problem id, token counts…)
    shard-00000.safetensors    "<position>" → float32 [rows, n_layers, d]; "row" → int64 [rows];
                               optional "image_mask" uint8 [rows, T], "seq_len" int64 [rows];
                               optional "all.<row>" → [n_layers, T, d] (every token)

Shards are written atomically and the manifest is rewritten atomically after each one, so an
interrupted collection leaves a valid, resumable store. Readers never import torch.

>>> store = ActivationStore("runs/demo/store")           # doctest: +SKIP
>>> cot, direct = store.paired("last_prompt", layer=12)  # doctest: +SKIP
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from cotscope.errors import CotscopeError
from cotscope.analyses.atomic import atomic_path, write_json_atomic, write_text_atomic

FORMAT_NAME = "cotscope.store"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
ITEMS = "items.jsonl"


class StoreError(CotscopeError):
    """A store is missing, corrupt, incomplete, or was written by a different configuration."""


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


class StoreWriter:
    """Create or resume a store. Use :meth:`done_shards` to skip finished work."""

    def __init__(self, path: str | Path, config: dict[str, Any], items: Sequence[dict[str, Any]], *,
                 overwrite: bool = False, extra: dict[str, Any] | None = None) -> None:
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
                    "stimuli differ). Use a new directory, or pass overwrite=True to replace it.")
            self.manifest = old
            self._drop_bad_shards()
        else:
            if man.exists():
                for f in self.path.glob("shard-*.safetensors"):
                    f.unlink()
            self.path.mkdir(parents=True, exist_ok=True)
            self.manifest = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "config_hash": self.hash,
                             **config, "n_items": len(self.items), "shards": [], "complete": False,
                             "extra": extra or {}}
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
        entry = {"index": index, "file": target.name, "rows": [int(rows[0]), int(rows[-1]) + 1],
                 "bytes": target.stat().st_size, "sha256": sha256_file(target)}
        self.manifest["shards"] = sorted([s for s in self.manifest["shards"] if s["index"] != index] + [entry],
                                         key=lambda s: s["index"])
        write_json_atomic(self.path / MANIFEST, self.manifest)

    def finish(self, **extra: Any) -> "ActivationStore":
        covered = sum(s["rows"][1] - s["rows"][0] for s in self.manifest["shards"])
        if covered != len(self.items):
            raise StoreError(f"store {self.path} covers {covered} of {len(self.items)} items; collection is unfinished")
        self.manifest["complete"] = True
        self.manifest["extra"].update(extra)
        write_json_atomic(self.path / MANIFEST, self.manifest)
        return ActivationStore(self.path)


class ActivationStore:
    """Read-only view of a complete store (numpy only)."""

    def __init__(self, path: str | Path, verify: bool = False, allow_incomplete: bool = False) -> None:
        self.path = Path(path)
        man = self.path / MANIFEST
        if not man.is_file():
            raise StoreError(f"no activation store at {self.path} (missing {MANIFEST}); collect one first "
                             "with probes.collect.collect_pairs(...) or `cotscope collect`")
        try:
            self.manifest = json.loads(man.read_text())
        except json.JSONDecodeError as e:
            raise StoreError(f"{man} is corrupt ({e}); delete the store and collect again") from None
        if self.manifest.get("format") != FORMAT_NAME:
            raise StoreError(f"{self.path} is not a cotscope activation store")
        if not self.manifest.get("complete") and not allow_incomplete:
            raise StoreError(f"store {self.path} is incomplete (an interrupted collection?); run the same "
                             "collection again to resume it")
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
                raise StoreError(f"shard {f} is corrupt or truncated (size/sha256 mismatch); delete it and re-run the "
                                 "same collection: only that shard will be recomputed")

    # -- data -----------------------------------------------------------------------------------
    def _layer_index(self, layer: int) -> int:
        layers = self.layers
        li = layer + self.model["n_layers"] if layer < 0 else layer
        if li not in layers:
            raise StoreError(f"layer {layer} is not in store {self.path} (stored layers: {layers}); "
                             "collect again with that layer")
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
                raise StoreError(f"shard {f} is corrupt or truncated ({e}); delete it and re-run the same "
                                 "collection to recompute just that shard") from None
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


def split_pairs(X: np.ndarray, labels: np.ndarray, pair_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split rows into matched ``(positive, negative)`` arrays by pair id; refuses unequal pairs."""
    labels = np.asarray(labels)
    pair_ids = np.asarray(pair_ids)
    pos = {int(p): i for i, (p, l) in enumerate(zip(pair_ids, labels)) if l == 1}
    neg = {int(p): i for i, (p, l) in enumerate(zip(pair_ids, labels)) if l == 0}
    if len(pos) != int((labels == 1).sum()) or len(neg) != int((labels == 0).sum()):
        raise StoreError("a pair id occurs twice with the same label; each pair needs exactly one CoT and one direct item")
    if set(pos) != set(neg):
        missing = sorted(set(pos) ^ set(neg))[:5]
        raise StoreError(f"pairs of unequal count: {len(pos)} CoT items vs {len(neg)} direct items "
                         f"(unmatched pair ids e.g. {missing}); every CoT item needs its direct partner")
    if not pos:
        raise StoreError("empty set: no pairs to split")
    ids = sorted(pos)
    return X[[pos[i] for i in ids]], X[[neg[i] for i in ids]]
