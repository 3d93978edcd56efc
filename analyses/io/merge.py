"""Merge activation stores written by several workers (or ``--shard i/N`` jobs) of one collection.

``merge_stores([A, B, …], out)`` checks that every input is a complete v2 store (or a finished part)
of the same configuration (same config hash: model, layers, token rules, dtype, settings and item
list; batch size and the worker's share are not part of it), verifies each input shard against its
sha256 while copying it, and writes ``out`` with the canonical manifest, items and index. When the
inputs were collected with one batch size, ``out`` is byte-for-byte the store one process would have
written. Inputs of different batch sizes still merge (shards are renumbered in row order; the
manifest's ``batch_size`` becomes ``null``). The same shard in two inputs is kept once if its bytes are
identical (a retried worker) and refused otherwise; rows in no input are refused.

>>> merge_stores(["runs/x/part0", "runs/x/part1"], "runs/x/store")   # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cotscope.analyses.io.atomic import write_json_atomic, write_text_atomic
from cotscope.analyses.io.lock import WriterLock
from cotscope.analyses.io.resumable import diff_keys
from cotscope.analyses.io.store import (
    INDEX,
    ITEMS,
    LOCK,
    MANIFEST,
    ActivationStore,
    StoreError,
    check_format_version,
    hashed_config,
    index_line,
    read_index,
    read_manifest,
    shard_name,
)

log = logging.getLogger(__name__)


def _copy_verified(src: Path, dst: Path, sha256: str, size: int) -> None:
    h = hashlib.sha256()
    buf = bytearray(1 << 22)
    mv = memoryview(buf)
    n_total = 0
    with open(src, "rb", buffering=0) as fi, open(dst, "wb") as fo:
        while n := fi.readinto(buf):
            h.update(mv[:n])
            fo.write(mv[:n])
            n_total += n
        fo.flush()
        os.fsync(fo.fileno())
    if n_total != size or h.hexdigest() != sha256:
        raise StoreError(
            f"shard {src} is corrupt (size/sha256 differ from its index entry); re-run the worker that "
            "wrote it (only that shard is recomputed), then merge again"
        )


def merge_stores(sources: Sequence[str | Path], out: str | Path, *, overwrite: bool = False) -> ActivationStore:
    """Merge complete stores or parts of one collection into ``out`` (see the module docstring)."""
    sources = [Path(s) for s in sources]
    out = Path(out)
    if not sources:
        raise StoreError("nothing to merge: pass at least one store")
    if any(s.resolve() == out.resolve() for s in sources):
        raise StoreError(f"the output {out} is also an input; merge into a new directory")
    mans = []
    for s in sources:
        m = read_manifest(s)
        check_format_version(m, s)
        if not m.get("complete"):
            raise StoreError(f"{s} is incomplete: finish (resume) its collection first, then merge")
        mans.append(m)
    base = mans[0]
    cfg0 = hashed_config(base, base.get("items_digest", "?"))
    for s, m in zip(sources[1:], mans[1:]):
        if m.get("config_hash") != base.get("config_hash"):
            diff = diff_keys(cfg0, hashed_config(m, m.get("items_digest", "?")))
            raise StoreError(
                f"cannot merge {sources[0]} and {s}: they were written by different configurations "
                f"(differ in: {', '.join(diff) or 'the hashed inputs'}). Only parts of one collection "
                "(same model, layers, token rules, dtype and items) can be merged"
            )
    items_text = (sources[0] / ITEMS).read_text()
    for s in sources[1:]:
        if (s / ITEMS).read_text() != items_text:
            raise StoreError(f"cannot merge: {s}/{ITEMS} differs from {sources[0]}/{ITEMS}")
    batch_sizes = {m.get("batch_size") for m in mans}
    # collect shards by row range
    by_rows: dict[tuple[int, int], tuple[Path, dict[str, Any]]] = {}
    for s in sources:
        for e in read_index(s).values():
            key = (e["rows"][0], e["rows"][1])
            if key in by_rows:
                if by_rows[key][1]["sha256"] != e["sha256"]:
                    raise StoreError(
                        f"rows {key[0]}..{key[1] - 1} are in both {by_rows[key][0]} and {s} with different "
                        "bytes; these stores are not parts of one run"
                    )
                continue
            by_rows[key] = (s, e)
    ranges = sorted(by_rows)
    pos = 0
    for a, b in ranges:
        if a < pos:
            raise StoreError(
                f"shards overlap at rows {a}..{pos - 1} (inputs of different batch sizes cut the rows "
                "differently); merge parts collected with one batch size"
            )
        if a > pos:
            raise StoreError(
                f"rows {pos}..{a - 1} are in none of the stores; collect the missing part (e.g. the "
                "missing --shard i/N) and merge again"
            )
        pos = b
    n_items = int(base["n_items"])
    if pos != n_items:
        raise StoreError(
            f"rows {pos}..{n_items - 1} are in none of the stores; collect the missing part and merge again"
        )
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise StoreError(f"{out} exists and is not empty; choose a new output or pass overwrite=True (--overwrite)")
    out.parent.mkdir(parents=True, exist_ok=True)
    with WriterLock(out.parent / f".{out.name}.{LOCK}", what=f"merge output {out}"):
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.merging-", dir=out.parent))
        try:
            entries = []
            renumber = len(batch_sizes) != 1
            for k, (a, b) in enumerate(ranges):
                src_dir, e = by_rows[(a, b)]
                idx = k if renumber else int(e["index"])
                name = shard_name(idx)
                _copy_verified(src_dir / e["file"], tmp / name, e["sha256"], e["bytes"])
                entries.append({**e, "index": idx, "file": name})
            write_text_atomic(tmp / ITEMS, items_text)
            write_text_atomic(tmp / INDEX, "".join(index_line(e) for e in sorted(entries, key=lambda e: e["index"])))
            manifest = dict(base)
            manifest["part"] = None
            manifest["batch_size"] = base.get("batch_size") if not renumber else None
            manifest["complete"] = True
            extras = [m.get("extra", {}) for m in mans]
            if any(json.dumps(x, sort_keys=True) != json.dumps(extras[0], sort_keys=True) for x in extras[1:]):
                log.warning(
                    "the inputs' provenance differs (%s); the merged manifest keeps %s's",
                    ", ".join(sorted({k for x in extras for k in diff_keys(extras[0], x)})),
                    sources[0],
                )
            write_json_atomic(tmp / MANIFEST, manifest)
            os.chmod(tmp, 0o777 & ~_umask())
            if out.exists():
                shutil.rmtree(out)
            os.replace(tmp, out)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return ActivationStore(out)


def _umask() -> int:
    u = os.umask(0)
    os.umask(u)
    return u
