"""Activation store, format version 2: per-layer shards, an append-only index, streaming slice reads.

Layout of a store directory::

    manifest.json              format (version 2), configuration and its hash, storage dtype, batch size,
                               number of items, layout, complete flag, extra provenance (no shard list)
    items.jsonl                one row per prompt (pair id, label, problem id, text, token counts, image hash)
    index.jsonl                one line per finished shard: {"bytes", "file", "index", "rows": [a, b), "sha256"}
    shard-00000.safetensors    "row" int64 [rows]; "<token rule>/<layer>" [rows, d] for every token rule and
                               stored layer, in the storage dtype (float32, float16 or bfloat16);
                               optional "seq_len" int64 [rows], "image_mask" uint8 [rows, T],
                               "all.<row>" [n_layers, T, d] (every token, storage dtype)
    store.lock                 only while a writer runs: pid, host and start time of the writing process

Reading one (token rule, layer) slice touches one contiguous byte range per shard and nothing else
(``os.preadv`` into the caller's buffer; no memory map), so analyses stream a store layer by layer with
memory bounded by one slice. Float16/bfloat16 storage is widened to float32 on read.

Writing shard ``k`` costs O(1): the shard is written atomically (temporary file, fsync, rename) with its
sha256 computed while writing, then one line is appended to ``index.jsonl``. The manifest is written
when the store is created and when it is finished, never per shard. An interrupted collection resumes:
index entries whose file is missing or has the wrong size are dropped and recomputed, a torn last index
line is cut. A shard's sha256 is checked on the first read in each process (and by ``verify=True`` or
:meth:`ActivationStore.verify`); trusted multi-GB stores skip that with ``trust=True`` or
``COTSCOPE_TRUST_STORE=1``. One process writes at a time (advisory ``fcntl`` lock); readers never lock.

The configuration hash covers the model, layers, token rules, storage dtype, the other collection
settings and the full item list of the job, but not the batch size or which shards a worker wrote, so
stores written by several workers of one job merge (:mod:`analyses.io.merge`) into the store one
process would have written. Version-1 stores are refused with the command that converts them
(``cotscope store migrate DIR``, :mod:`analyses.io.migrate`).

>>> store = ActivationStore("runs/demo/store")            # doctest: +SKIP
>>> cot, direct = store.paired("last_prompt", layer=12)   # doctest: +SKIP
"""

from __future__ import annotations

import bisect
import hashlib
import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cotscope.analyses.io import tensorfile as tf
from cotscope.analyses.io import verify as _verify
from cotscope.analyses.io.atomic import write_text_atomic
from cotscope.analyses.io.lock import LockedError
from cotscope.analyses.io.resumable import config_hash, open_output, remove_temporaries
from cotscope.errors import CotscopeError

log = logging.getLogger(__name__)

FORMAT_NAME = "cotscope.store"
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
ITEMS = "items.jsonl"
INDEX = "index.jsonl"
LOCK = "store.lock"
LAYOUT = "per_layer"
STORE_DTYPES = tf.FLOAT_STORAGE
ENV_TRUST = _verify.ENV_TRUST
MIGRATE_COMMAND = "cotscope store migrate"
# manifest keys that are not part of the hashed configuration
NOT_CONFIG = (
    "format",
    "format_version",
    "config_hash",
    "batch_size",
    "n_items",
    "items_digest",
    "layout",
    "index",
    "checksum",
    "part",
    "complete",
    "extra",
)
AUX = ("seq_len", "image_mask")


class StoreError(CotscopeError):
    """A store is missing, corrupt, incomplete, of another format version, or was written by a different configuration."""


class StoreLockedError(StoreError, LockedError):
    """Another process is writing this store (the message names it: pid, host, start time, command)."""


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.safetensors"


def tensor_name(position: str, layer: int) -> str:
    """Name of the per-layer tensor of one token rule in a v2 shard."""
    return f"{position}/{int(layer)}"


def sha256_file(path: Path) -> str:
    return tf.sha256_file(path)


