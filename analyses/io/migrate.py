"""Convert a version-1 activation store to version 2 in place (``cotscope store migrate DIR``).

Version 1 kept one ``[rows, n_layers, d]`` tensor per token rule in each shard and the whole shard list
in ``manifest.json``. Migration rewrites every shard in the v2 per-layer layout (float32, bit-identical
arrays; every v1 shard is checked against its recorded sha256 first) into a sibling directory
``.DIR.v2-migrating`` through the ordinary v2 writer, so an interrupted migration resumes where it
stopped. Then ``DIR`` is renamed to ``.DIR.v1-old``, the new store to ``DIR``, and the old one deleted;
re-running the command after a crash at any point finishes the job. An incomplete v1 store becomes an
incomplete v2 store that the same collection resumes.

>>> migrate_store("runs/demo/stores/llm")   # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from cotscope.analyses.io.store import (
    FORMAT_NAME,
    FORMAT_VERSION,
    ITEMS,
    StoreError,
    StoreWriter,
    read_manifest,
)
from cotscope.analyses.io.tensorfile import sha256_file

log = logging.getLogger(__name__)
V1_NOT_CONFIG = ("format", "format_version", "config_hash", "n_items", "shards", "complete", "extra")


def _siblings(path: Path) -> tuple[Path, Path]:
    return path.parent / f".{path.name}.v2-migrating", path.parent / f".{path.name}.v1-old"


def read_v1_shard(path: Path, entry: dict[str, Any]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Rows and tensors of one v1 shard, after checking its size and sha256."""
    from safetensors import safe_open

    f = path / entry["file"]
    if not f.is_file() or f.stat().st_size != entry["bytes"] or sha256_file(f) != entry["sha256"]:
        raise StoreError(
            f"v1 shard {f} is missing or corrupt (size/sha256 differ from the v1 manifest); delete it, "
            "migrate, then re-run the same collection to recompute it"
        )
    with safe_open(str(f), framework="numpy") as fh:
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    rows = tensors.pop("row")
    return rows, tensors


def migrate_store(path: str | Path, *, progress: bool = False) -> Path:
    """Migrate the v1 store at ``path`` to v2 in place; returns ``path``. A v2 store is left as it is."""
    from tqdm.auto import tqdm

    path = Path(path)
    new, old = _siblings(path)
    if not path.exists() and new.is_dir() and old.is_dir():
        os.replace(new, path)  # crashed between the two renames: finish the swap
        log.info("finished an interrupted migration of %s", path)
    man = read_manifest(path)
    if man.get("format_version") == FORMAT_VERSION:
        if old.exists():
            shutil.rmtree(old)
        if new.exists():
            shutil.rmtree(new)
        return path
    if man.get("format_version") != 1:
        raise StoreError(f"{path} has format version {man.get('format_version')!r}; only version 1 can be migrated")
    if old.exists():
        raise StoreError(
            f"{old} exists: a previous migration left the old store there; inspect and remove it, then retry"
        )
    config = {k: v for k, v in man.items() if k not in V1_NOT_CONFIG}
    items = [json.loads(l) for l in (path / ITEMS).read_text().splitlines() if l]
    writer = StoreWriter(new, config, items, extra=dict(man.get("extra") or {}), dtype="float32")
    try:
        done = writer.done_shards()
        entries = [s for s in man["shards"] if int(s["index"]) not in done]
        for s in tqdm(entries, desc=f"migrate {path.name}", disable=not progress):
            rows, tensors = read_v1_shard(path, s)
            order = np.argsort(rows, kind="stable")
            if not np.array_equal(rows[order], np.arange(rows[order][0], rows[order][0] + len(rows))):
                raise StoreError(
                    f"v1 shard {s['file']} holds non-contiguous rows; this store cannot be migrated, collect it again"
                )
            if not np.array_equal(order, np.arange(len(rows))):
                tensors = {
                    k: (v[order] if not k.startswith("all.") and v.shape[:1] == rows.shape else v)
                    for k, v in tensors.items()
                }
            writer.write_shard(int(s["index"]), rows[order], tensors)
        if man.get("complete"):
            writer.finish()
        else:
            writer.close()
    except BaseException:
        writer.close()
        raise
    os.replace(path, old)
    os.replace(new, path)
    shutil.rmtree(old)
    log.info("migrated %s to store format v%d", path, FORMAT_VERSION)
    return path


def is_v1(path: str | Path) -> bool:
    try:
        m = read_manifest(Path(path))
    except StoreError:
        return False
    return m.get("format") == FORMAT_NAME and m.get("format_version") == 1
