"""Statistics of sweep tables; the tables themselves (:class:`SweepTable`, :func:`read_table`) live in
:mod:`analyses.io.tables` and are re-exported here.

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
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cotscope.analyses.io.atomic import atomic_path
from cotscope.analyses.io.tables import (  # noqa: F401
    FORMAT_NAME,
    FORMAT_VERSION,
    TYPES,
    SweepTable,
    SweepTableError,
    config_hash,
    free_name,
    meta_path,
    read_table,
    table_config,
)


# ----------------------------------------------------------------------------------------- statistics
def _t_quantile(q: float, df: int) -> float:
    try:
        from scipy.stats import t as student_t

        return float(student_t.ppf(q, df))
    except ImportError:  # normal approximation with a small-sample correction
        from statistics import NormalDist

        z = NormalDist().inv_cdf(q)
        return z + (z**3 + z) / (4 * df) if df > 0 else float("inf")


def mean_ci(
    x: Sequence[float], *, method: str = "bootstrap", level: float = 0.95, n_boot: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
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


def cell_means(
    rows: Sequence[Mapping[str, Any]],
    metric: str,
    *,
    cell: str = "cell_id",
    carry: Sequence[str] = ("control", "layer", "lam"),
    **ci_kw: Any,
) -> list[dict[str, Any]]:
    """Mean of ``metric`` per cell with a CI over prompts; ``carry`` columns are copied from the cell's rows."""
    groups: dict[Any, list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r[cell], []).append(r)
    out = []
    for c, rs in groups.items():
        m, lo, hi = mean_ci([_metric(r, metric) for r in rs], **ci_kw)
        rec = {
            cell: c,
            **{k: rs[0].get(k) for k in carry},
            "metric": metric,
            "n": len(rs),
            "mean": m,
            "ci_low": lo,
            "ci_high": hi,
        }
        out.append(rec)
    return out


def paired_gains(
    rows: Sequence[Mapping[str, Any]],
    metric: str,
    *,
    baseline: str = "none",
    cell: str = "cell_id",
    pair_by: Sequence[str] = ("prompt_id", "seed"),
    carry: Sequence[str] = ("control", "layer", "lam"),
    method: str = "bootstrap",
    level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> list[dict[str, Any]]:
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
        raise SweepTableError(
            f"no baseline rows (cell {baseline!r}) with a value for {metric!r}; include the 'none' control in the sweep"
        )
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
        out.append(
            {
                cell: c,
                **{k: rs[0].get(k) for k in carry},
                "metric": metric,
                "n": len(diffs),
                "mean": float(np.mean(vals)) if vals else float("nan"),
                "baseline_mean": float(np.mean(bvals)) if bvals else float("nan"),
                "gain": g,
                "ci_low": lo,
                "ci_high": hi,
                "ci_method": method,
                "level": level,
            }
        )
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
