"""Synthetic activation stores for the store tests: paired items and float32 arrays with a planted direction."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cotscope.analyses.io.store import StoreWriter


def synth(
    n_pairs: int = 40,
    layers: Sequence[int] = (0, 1, 2),
    d: int = 16,
    positions: Sequence[str] = ("last",),
    seed: int = 0,
    shift: float = 0.7,
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, np.ndarray]]:
    """``(config, items, {position: float32 [2 * n_pairs, n_layers, d]})``; CoT rows are shifted along a unit
    direction that differs per layer (rotated), so every layer has its own planted direction."""
    rng = np.random.default_rng(seed)
    items = [
        {"row": 2 * p + k, "pair_id": p, "label": 1 - k, "text": f"pair {p} member {k}"}
        for p in range(n_pairs)
        for k in range(2)
    ]
    cfg = {
        "model": {
            "model_id": "synthetic",
            "revision": "none",
            "model_type": "toy",
            "n_layers": max(layers) + 1,
            "hidden_size": d,
        },
        "layers": list(layers),
        "positions": list(positions),
        "stimulus_hash": "synth",
        "pairings": ["cue"],
    }
    arrays = {}
    for p in positions:
        base = rng.standard_normal((n_pairs, len(layers), d)).astype(np.float32)
        X = np.empty((2 * n_pairs, len(layers), d), np.float32)
        X[1::2] = base + 0.3 * rng.standard_normal(base.shape).astype(np.float32)
        v = rng.standard_normal((len(layers), d))
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        X[0::2] = base + (shift * v).astype(np.float32) + 0.3 * rng.standard_normal(base.shape).astype(np.float32)
        arrays[p] = X
    return cfg, items, arrays


def write_store(
    path: str | Path,
    cfg: dict[str, Any],
    items: list[dict[str, Any]],
    arrays: dict[str, np.ndarray],
    batch_size: int = 16,
    dtype: str = "float32",
    part: tuple[int, int] | None = None,
    finish: bool = True,
    max_shards: int | None = None,
):
    """Write a v2 store batch by batch (as collection does); returns the store, or the open writer."""
    w = StoreWriter(path, {**cfg, "batch_size": batch_size}, items, dtype=dtype, part=part)
    for k, b in enumerate(w.todo()):
        if max_shards is not None and k >= max_shards:
            return w
        a, e = w.batch_rows(b)
        w.write_shard(b, np.arange(a, e), {p: X[a:e] for p, X in arrays.items()})
    return w.finish() if finish else w


def write_v1_store(
    path: str | Path,
    cfg: dict[str, Any],
    items: list[dict[str, Any]],
    arrays: dict[str, np.ndarray],
    batch_size: int = 16,
):
    """The same data through the format-1 writer kept in :mod:`store_oracle`."""
    from store_oracle import V1StoreWriter

    w = V1StoreWriter(path, {**cfg, "batch_size": batch_size}, items)
    n = len(items)
    for b in range(0, n, batch_size):
        rows = np.arange(b, min(n, b + batch_size))
        w.write_shard(b // batch_size, rows, {p: X[rows] for p, X in arrays.items()})
    return w.finish()