def items_text(items: Sequence[Mapping[str, Any]]) -> str:
    return "".join(json.dumps(it, sort_keys=True) + "\n" for it in items)


def hashed_config(manifest_or_config: Mapping[str, Any], items_digest: str) -> dict[str, Any]:
    """The dict whose hash is the store's ``config_hash``: configuration keys plus the items' digest."""
    cfg = {k: v for k, v in manifest_or_config.items() if k not in NOT_CONFIG}
    return {**cfg, "items": items_digest}


def items_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def part_batches(n_batches: int, part: tuple[int, int] | None) -> list[int]:
    """Batch (shard) indices a worker ``part = (i, n)`` writes: ``i, i+n, i+2n, …`` (all when ``None``).

    >>> part_batches(7, (1, 3))
    [1, 4]
    """
    if part is None:
        return list(range(n_batches))
    i, n = part
    return list(range(i, n_batches, n))


def check_part(part: Sequence[int] | None) -> tuple[int, int] | None:
    if part is None:
        return None
    try:
        i, n = (int(x) for x in part)
    except (TypeError, ValueError):
        raise StoreError(f"part must be (i, n) with 0 <= i < n, got {part!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise StoreError(
            f"part (i, n) = ({i}, {n}) is invalid: need n >= 1 and 0 <= i < n (e.g. --shard 0/{max(n, 1)})"
        )
    return (i, n)


def read_index(path: Path) -> dict[int, dict[str, Any]]:
    """Shard entries of an index file (the last line for a shard index wins; a torn last line is ignored)."""
    out: dict[int, dict[str, Any]] = {}
    f = path / INDEX
    if not f.is_file():
        return out
    text = f.read_text()
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    for line in text.splitlines():
        if line.strip():
            e = json.loads(line)
            out[int(e["index"])] = e
    return out


def index_line(entry: Mapping[str, Any]) -> str:
    return json.dumps(entry, sort_keys=True, separators=(",", ":")) + "\n"


def read_manifest(path: Path) -> dict[str, Any]:
    man = Path(path) / MANIFEST
    if not man.is_file():
        raise StoreError(
            f"no activation store at {path} (missing {MANIFEST}); collect one first "
            "with probes.collect.collect_pairs(...) or `cotscope collect`"
        )
    try:
        m = json.loads(man.read_text())
    except json.JSONDecodeError as e:
        raise StoreError(f"{man} is corrupt ({e}); delete the store and collect again") from None
    if m.get("format") != FORMAT_NAME:
        raise StoreError(f"{path} is not a cotscope activation store (format {m.get('format')!r})")
    return m


def check_format_version(manifest: Mapping[str, Any], path: Path) -> None:
    v = manifest.get("format_version")
    if v == FORMAT_VERSION:
        return
    if isinstance(v, int) and v > FORMAT_VERSION:
        raise StoreError(
            f"{path} is an activation store of format version {v}, newer than this cotscope reads "
            f"({FORMAT_VERSION}); upgrade cotscope"
        )
    raise StoreError(
        f"{path} is an activation store of format version {v!r}; this cotscope reads version "
        f"{FORMAT_VERSION} only. Convert it in place with `{MIGRATE_COMMAND} {path}` (the arrays stay "
        "bit-identical), or collect again into a new directory"
    )


