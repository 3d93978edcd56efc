"""Tidy sweep and evaluation tables (CSV) written incrementally through the resumable-writer protocol.

A :class:`SweepTable` is ``<name>.csv`` plus ``<name>.csv.meta.json``. The sidecar is the protocol's header:
format, column schema, key columns and the full configuration with its hash. The CSV is the unit log: rows
are appended one batch at a time in a single write followed by ``fsync``. After an interruption the table
is reopened with the same configuration: a torn last line is cut off, :meth:`SweepTable.done_keys` lists the
finished rows, and nothing finished is computed again. A table written by a *different* configuration is
refused, and the error names the differing keys and a free file to use instead. One process writes a
table at a time (``<name>.csv.lock``, see :mod:`analyses.io.lock`); readers (:func:`read_table`) never lock.

>>> t = SweepTable("runs/x/sweep.csv", {"grid": [1, 2]}, SCHEMA, key=("cell_id", "prompt_id"))   # doctest: +SKIP
>>> t.append([{"cell_id": "none", "prompt_id": "p0", ...}])                                     # doctest: +SKIP
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from cotscope.analyses.io.resumable import config_hash, open_output
from cotscope.errors import CotscopeError

FORMAT_NAME = "cotscope.sweep"
FORMAT_VERSION = 1
TYPES = ("str", "int", "float", "bool", "json")


class SweepTableError(CotscopeError):
    """A sweep table that is missing, corrupt, or was written by a different configuration."""


def meta_path(path: str | Path) -> Path:
    p = Path(path)
    return p.with_name(p.name + ".meta.json")


def free_name(path: str | Path) -> Path:
    """The first ``<stem>-2.csv``, ``<stem>-3.csv``, … that does not exist yet."""
    p = Path(path)
    k = 2
    while True:
        cand = p.with_name(f"{p.stem}-{k}{p.suffix}")
        if not cand.exists() and not meta_path(cand).exists():
            return cand
        k += 1


def _encode(value: Any, typ: str, col: str) -> str:
    if value is None:
        return ""
    if typ == "json":
        return json.dumps(value, ensure_ascii=False)
    if typ == "bool":
        return "1" if bool(value) else "0"
    if typ == "float":
        f = float(value)
        return "" if math.isnan(f) else repr(f)
    if typ == "int":
        return str(int(value))
    s = str(value)
    if "\n" in s or "\r" in s:
        raise SweepTableError(f"column {col!r} is 'str' but the value contains a newline; declare it 'json'")
    return s


def _decode(text: str, typ: str) -> Any:
    if text == "":
        return float("nan") if typ == "float" else None
    if typ == "json":
        return json.loads(text)
    if typ == "bool":
        return text == "1"
    if typ == "float":
        return float(text)
    if typ == "int":
        return int(text)
    return text


class SweepTable:
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
        self.hash = config_hash({"config": self.config, "schema": self.schema, "key": self.key})
        self.meta_file = meta_path(self.path)
        fix = f"Use a new file (e.g. {free_name(self.path)}) or pass overwrite=True to replace this table."
        if self.path.exists() and not self.meta_file.is_file() and not overwrite:
            raise SweepTableError(
                f"{self.path} exists but has no {self.meta_file.name}; it was not written by "
                f"cotscope's SweepTable, so rows cannot be trusted to match. {fix}"
            )
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(list(self.schema))
        fresh = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "config_hash": self.hash,
            "columns": self.schema,
            "key": list(self.key),
            "config": self.config,
        }
        self.out = open_output(
            self.path.parent,
            self.meta_file.name,
            self.path.name,
            self.path.name + ".lock",
            fresh=fresh,
            fmt=FORMAT_NAME,
            version=FORMAT_VERSION,
            error=SweepTableError,
            what=str(self.path),
            fix=fix,
            overwrite=overwrite,
            config_of=_comparable,
            log_first_line=buf.getvalue(),
            log_fsync=True,
        )
        if not self.out.created:
            self._check_header()

    # -- lifecycle ---------------------------------------------------------------------------
    def _check_header(self) -> None:
        if self.path.stat().st_size == 0:
            self.close()
            raise SweepTableError(
                f"{self.path} is empty (no header); delete it and its .meta.json, or use {free_name(self.path)}"
            )
        with open(self.path, newline="") as fh:
            header = next(csv.reader(fh), None)
        if header != list(self.schema):
            self.close()
            raise SweepTableError(
                f"{self.path}: header {header} does not match the schema {list(self.schema)}; "
                f"use {free_name(self.path)}"
            )

    def close(self) -> None:
        """Release the writer lock (the table stays resumable)."""
        self.out.close()

    def __enter__(self) -> SweepTable:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

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
            self.out.log.append(buf.getvalue())
        return n


def _comparable(meta: Mapping[str, Any]) -> dict[str, Any]:
    return {**meta.get("config", {}), "<column schema>": meta.get("columns"), "<key columns>": meta.get("key")}


def read_table(path: str | Path, schema: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """Read a sweep table as a list of typed dicts (types from the sidecar unless ``schema`` is given).

    A torn last line (no trailing newline) is ignored.
    """
    path = Path(path)
    if not path.is_file():
        raise SweepTableError(f"no sweep table at {path}; run a sweep first (probes.sweep.run_sweep)")
    if schema is None:
        mf = meta_path(path)
        if not mf.is_file():
            raise SweepTableError(f"{path} has no {mf.name}; cannot type its columns")
        schema = json.loads(mf.read_text())["columns"]
    text = path.read_text()
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None:
        return []
    out = []
    for rec in reader:
        if len(rec) != len(header):
            continue
        out.append({c: _decode(v, schema.get(c, "str")) for c, v in zip(header, rec)})
    return out


def table_config(path: str | Path) -> dict[str, Any]:
    """The configuration a table was written with (from its sidecar)."""
    return json.loads(meta_path(path).read_text())["config"]
