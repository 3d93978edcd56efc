"""Tidy sweep tables (CSV) written incrementally, and their statistics.

A :class:`SweepTable` is ``<name>.csv`` plus ``<name>.csv.meta.json``. The sidecar holds the format, the
column schema, the key columns and the full configuration with its hash. Rows are appended one batch at
a time in a single write followed by ``flush`` + ``fsync``. After an interruption the table is reopened
with the same configuration: a torn last line is cut off, :meth:`SweepTable.done_keys` lists the finished
rows, and nothing finished is computed again. A table written by a *different* configuration is refused,
and the error names a free file to use instead.

Statistics (numpy + stdlib):

* :func:`paired_gains` — per cell, the gain of a metric over the baseline cell (no injection), paired by
  prompt, with a bootstrap (default) or t confidence interval over prompts;
* :func:`cell_means` — per-cell means with confidence intervals (e.g. accuracy and length per cell).

>>> t = SweepTable("runs/x/sweep.csv", {"grid": [1, 2]}, SCHEMA, key=("cell_id", "prompt_id"))   # doctest: +SKIP
>>> t.append([{"cell_id": "none", "prompt_id": "p0", ...}])                                     # doctest: +SKIP
>>> paired_gains(read_table("runs/x/sweep.csv"), "gold_logprob")                                # doctest: +SKIP
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from cotscope.errors import CotscopeError
from cotscope.analyses.atomic import atomic_path, write_json_atomic

FORMAT_NAME = "cotscope.sweep"
FORMAT_VERSION = 1
TYPES = ("str", "int", "float", "bool", "json")


class SweepTableError(CotscopeError):
    """A sweep table that is missing, corrupt, or was written by a different configuration."""


def config_hash(config: Mapping[str, Any]) -> str:
    """Stable short hash of a JSON-able configuration."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


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


def _diff_keys(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k, "<missing>"), b.get(k, "<missing>")
        if isinstance(va, Mapping) and isinstance(vb, Mapping):
            out += _diff_keys(va, vb, f"{prefix}{k}.")
        elif json.dumps(va, sort_keys=True, default=str) != json.dumps(vb, sort_keys=True, default=str):
            out.append(prefix + k)
    return out


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

    def __init__(self, path: str | Path, config: Mapping[str, Any], schema: Mapping[str, str],
                 key: Sequence[str], *, overwrite: bool = False) -> None:
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
        exists = self.path.exists() or self.meta_file.exists()
        if exists and not overwrite:
            self._check_existing()
            self._repair_tail()
        else:
            self._create()

    # -- lifecycle ---------------------------------------------------------------------------
    def _create(self) -> None:
        meta = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "config_hash": self.hash,
                "columns": self.schema, "key": list(self.key), "config": self.config}
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(list(self.schema))
        with atomic_path(self.path) as tmp:
            tmp.write_text(buf.getvalue())
        write_json_atomic(self.meta_file, meta)

    def _check_existing(self) -> None:
        fix = (f"Use a new file (e.g. {free_name(self.path)}) or pass overwrite=True to replace this table.")
        if not self.meta_file.is_file():
            raise SweepTableError(f"{self.path} exists but has no {self.meta_file.name}; it was not written by "
                                  f"cotscope's SweepTable, so rows cannot be trusted to match. {fix}")
        try:
            meta = json.loads(self.meta_file.read_text())
        except json.JSONDecodeError as e:
            raise SweepTableError(f"{self.meta_file} is corrupt ({e}). {fix}") from None
        if meta.get("format") != FORMAT_NAME:
            raise SweepTableError(f"{self.meta_file} is not a cotscope sweep table. {fix}")
        if int(meta.get("format_version", 0)) > FORMAT_VERSION:
            raise SweepTableError(f"{self.path} has format version {meta.get('format_version')}, newer than this "
                                  f"cotscope ({FORMAT_VERSION}); upgrade cotscope. {fix}")
        if meta.get("config_hash") != self.hash:
            diff = _diff_keys(meta.get("config", {}), self.config)
            if meta.get("columns") != self.schema:
                diff.append("<column schema>")
            if list(meta.get("key", [])) != list(self.key):
                diff.append("<key columns>")
            raise SweepTableError(
                f"{self.path} was written by a different configuration (differs in: {', '.join(diff) or 'hash'}); "
                f"refusing to mix rows from two configurations. {fix}")
        if not self.path.is_file():
            with atomic_path(self.path) as tmp:
                buf = io.StringIO()
                csv.writer(buf, lineterminator="\n").writerow(list(self.schema))
                tmp.write_text(buf.getvalue())

    def _repair_tail(self) -> None:
        """Cut a torn last line (an interrupted append) and check the header."""
        data = self.path.read_bytes()
        if not data:
            raise SweepTableError(f"{self.path} is empty (no header); delete it and its .meta.json, or use "
                                  f"{free_name(self.path)}")
        if not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            with open(self.path, "r+b") as fh:
                fh.truncate(cut)
                fh.flush()
                os.fsync(fh.fileno())
        with open(self.path, newline="") as fh:
            header = next(csv.reader(fh), None)
        if header != list(self.schema):
            raise SweepTableError(f"{self.path}: header {header} does not match the schema {list(self.schema)}; "
                                  f"use {free_name(self.path)}")

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


