"""The pre-protocol attention-run writer and sweep table, kept verbatim as test oracles (names prefixed ``Old``).

tests/test_resumable.py checks that the writers ported onto analyses.io.resumable leave exactly the files
these wrote.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cotscope.analyses.io.atomic import atomic_path, write_json_atomic, write_text_atomic
from cotscope.analyses.io.attention_runs import KEY_TYPES, AttentionStoreError, trace_name
from cotscope.analyses.io.resumable import diff_keys as _diff_keys
from cotscope.analyses.io.tables import TYPES, SweepTableError, _encode, free_name, meta_path, read_table

FORMAT_NAME = "cotscope.attention"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
TRACES = "traces.jsonl"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def _config_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


class OldAttentionRunWriter:
    """Create or resume a run directory; :meth:`done` lists finished trace indices."""

    def __init__(
        self,
        path: str | Path,
        config: dict[str, Any],
        plan: Sequence[dict[str, Any]],
        *,
        overwrite: bool = False,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.path = Path(path)
        if not plan:
            raise AttentionStoreError("empty capture plan: pass at least one prompt to capture")
        self.config = config
        self.hash = _config_hash({**config, "plan": list(plan)})
        man = self.path / MANIFEST
        if man.exists() and not overwrite:
            try:
                old = json.loads(man.read_text())
            except json.JSONDecodeError:
                old = {}
            if old.get("config_hash") != self.hash:
                raise AttentionStoreError(
                    f"{self.path} already holds an attention run of a different configuration (hash "
                    f"{old.get('config_hash')} != {self.hash}: model, layers, heads, prompts or generation settings "
                    "differ). Use a new directory, or pass overwrite=True to replace it."
                )
            self.manifest = old
            self.manifest["traces"] = [t for t in old["traces"] if self._intact(t)]
        else:
            if self.path.exists():
                for f in list(self.path.glob("trace-*.safetensors")) + list(self.path.glob("trace-*.png")):
                    f.unlink()
            self.path.mkdir(parents=True, exist_ok=True)
            self.manifest = {
                "format": FORMAT_NAME,
                "format_version": FORMAT_VERSION,
                "config_hash": self.hash,
                **config,
                "key_types": list(KEY_TYPES),
                "n_traces": len(plan),
                "traces": [],
                "complete": False,
                "extra": extra or {},
            }
            write_text_atomic(self.path / TRACES, "")
            write_json_atomic(man, self.manifest)

    def _intact(self, entry: dict[str, Any]) -> bool:
        f = self.path / entry["file"]
        return f.is_file() and f.stat().st_size == entry["bytes"] and _sha256(f) == entry["sha256"]

    def done(self) -> set[int]:
        return {int(t["index"]) for t in self.manifest["traces"]}

    def write(self, index: int, record: dict[str, Any], tensors: dict[str, np.ndarray], image: Any = None) -> None:
        """Write trace ``index`` (arrays + JSON record, optional PIL image) and update the manifest."""
        from safetensors.numpy import save_file

        target = self.path / trace_name(index)
        record = dict(record, index=index, file=target.name)
        if image is not None:
            img_path = self.path / trace_name(index, "png")
            with atomic_path(img_path) as tmp:
                image.save(tmp, format="PNG")
            record["image_file"] = img_path.name
        data = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
        with atomic_path(target) as tmp:
            save_file(data, str(tmp), metadata={"format": FORMAT_NAME, "trace": str(index)})
        entry = {
            "index": index,
            "file": target.name,
            "bytes": target.stat().st_size,
            "sha256": _sha256(target),
            "record": record,
        }
        self.manifest["traces"] = sorted(
            [t for t in self.manifest["traces"] if t["index"] != index] + [entry], key=lambda t: t["index"]
        )
        write_text_atomic(
            self.path / TRACES, "".join(json.dumps(t["record"], sort_keys=True) + "\n" for t in self.manifest["traces"])
        )
        write_json_atomic(self.path / MANIFEST, self.manifest)

    def finish(self, **extra: Any) -> None:
        if len(self.manifest["traces"]) != self.manifest["n_traces"]:
            raise AttentionStoreError("unfinished")
        self.manifest["complete"] = True
        self.manifest["extra"].update(extra)
        write_json_atomic(self.path / MANIFEST, self.manifest)


SWEEP_FORMAT = "cotscope.sweep"


def sweep_config_hash(config: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


class OldSweepTable:
    """Create or resume an append-only tidy CSV table bound to one configuration.

    Args:
        path: the ``.csv`` file.
        config: everything that determines the rows' values (JSON-able). Reopening with a different
            config raises :class:`SweepTableError` unless ``overwrite=True``.
        schema: ``{column: type}`` with types from ``TYPES``; the column order is the CSV order.
        key: columns that identify a row (a finished row is never recomputed).
    """

    def __init__(
        self,
        path: str | Path,
        config: Mapping[str, Any],
        schema: Mapping[str, str],
        key: Sequence[str],
        *,
        overwrite: bool = False,
    ) -> None:
        self.path = Path(path)
        self.config = json.loads(json.dumps(dict(config), default=str))
        self.schema = dict(schema)
        bad = {c: t for c, t in self.schema.items() if t not in TYPES}
        if bad:
            raise SweepTableError(f"unknown column types {bad}; use {TYPES}")
        self.key = tuple(key)
        missing = [k for k in self.key if k not in self.schema]
        if missing:
            raise SweepTableError(f"key columns {missing} are not in the schema")
        self.hash = sweep_config_hash({"config": self.config, "schema": self.schema, "key": self.key})
        self.meta_file = meta_path(self.path)
        exists = self.path.exists() or self.meta_file.exists()
        if exists and not overwrite:
            self._check_existing()
            self._repair_tail()
        else:
            self._create()

    # -- lifecycle ---------------------------------------------------------------------------
    def _create(self) -> None:
        meta = {
            "format": SWEEP_FORMAT,
            "format_version": 1,
            "config_hash": self.hash,
            "columns": self.schema,
            "key": list(self.key),
            "config": self.config,
        }
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(list(self.schema))
        with atomic_path(self.path) as tmp:
            tmp.write_text(buf.getvalue())
        write_json_atomic(self.meta_file, meta)

    def _check_existing(self) -> None:
        fix = f"Use a new file (e.g. {free_name(self.path)}) or pass overwrite=True to replace this table."
        if not self.meta_file.is_file():
            raise SweepTableError(
                f"{self.path} exists but has no {self.meta_file.name}; it was not written by "
                f"cotscope's SweepTable, so rows cannot be trusted to match. {fix}"
            )
        try:
            meta = json.loads(self.meta_file.read_text())
        except json.JSONDecodeError as e:
            raise SweepTableError(f"{self.meta_file} is corrupt ({e}). {fix}") from None
        if meta.get("format") != SWEEP_FORMAT:
            raise SweepTableError(f"{self.meta_file} is not a cotscope sweep table. {fix}")
        if int(meta.get("format_version", 0)) > 1:
            raise SweepTableError(
                f"{self.path} has format version {meta.get('format_version')}, newer than this "
                f"cotscope ({FORMAT_VERSION}); upgrade cotscope. {fix}"
            )
        if meta.get("config_hash") != self.hash:
            diff = _diff_keys(meta.get("config", {}), self.config)
            if meta.get("columns") != self.schema:
                diff.append("<column schema>")
            if list(meta.get("key", [])) != list(self.key):
                diff.append("<key columns>")
            raise SweepTableError(
                f"{self.path} was written by a different configuration (differs in: {', '.join(diff) or 'hash'}); "
                f"refusing to mix rows from two configurations. {fix}"
            )
        if not self.path.is_file():
            with atomic_path(self.path) as tmp:
                buf = io.StringIO()
                csv.writer(buf, lineterminator="\n").writerow(list(self.schema))
                tmp.write_text(buf.getvalue())

    def _repair_tail(self) -> None:
        """Cut a torn last line (an interrupted append) and check the header."""
        data = self.path.read_bytes()
        if not data:
            raise SweepTableError(
                f"{self.path} is empty (no header); delete it and its .meta.json, or use {free_name(self.path)}"
            )
        if not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            with open(self.path, "r+b") as fh:
                fh.truncate(cut)
                fh.flush()
                os.fsync(fh.fileno())
        with open(self.path, newline="") as fh:
            header = next(csv.reader(fh), None)
        if header != list(self.schema):
            raise SweepTableError(
                f"{self.path}: header {header} does not match the schema {list(self.schema)}; "
                f"use {free_name(self.path)}"
            )

    # -- rows --------------------------------------------------------------------------------
    def rows(self) -> list[dict[str, Any]]:
        """All complete rows, typed."""
        return read_table(self.path, self.schema)

    def done_keys(self) -> set[tuple]:
        """Keys of the rows already in the table."""
        return {tuple(r[k] for k in self.key) for r in self.rows()}

    def append(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Append rows in one write, then flush and fsync. Returns the number written."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        n = 0
        for row in rows:
            extra = set(row) - set(self.schema)
            if extra:
                raise SweepTableError(f"row has columns not in the schema: {sorted(extra)}")
            w.writerow([_encode(row.get(c), t, c) for c, t in self.schema.items()])
            n += 1
        if n:
            with open(self.path, "a", newline="") as fh:
                fh.write(buf.getvalue())
                fh.flush()
                os.fsync(fh.fileno())
        return n
