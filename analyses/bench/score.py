"""Accuracy with a 95% confidence interval, breakdowns and response lengths from benchmark result rows.

Rows are dicts with at least ``correct`` (bool) and optionally ``setting``, ``category``, ``question_type``,
``n_tokens``, ``pred`` (``None`` when nothing could be extracted) and ``pred_source``. The interval is Wilson's
score interval (it stays inside [0, 1] and behaves at 0% or 100%, unlike the normal approximation).

>>> lo, hi = wilson_interval(7, 10)
>>> round(lo, 3), round(hi, 3)
(0.397, 0.892)
>>> s = summarize([{"correct": True, "category": "a"}, {"correct": False, "category": "b"}])
>>> s["accuracy"], s["by"]["category"]["a"]["accuracy"]
(0.5, 1.0)
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

Z95 = 1.959963984540054


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for ``k`` successes out of ``n`` (``(nan, nan)`` for ``n = 0``)."""
    if n <= 0:
        return float("nan"), float("nan")
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, centre - half), min(1.0, centre + half)


def _acc(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    n = len(rows)
    k = sum(bool(r.get("correct")) for r in rows)
    lo, hi = wilson_interval(k, n)
    lens = sorted(float(r["n_tokens"]) for r in rows if r.get("n_tokens") is not None)
    out: dict[str, Any] = {"n": n, "correct": k, "accuracy": k / n if n else float("nan"), "ci_low": lo, "ci_high": hi}
    if lens:
        mid = len(lens) // 2
        out["mean_tokens"] = sum(lens) / len(lens)
        out["median_tokens"] = lens[mid] if len(lens) % 2 else (lens[mid - 1] + lens[mid]) / 2
    if any("pred" in r for r in rows):
        out["no_answer"] = sum(r.get("pred") in (None, "") for r in rows)
    if any("pred_source" in r for r in rows):
        out["judged"] = sum(r.get("pred_source") == "judge" for r in rows)
    return out


def summarize(rows: Iterable[Mapping[str, Any]], by: Sequence[str] = ("category", "question_type")) -> dict[str, Any]:
    """Overall accuracy (Wilson 95% CI), response length, unanswered count, and the same per value of each ``by``
    column (rows without that column are left out of its breakdown)."""
    rows = list(rows)
    out = _acc(rows)
    out["by"] = {}
    for col in by:
        groups: dict[str, list] = defaultdict(list)
        for r in rows:
            v = r.get(col)
            if v is not None and v == v and str(v) != "":
                groups[str(v)].append(r)
        if groups:
            out["by"][col] = {k: _acc(v) for k, v in sorted(groups.items())}
    return out


def summarize_settings(
    rows: Iterable[Mapping[str, Any]], by: Sequence[str] = ("category", "question_type"), baseline: str | None = None
) -> dict[str, Any]:
    """:func:`summarize` per ``setting`` (e.g. ``base``, ``inject``, ``merge:ties``), plus the paired difference of
    each setting from ``baseline`` on the items both answered (McNemar-style counts and the accuracy gain)."""
    rows = list(rows)
    per: dict[str, list] = defaultdict(list)
    for r in rows:
        per[str(r.get("setting", "base"))].append(r)
    out = {s: summarize(v, by) for s, v in sorted(per.items())}
    if baseline is not None and baseline in per:
        base = {r["item_id"]: bool(r["correct"]) for r in per[baseline]}
        for s, v in per.items():
            if s == baseline:
                continue
            common = [(base[r["item_id"]], bool(r["correct"])) for r in v if r["item_id"] in base]
            if common:
                n = len(common)
                win = sum(1 for b, x in common if x and not b)
                loss = sum(1 for b, x in common if b and not x)
                out[s]["vs_baseline"] = {
                    "baseline": baseline,
                    "n": n,
                    "gain": (win - loss) / n,
                    "wins": win,
                    "losses": loss,
                }
    return out