# ----------------------------------------------------------------------------------------- statistics
def _t_quantile(q: float, df: int) -> float:
    try:
        from scipy.stats import t as student_t

        return float(student_t.ppf(q, df))
    except ImportError:  # normal approximation with a small-sample correction
        from statistics import NormalDist

        z = NormalDist().inv_cdf(q)
        return z + (z ** 3 + z) / (4 * df) if df > 0 else float("inf")


def mean_ci(x: Sequence[float], *, method: str = "bootstrap", level: float = 0.95, n_boot: int = 2000,
            seed: int = 0) -> tuple[float, float, float]:
    """``(mean, low, high)`` of ``x`` with a percentile-bootstrap or Student-t interval.

    >>> m, lo, hi = mean_ci([1.0, 2.0, 3.0, 4.0], method="t")
    >>> round(m, 2), lo < m < hi
    (2.5, True)
    """
    a = np.asarray([v for v in x if v is not None and not (isinstance(v, float) and math.isnan(v))], dtype=np.float64)
    if a.size == 0:
        return float("nan"), float("nan"), float("nan")
    m = float(a.mean())
    if a.size == 1:
        return m, float("nan"), float("nan")
    alpha = (1 - level) / 2
    if method == "t":
        half = _t_quantile(1 - alpha, a.size - 1) * float(a.std(ddof=1)) / math.sqrt(a.size)
        return m, m - half, m + half
    if method != "bootstrap":
        raise ValueError(f"unknown CI method {method!r}; use 'bootstrap' or 't'")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, a.size, size=(n_boot, a.size))
    boots = a[idx].mean(1)
    return m, float(np.quantile(boots, alpha)), float(np.quantile(boots, 1 - alpha))


def _metric(row: Mapping[str, Any], metric: str) -> float:
    v = row.get(metric)
    if v is None:
        return float("nan")
    return float(v)


def cell_means(rows: Sequence[Mapping[str, Any]], metric: str, *, cell: str = "cell_id",
               carry: Sequence[str] = ("control", "layer", "lam"), **ci_kw: Any) -> list[dict[str, Any]]:
    """Mean of ``metric`` per cell with a CI over prompts; ``carry`` columns are copied from the cell's rows."""
    groups: dict[Any, list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r[cell], []).append(r)
    out = []
    for c, rs in groups.items():
        m, lo, hi = mean_ci([_metric(r, metric) for r in rs], **ci_kw)
        rec = {cell: c, **{k: rs[0].get(k) for k in carry}, "metric": metric, "n": len(rs), "mean": m,
               "ci_low": lo, "ci_high": hi}
        out.append(rec)
    return out


def paired_gains(rows: Sequence[Mapping[str, Any]], metric: str, *, baseline: str = "none", cell: str = "cell_id",
                 pair_by: Sequence[str] = ("prompt_id", "seed"), carry: Sequence[str] = ("control", "layer", "lam"),
                 method: str = "bootstrap", level: float = 0.95, n_boot: int = 2000,
                 seed: int = 0) -> list[dict[str, Any]]:
    """Gain of ``metric`` in every cell over the ``baseline`` cell, paired by prompt.

    For each non-baseline cell: ``gain_p = metric(cell, p) − metric(baseline, p)`` over prompts ``p`` present
    in both; returns mean gain with its CI, the cell and baseline means and ``n`` (number of prompts).
    Rows whose metric is missing (NaN) are skipped.

    >>> rows = [{"cell_id": c, "prompt_id": p, "seed": 0, "x": v} for c, p, v in
    ...         [("none", "a", 0.0), ("none", "b", 1.0), ("L1", "a", 1.0), ("L1", "b", 2.0)]]
    >>> g = paired_gains(rows, "x", carry=(), method="t")[0]
    >>> g["cell_id"], g["gain"], g["n"]
    ('L1', 1.0, 2)
    """
    base: dict[tuple, float] = {}
    cells: dict[Any, list[Mapping[str, Any]]] = {}
    for r in rows:
        k = tuple(r.get(p) for p in pair_by)
        if r[cell] == baseline:
            v = _metric(r, metric)
            if not math.isnan(v):
                base[k] = v
        else:
            cells.setdefault(r[cell], []).append(r)
    if not base:
        raise SweepTableError(f"no baseline rows (cell {baseline!r}) with a value for {metric!r}; include the "
                              "'none' control in the sweep")
    out = []
    for c, rs in cells.items():
        diffs, vals, bvals = [], [], []
        for r in rs:
            k = tuple(r.get(p) for p in pair_by)
            v = _metric(r, metric)
            if k in base and not math.isnan(v):
                diffs.append(v - base[k])
                vals.append(v)
                bvals.append(base[k])
        g, lo, hi = mean_ci(diffs, method=method, level=level, n_boot=n_boot, seed=seed)
        out.append({cell: c, **{k: rs[0].get(k) for k in carry}, "metric": metric, "n": len(diffs),
                    "mean": float(np.mean(vals)) if vals else float("nan"),
                    "baseline_mean": float(np.mean(bvals)) if bvals else float("nan"),
                    "gain": g, "ci_low": lo, "ci_high": hi, "ci_method": method, "level": level})
    return out


def write_stats_csv(path: str | Path, records: Sequence[Mapping[str, Any]]) -> Path:
    """Write statistics records (same keys) to a CSV atomically."""
    path = Path(path)
    cols: list[str] = []
    for r in records:
        cols += [k for k in r if k not in cols]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in records:
        w.writerow({k: ("" if v is None or (isinstance(v, float) and math.isnan(v)) else v) for k, v in r.items()})
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue())
    return path