class StoreWriter:
    """Create or resume a store. Use :meth:`todo` / :meth:`done_shards` to skip finished work.

    Args:
        path: the store directory.
        config: everything that determines the arrays (model, layers, positions, …). ``batch_size`` may be
            included; it is recorded but not hashed.
        items: the job's full item list (every worker of a job passes the same list).
        dtype: storage dtype of activations: ``"float32"`` (exact), ``"float16"`` or ``"bfloat16"``.
        part: ``(i, n)``: this writer is worker ``i`` of ``n`` and writes batches ``i, i+n, …`` (merge the
            parts with :func:`analyses.io.merge.merge_stores`).
    """

    def __init__(
        self,
        path: str | Path,
        config: dict[str, Any],
        items: Sequence[dict[str, Any]],
        *,
        overwrite: bool = False,
        extra: dict[str, Any] | None = None,
        dtype: str | None = None,
        part: Sequence[int] | None = None,
    ) -> None:
        self.path = Path(path)
        self.items = list(items)
        if not self.items:
            raise StoreError("empty stimulus set: nothing to collect; pass at least one pair")
        dtype = dtype or config.get("dtype", "float32")
        if dtype not in STORE_DTYPES:
            raise StoreError(f"store dtype {dtype!r} is not supported; use one of {STORE_DTYPES}")
        self.config = {**{k: v for k, v in config.items() if k != "batch_size"}, "dtype": dtype}
        bad = [k for k in self.config if k in NOT_CONFIG]
        if bad:
            raise StoreError(f"config keys {bad} are reserved for the store manifest; rename them")
        for k in ("layers", "positions"):
            if k not in self.config:
                raise StoreError(f"config needs {k!r} (the stored layers and token rules)")
        self.batch_size = config.get("batch_size")
        self.part = check_part(part)
        text = items_text(self.items)
        self.items_digest = items_digest(text)
        self.hash = config_hash(hashed_config(self.config, self.items_digest))
        self.dtype = dtype
        self.layers = [int(l) for l in self.config["layers"]]
        self.positions = list(self.config["positions"])
        fresh = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "config_hash": self.hash,
            **self.config,
            "batch_size": self.batch_size,
            "n_items": len(self.items),
            "items_digest": self.items_digest,
            "layout": LAYOUT,
            "index": INDEX,
            "checksum": "sha256",
            "part": list(self.part) if self.part else None,
            "complete": False,
            "extra": extra or {},
        }
        what = f"activation store {self.path}"
        fix = "Use a new directory, or pass overwrite=True to replace it."

        def reset() -> None:
            for f in list(self.path.glob("shard-*.safetensors")) + [self.path / INDEX]:
                if f.exists():
                    f.unlink()
            write_text_atomic(self.path / ITEMS, text)

        self.out = open_output(
            self.path,
            MANIFEST,
            INDEX,
            LOCK,
            fresh=fresh,
            fmt=FORMAT_NAME,
            version=FORMAT_VERSION,
            error=StoreError,
            what=what,
            fix=fix,
            overwrite=overwrite,
            config_of=lambda m: hashed_config(m, m.get("items_digest", "?")),
            on_reset=reset,
            log_fsync=False,
            migrate=f"{MIGRATE_COMMAND} {self.path}",
            locked_error=StoreLockedError,
        )
        self.manifest = self.out.header
        try:
            if not self.out.created:
                self._check_resume(fresh)
            removed = remove_temporaries(self.path, ".shard-*.tmp")
            if removed:
                log.info("removed %d temporary files of interrupted shard writes in %s", removed, self.path)
            self._shards = self._load_index()
        except BaseException:
            self.out.close()
            raise

    # -- lifecycle ------------------------------------------------------------------------------
    def _check_resume(self, fresh: Mapping[str, Any]) -> None:
        old = self.manifest
        if old.get("batch_size") != self.batch_size:
            raise StoreError(
                f"{self.path} was being collected with batch_size={old.get('batch_size')} (its shards are batches of "
                f"that many rows); resume with batch_size={old.get('batch_size')}, or collect into a new directory"
            )
        if old.get("part") != fresh["part"]:
            raise StoreError(
                f"{self.path} holds part {old.get('part')} of a job (i, n), not {fresh['part']}; resume "
                "it with the same part, or use a new directory for this worker"
            )

    def _load_index(self) -> dict[int, dict[str, Any]]:
        good = {}
        for k, e in read_index(self.path).items():
            f = self.path / e["file"]
            if f.is_file() and f.stat().st_size == e["bytes"]:
                good[k] = e
            else:
                log.warning(
                    "shard %s of %s is missing or has the wrong size; it will be recomputed", e["file"], self.path
                )
        return good

    @property
    def n_batches(self) -> int | None:
        if not self.batch_size:
            return None
        return (len(self.items) + int(self.batch_size) - 1) // int(self.batch_size)

    def assigned(self) -> list[int]:
        """Batch indices this writer is responsible for (all, or its part's)."""
        if self.n_batches is None:
            raise StoreError("the store has no batch_size, so its batches are not defined")
        return part_batches(self.n_batches, self.part)

    def done_shards(self) -> set[int]:
        return set(self._shards)

    def todo(self) -> list[int]:
        """Assigned batch indices not written yet, in order."""
        done = self.done_shards()
        return [b for b in self.assigned() if b not in done]

    def batch_rows(self, b: int) -> tuple[int, int]:
        bs = int(self.batch_size)
        return b * bs, min((b + 1) * bs, len(self.items))

    # -- writing --------------------------------------------------------------------------------
    def _tensors(self, rows: np.ndarray, tensors: Mapping[str, np.ndarray]) -> tuple[dict, dict]:
        n = len(rows)
        data: dict[str, np.ndarray] = {"row": np.asarray(rows, dtype=np.int64)}
        dtypes: dict[str, str] = {}
        missing = [p for p in self.positions if p not in tensors]
        if missing:
            raise StoreError(f"shard lacks token rules {missing}; every shard holds all of {self.positions}")
        for p in self.positions:
            a = np.asarray(tensors[p])
            if a.ndim != 3 or a.shape[0] != n or a.shape[1] != len(self.layers):
                raise StoreError(f"tensor {p!r} has shape {a.shape}; expected [{n} rows, {len(self.layers)} layers, d]")
            for li, l in enumerate(self.layers):
                name = tensor_name(p, l)
                data[name] = a[:, li]
                dtypes[name] = self.dtype
        for k, v in tensors.items():
            if k in self.positions:
                continue
            if "/" in k or k == "row":
                raise StoreError(f"tensor name {k!r} is reserved")
            v = np.asarray(v)
            data[k] = v
            if k.startswith("all."):
                dtypes[k] = self.dtype
            elif v.dtype.kind == "f" and v.dtype != np.float32 and v.dtype != np.float64:
                dtypes[k] = "float32"
        return data, dtypes

    def write_shard(self, index: int, rows: np.ndarray, tensors: dict[str, np.ndarray]) -> dict[str, Any]:
        """Write shard ``index`` holding the contiguous ``rows`` and append its index line (O(1))."""
        from cotscope.analyses.io.resumable import write_unit_file

        if not self.out.lock.held:
            raise StoreError(f"writer of {self.path} is closed; open a new StoreWriter to resume")
        rows = np.asarray(rows, dtype=np.int64)
        if rows.ndim != 1 or len(rows) == 0 or not np.array_equal(rows, np.arange(rows[0], rows[0] + len(rows))):
            raise StoreError("a shard holds a contiguous, ascending range of rows (e.g. np.arange(a, b))")
        a, b = int(rows[0]), int(rows[-1]) + 1
        if a < 0 or b > len(self.items):
            raise StoreError(f"rows {a}..{b - 1} are outside the store's {len(self.items)} items")
        data, dtypes = self._tensors(rows, tensors)
        target = self.path / shard_name(index)
        nbytes, digest = write_unit_file(
            target,
            lambda tmp: tf.write_file(
                tmp,
                data,
                store_dtypes=dtypes,
                metadata={"format": FORMAT_NAME, "format_version": str(FORMAT_VERSION)},
                fsync=False,
            ),
        )
        entry = {"bytes": nbytes, "file": target.name, "index": int(index), "rows": [a, b], "sha256": digest}
        self.out.log.append(index_line(entry))
        self._shards[int(index)] = entry
        return entry

    def _check_cover(self) -> None:
        entries = sorted(self._shards.values(), key=lambda e: e["rows"][0])
        if self.part is not None and self.n_batches is not None:
            missing = [b for b in self.assigned() if b not in self._shards]
            if missing:
                raise StoreError(
                    f"store {self.path} (part {self.part[0]}/{self.part[1]}) lacks batches {missing[:8]} of "
                    "its part; collection is unfinished"
                )
            return
        pos = 0
        for e in entries:
            a, b = e["rows"]
            if a < pos:
                raise StoreError(f"shards of {self.path} overlap at rows {a}..{pos - 1} ({e['file']})")
            if a > pos:
                break
            pos = b
        covered = sum(e["rows"][1] - e["rows"][0] for e in entries)
        if pos != len(self.items) or covered != len(self.items):
            raise StoreError(f"store {self.path} covers {covered} of {len(self.items)} items; collection is unfinished")

    def finish(self, **extra: Any) -> ActivationStore | None:
        """Check coverage, write the compacted index and the complete manifest, release the lock.

        Returns the store (``None`` for a part store: merge the parts to read them).
        """
        self._check_cover()
        lines = "".join(index_line(self._shards[k]) for k in sorted(self._shards))
        write_text_atomic(self.path / INDEX, lines)
        self.manifest["complete"] = True
        self.manifest["extra"].update(extra)
        self.out.write_header()
        self.close()
        return None if self.part is not None else ActivationStore(self.path)

    def close(self) -> None:
        """Release the writer lock (the store stays resumable)."""
        if self.out.lock.held:
            self.out.log.sync()
        self.out.close()

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# ================================================================================================ reading
def pair_rows(labels: np.ndarray, pair_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row indices ``(cot_rows, direct_rows)`` of each pair, pairs sorted by id; refuses unequal pairs."""
    labels = np.asarray(labels)
    pair_ids = np.asarray(pair_ids)
    pos = {int(p): i for i, (p, l) in enumerate(zip(pair_ids, labels)) if l == 1}
    neg = {int(p): i for i, (p, l) in enumerate(zip(pair_ids, labels)) if l == 0}
    if len(pos) != int((labels == 1).sum()) or len(neg) != int((labels == 0).sum()):
        raise StoreError(
            "a pair id occurs twice with the same label; each pair needs exactly one CoT and one direct item"
        )
    if set(pos) != set(neg):
        missing = sorted(set(pos) ^ set(neg))[:5]
        raise StoreError(
            f"pairs of unequal count: {len(pos)} CoT items vs {len(neg)} direct items "
            f"(unmatched pair ids e.g. {missing}); every CoT item needs its direct partner"
        )
    if not pos:
        raise StoreError("empty set: no pairs to split")
    ids = sorted(pos)
    return np.array([pos[i] for i in ids], dtype=np.int64), np.array([neg[i] for i in ids], dtype=np.int64)


def split_pairs(X: np.ndarray, labels: np.ndarray, pair_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split rows into matched ``(positive, negative)`` arrays by pair id; refuses unequal pairs."""
    c, d = pair_rows(labels, pair_ids)
    return X[c], X[d]


class ActivationStore:
    """Read-only view of a complete v2 store (numpy only); reads one (token rule, layer) slice at a time.

    Args:
        verify: check every shard's size and sha256 now.
        allow_incomplete: open an interrupted store (reads see only the finished shards' rows).
        trust: skip the sha256 check on the first read of each shard (sizes are still checked); default:
            ``COTSCOPE_TRUST_STORE`` (unset = verify).
        allow_partial: open one worker's part of a sharded job.
    """

    def __init__(
        self,
        path: str | Path,
        verify: bool = False,
        allow_incomplete: bool = False,
        *,
        trust: bool | None = None,
        allow_partial: bool = False,
    ) -> None:
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        check_format_version(self.manifest, self.path)
        if self.manifest.get("part") and not (allow_partial or allow_incomplete):
            i, n = self.manifest["part"]
            raise StoreError(
                f"{self.path} holds only part {i}/{n} of a sharded collection; merge the parts with "
                f"`cotscope store merge PART0 PART1 … --out DIR` and read the merged store"
            )
        if not self.manifest.get("complete") and not allow_incomplete:
            raise StoreError(
                f"store {self.path} is incomplete (an interrupted collection?); run the same "
                "collection again to resume it"
            )
        self.trust = _verify.trusted_by_env() if trust is None else bool(trust)
        self.items: list[dict[str, Any]] = [json.loads(l) for l in (self.path / ITEMS).read_text().splitlines() if l]
        self.shards = sorted(read_index(self.path).values(), key=lambda e: e["rows"][0])
        self._starts = [e["rows"][0] for e in self.shards]
        self._headers: dict[str, tf.Header] = {}
        self._pairs: tuple[np.ndarray, np.ndarray] | None = None
        self._check_rows(strict=not (allow_incomplete or allow_partial))
        if verify:
            self.verify()

    def _check_rows(self, strict: bool) -> None:
        pos = 0
        for e in self.shards:
            a, b = e["rows"]
            if a < pos:
                raise StoreError(
                    f"store {self.path}: shard {e['file']} overlaps rows {a}..{pos - 1} of another shard; "
                    "the index is corrupt: collect again into a new directory"
                )
            if strict and a != pos:
                raise StoreError(
                    f"store {self.path}: rows {pos}..{a - 1} are in no shard although the store is "
                    "marked complete; re-run the same collection to rewrite them"
                )
            pos = b
        if strict and pos != len(self.items):
            raise StoreError(
                f"store {self.path}: shards cover {pos} of {len(self.items)} items; re-run the same "
                "collection to finish it"
            )
        self.n_rows_stored = sum(e["rows"][1] - e["rows"][0] for e in self.shards)

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
    def dtype(self) -> str:
        return str(self.manifest.get("dtype", "float32"))

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def labels(self) -> np.ndarray:
        return np.array([it["label"] for it in self.items], dtype=np.int64)

    @property
    def pair_ids(self) -> np.ndarray:
        return np.array([it["pair_id"] for it in self.items], dtype=np.int64)

    @property
    def n_pairs(self) -> int:
        return len(self.pair_index()[0])

    def pair_index(self) -> tuple[np.ndarray, np.ndarray]:
        """``(cot_rows, direct_rows)``: the two rows of every pair, pairs sorted by pair id."""
        if self._pairs is None:
            self._pairs = pair_rows(self.labels, self.pair_ids)
        return self._pairs

    # -- verification ---------------------------------------------------------------------------
    def _problem_message(self, e: Mapping[str, Any], problem: str) -> str:
        return (
            f"shard {self.path / e['file']} is corrupt or truncated: {problem}. Delete it and re-run the same "
            "collection: only that shard will be recomputed. (Every shard is checked against its sha256 the "
            "first time a process reads it; for a trusted store skip that check with "
            f"ActivationStore(..., trust=True) or {ENV_TRUST}=1.)"
        )

    def _ensure(self, e: Mapping[str, Any]) -> None:
        problem = _verify.check_file(self.path / e["file"], e["bytes"], None if self.trust else e["sha256"])
        if problem:
            raise StoreError(self._problem_message(e, problem))

    def verify(self) -> None:
        """Check every shard against its recorded size and sha256 (whatever ``trust`` says)."""
        for e in self.shards:
            problem = _verify.check_file(self.path / e["file"], e["bytes"], e["sha256"])
            if problem:
                raise StoreError(self._problem_message(e, problem))

    # -- low-level reads ------------------------------------------------------------------------
    def _header(self, e: Mapping[str, Any], fd: int) -> tf.Header:
        h = self._headers.get(e["file"])
        if h is None:
            try:
                h = tf.parse_header(fd, self.path / e["file"])
            except tf.TensorFileError as err:
                raise StoreError(self._problem_message(e, str(err))) from None
            self._headers[e["file"]] = h
        return h

    def _open(self, e: Mapping[str, Any]) -> int:
        self._ensure(e)
        try:
            return os.open(self.path / e["file"], os.O_RDONLY)
        except FileNotFoundError:
            raise StoreError(self._problem_message(e, "the file is missing")) from None

    def _info(self, e: Mapping[str, Any], fd: int, name: str) -> tf.TensorInfo:
        info = self._header(e, fd).tensors.get(name)
        if info is None:
            raise StoreError(
                f"{self.path / e['file']} has no tensor {name!r}; token rules in this store: "
                f"{self.positions}, layers: {self.layers}"
            )
        return info

    def _layer_index(self, layer: int) -> int:
        layers = self.layers
        li = layer + self.model["n_layers"] if layer < 0 else layer
        if li not in layers:
            raise StoreError(
                f"layer {layer} is not in store {self.path} (stored layers: {layers}); collect again with that layer"
            )
        return li

    def _check_position(self, position: str) -> None:
        if position not in self.positions:
            raise StoreError(f"position {position!r} is not in store {self.path} (has {self.positions})")

    def read_rows(self, position: str, layer: int, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        """Rows ``[start, stop)`` of one (token rule, layer) slice as float32 ``[stop - start, d]``.

        Reads only those rows' bytes of that layer's tensor in each shard they span.
        """
        self._check_position(position)
        name = tensor_name(position, self._layer_index(layer))
        d = self.hidden_size
        out = np.empty((stop - start, d), dtype=np.float32) if out is None else out
        if out.shape != (stop - start, d) or out.dtype != np.float32:
            raise StoreError(f"output buffer must be float32 of shape {(stop - start, d)}, got {out.dtype} {out.shape}")
        k = max(0, bisect.bisect_right(self._starts, start) - 1)
        pos = start
        scratch = None
        while pos < stop:
            if k >= len(self.shards) or self.shards[k]["rows"][0] > pos:
                raise StoreError(f"row {pos} is in no finished shard of {self.path}")
            e = self.shards[k]
            a, b = e["rows"]
            if b <= pos:
                k += 1
                continue
            hi = min(b, stop)
            fd = self._open(e)
            try:
                info = self._info(e, fd, name)
                if info.shape[0] != b - a:
                    raise StoreError(
                        self._problem_message(e, f"tensor {name} has {info.shape[0]} rows, index says {b - a}")
                    )
                if scratch is None and info.storage != "float32":
                    scratch = np.empty((min(stop - start, b - a) + 1) * info.row_bytes, dtype=np.uint8)
                tf.read_into(
                    fd,
                    info,
                    out[pos - start : hi - start],
                    rows=(pos - a, hi - a),
                    path=self.path / e["file"],
                    scratch=scratch,
                )
            except tf.TensorFileError as err:
                raise StoreError(self._problem_message(e, str(err))) from None
            finally:
                os.close(fd)
            pos = hi
            k += 1
        return out

    def read_slice(self, position: str, layer: int, out: np.ndarray | None = None) -> np.ndarray:
        """One (token rule, layer) slice ``[n_items, d]`` (float32, item order); other layers are not read."""
        return self.read_rows(position, layer, 0, self.n_items, out=out)

    # -- data -----------------------------------------------------------------------------------
    def get(self, position: str, layer: int | None = None) -> np.ndarray:
        """Activations at ``position``: ``[n_items, d]`` for one layer, else ``[n_items, n_layers, d]`` (all layers
        in memory: prefer :meth:`read_slice` / :meth:`paired` per layer for large stores)."""
        self._check_position(position)
        if layer is not None:
            return self.read_slice(position, layer)
        out = np.empty((self.n_items, len(self.layers), self.hidden_size), dtype=np.float32)
        buf = np.empty((self.n_items, self.hidden_size), dtype=np.float32)
        for li, l in enumerate(self.layers):
            out[:, li] = self.read_slice(position, l, out=buf)
        return out

    def _pair_blocks(
        self, position: str, layer: int, chunk_pairs: int
    ) -> Iterator[tuple[int, int, np.ndarray, np.ndarray, np.ndarray]]:
        """``(first_pair, end_pair, block, cot_idx, direct_idx)``: the rows spanned by a chunk of pairs, read into
        one reused buffer (valid until the next step), with the pairs' row indices into it."""
        cot_rows, dir_rows = self.pair_index()
        n = len(cot_rows)
        scratch = None
        for s in range(0, n, chunk_pairs):
            e = min(n, s + chunk_pairs)
            cr, dr = cot_rows[s:e], dir_rows[s:e]
            lo = int(min(cr.min(), dr.min()))
            hi = int(max(cr.max(), dr.max())) + 1
            if scratch is None or scratch.shape[0] < hi - lo:
                scratch = np.empty((hi - lo, self.hidden_size), dtype=np.float32)
            block = self.read_rows(position, layer, lo, hi, out=scratch[: hi - lo])
            yield s, e, block, cr - lo, dr - lo

    def iter_pairs(
        self, position: str, layer: int, chunk_pairs: int = 4096
    ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Stream ``(first_pair, cot, direct)`` float32 chunks of one slice, pairs sorted by pair id.

        Each chunk reads only the rows its pairs span (adjacent rows for collected stores), so memory is
        bounded by the chunk, not the store.
        """
        for s, _, block, ci, di in self._pair_blocks(position, layer, chunk_pairs):
            yield s, block[ci], block[di]

    def paired(
        self, position: str, layer: int, out: tuple[np.ndarray, np.ndarray] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(cot, direct)`` float32 arrays ``[n_pairs, d]``, row ``i`` of both from the same pair.

        Reads one layer of one token rule; pass ``out`` (two buffers) to reuse memory across layers.
        """
        n, d = self.n_pairs, self.hidden_size
        if out is None:
            out = (np.empty((n, d), np.float32), np.empty((n, d), np.float32))
        cot, direct = out
        if cot.shape != (n, d) or direct.shape != (n, d) or cot.dtype != np.float32 or direct.dtype != np.float32:
            raise StoreError(f"paired(out=…) needs two float32 buffers of shape {(n, d)}")
        for s, e, block, ci, di in self._pair_blocks(position, layer, 4096):
            np.take(block, ci, axis=0, out=cot[s:e])
            np.take(block, di, axis=0, out=direct[s:e])
        return cot, direct

    def _aux(self, key: str) -> list[np.ndarray]:
        parts = []
        for e in self.shards:
            fd = self._open(e)
            try:
                info = self._header(e, fd).tensors.get(key)
                if info is None:
                    raise StoreError(
                        f"{self.path / e['file']} has no tensor {key!r} (collected from text-only inputs?)"
                    )
                dt = np.float32 if info.storage in STORE_DTYPES else info.raw_dtype
                parts.append(tf.read_into(fd, info, np.empty(info.shape, dtype=dt), path=self.path / e["file"]))
            except tf.TensorFileError as err:
                raise StoreError(self._problem_message(e, str(err))) from None
            finally:
                os.close(fd)
        return parts

    def image_masks(self) -> list[np.ndarray]:
        """Per item, the boolean mask of image tokens over its (unpadded) sequence."""
        masks, lens = self._aux("image_mask"), np.concatenate(self._aux("seq_len"))
        rows = [m[i] for m in masks for i in range(len(m))]
        return [rows[i][: lens[i]].astype(bool) for i in range(len(lens))]

    def seq_lens(self) -> np.ndarray:
        return np.concatenate(self._aux("seq_len"))

    def all_tokens(self, row: int) -> np.ndarray:
        """Every token's residual for one item: ``[n_layers, T, d]`` float32 (only if collected with all tokens)."""
        k = bisect.bisect_right(self._starts, row) - 1
        if k < 0 or not (self.shards[k]["rows"][0] <= row < self.shards[k]["rows"][1]):
            raise StoreError(f"row {row} is not in store {self.path} (0..{self.n_items - 1})")
        e = self.shards[k]
        fd = self._open(e)
        try:
            info = self._header(e, fd).tensors.get(f"all.{row}")
            if info is None:
                raise StoreError("this store was collected without every-token residuals (all_tokens=False)")
            return tf.read_into(fd, info, np.empty(info.shape, dtype=np.float32), path=self.path / e["file"])
        finally:
            os.close(fd)
