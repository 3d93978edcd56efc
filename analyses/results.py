"""Typed results: what the analysis, sweep, attention and prior entry points return.

Each result is a dataclass with the same names the old result dicts used as keys, plus

* ``.to_dict()``   — the JSON-ready dict (what the run files hold; ``json.dumps(res.to_dict())`` works);
* ``.to_pandas()`` — a tidy table (needs pandas; a clear error says how to get it otherwise);
* ``_repr_html_``  — a compact table in Jupyter, and a one-line ``repr`` elsewhere.

``res["key"]`` still works for one release (cotscope 0.2) with a ``DeprecationWarning``: use ``res.key``.

>>> r = SweepResult(table="sweep.csv", rows=8, rows_expected=8, complete=True, batches=2, batches_run=2,
...                 seconds=1.5, cells=["none", "real|L6|lam0.9"])
>>> r.complete, r.to_dict()["rows"]
(True, 8)
>>> r
SweepResult(table='sweep.csv', rows=8, rows_expected=8, complete=True, batches=2, batches_run=2, seconds=1.5, cells=<list of 2>)
>>> import warnings
>>> with warnings.catch_warnings(record=True) as w:
...     warnings.simplefilter("always")
...     old = r["rows"]
>>> old, w[0].category.__name__
(8, 'DeprecationWarning')
"""

from __future__ import annotations

import dataclasses
import functools
import html
import warnings
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import numpy as np

from cotscope.errors import CotscopeError

__all__ = ["ResultError", "ResultMixin", "AnalysisResult", "SweepResult", "AttentionResult", "flatten"]

REMOVAL = "cotscope 0.3"
_PREVIEW_ROWS = 8


class ResultError(CotscopeError):
    """A result cannot do what was asked (no pandas, no such key, no store for directions)."""


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts → one level with dotted keys; only scalars (numbers, strings, bools, None) are kept.

    >>> flatten({"probe": {"test_accuracy": 0.9, "n": 4}, "curve": [1, 2], "name": "x"})
    {'probe.test_accuracy': 0.9, 'probe.n': 4, 'name': 'x'}
    """
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        elif v is None or isinstance(v, (str, bool, int, float, np.integer, np.floating, np.bool_)):
            out[key] = v.item() if isinstance(v, np.generic) else v
    return out


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (Mapping, list, tuple)) or isinstance(v, np.ndarray):
        kind = "dict" if isinstance(v, Mapping) else type(v).__name__
        return f"<{kind} of {len(v)}>"
    return repr(v)


class ResultMixin:
    """``to_dict`` / ``to_pandas`` / ``_repr_html_`` and deprecated ``res["key"]`` access for result dataclasses.

    Subclasses are dataclasses. Fields whose metadata says ``{"private": True}`` (arrays, open stores) are left
    out of :meth:`to_dict`; ``_legacy`` maps old dict keys that were renamed to their attribute names.
    """

    _legacy: ClassVar[dict[str, str]] = {}
    _hints: ClassVar[dict[str, str]] = {}  # old key -> what to use instead, when not just ``res.<key>``

    # ------------------------------------------------------------------ dict form
    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready dict (the keys of the old result dict)."""
        out = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)  # type: ignore[arg-type]
            if not f.metadata.get("private") and f.name != "extra"
        }
        out.update(getattr(self, "extra", None) or {})
        return out

    def _rows(self) -> list[dict[str, Any]]:
        """The tidy rows of :meth:`to_pandas` (one flat dict per row)."""
        return [flatten(self.to_dict())]

    def to_pandas(self) -> Any:
        """A tidy ``pandas.DataFrame`` of this result (see the class docstring for what a row is)."""
        try:
            import pandas as pd
        except ImportError:
            raise ResultError(
                f"{type(self).__name__}.to_pandas() needs pandas, which is not installed: "
                "`pip install pandas`, or use .to_dict() for plain data"
            ) from None
        return pd.DataFrame(self._rows())

    # ------------------------------------------------------------------ display
    def _headline(self) -> dict[str, Any]:
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)  # type: ignore[arg-type]
            if not f.metadata.get("private") and f.repr and f.name != "extra"
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}(" + ", ".join(f"{k}={_short(v)}" for k, v in self._headline().items()) + ")"

    def _repr_html_(self) -> str:
        esc = html.escape
        head = "".join(
            f"<tr><th style='text-align:left'>{esc(k)}</th><td style='text-align:left'>{esc(_short(v))}</td></tr>"
            for k, v in self._headline().items()
        )
        parts = [f"<div><b>{esc(type(self).__name__)}</b>", f"<table>{head}</table>"]
        rows = self._rows()
        if rows:
            cols = list(dict.fromkeys(k for r in rows[:_PREVIEW_ROWS] for k in r))
            th = "".join(f"<th>{esc(c)}</th>" for c in cols)
            body = "".join(
                "<tr>" + "".join(f"<td>{esc(_short(r.get(c, '')))}</td>" for c in cols) + "</tr>"
                for r in rows[:_PREVIEW_ROWS]
            )
            more = f"<p>… {len(rows) - _PREVIEW_ROWS} more rows (.to_pandas())</p>" if len(rows) > _PREVIEW_ROWS else ""
            parts.append(f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>{more}")
        return "".join(parts) + "</div>"

    # ------------------------------------------------------------------ deprecated dict access (one release)
    def _attr_for(self, key: str) -> str:
        name = self._legacy.get(key, key)
        names = {f.name for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        if name in names:
            return name
        raise KeyError(key)

    def _warn(self, how: str, key: Any = None) -> None:
        use = (self._hints.get(key) or f"res.{self._legacy.get(key, key)}") if isinstance(key, str) else "res.to_dict()"
        warnings.warn(
            f"{type(self).__name__}{how} (dict-style access) is deprecated and will be removed in {REMOVAL}; use {use}",
            DeprecationWarning,
            stacklevel=3,
        )

    def __getitem__(self, key: str) -> Any:
        self._warn(f"[{key!r}]", key)
        extra = getattr(self, "extra", None)
        if extra is not None and key in extra:
            return extra[key]
        return getattr(self, self._attr_for(key))

    def __setitem__(self, key: str, value: Any) -> None:
        self._warn(f"[{key!r}] = …", key)
        try:
            setattr(self, self._attr_for(key), value)
        except KeyError:
            extra = getattr(self, "extra", None)
            if extra is None:
                raise
            extra[key] = value

    def __contains__(self, key: object) -> bool:
        self._warn(" `in`")
        return isinstance(key, str) and key in self._compat_dict()

    def get(self, key: str, default: Any = None) -> Any:
        self._warn(".get()", key)
        return self._compat_dict().get(key, default)

    def keys(self) -> Iterable[str]:
        self._warn(".keys()")
        return self._compat_dict().keys()

    def items(self) -> Iterable[tuple[str, Any]]:
        self._warn(".items()")
        return self._compat_dict().items()

    def values(self) -> Iterable[Any]:
        self._warn(".values()")
        return self._compat_dict().values()

    def _compat_dict(self) -> dict[str, Any]:
        """The old dict, private keys included (``_directions`` …)."""
        out = self.to_dict()
        for old, new in self._legacy.items():
            out[old] = getattr(self, new)
        return out


# ---------------------------------------------------------------------------------------------- analysis
@dataclasses.dataclass(repr=False)
class AnalysisResult(ResultMixin):
    """Per-layer CoT analysis of one store (:func:`analyses.layer_sweep.analyse_store`).

    ``layers`` maps each layer to its numbers (probe accuracy, LAT vs mean-difference cosine, dispersion, the
    low-pass energy fraction with its permutation null …); ``layer_order`` lists the layers; ``best_layer`` is the
    one with the best held-out probe accuracy. ``directions`` gives the directions as :class:`DirectionSet`
    objects with provenance (``res.directions["mean_diff"][12]`` is layer 12's vector).
    ``to_pandas()``: one row per layer.
    """

    position: str
    layers: dict[int, dict[str, Any]]
    layer_cosine: list[list[float]]
    layer_order: list[int]
    best_layer: int
    n_pairs: int
    raw_directions: dict[str, dict[int, np.ndarray]] = dataclasses.field(
        default_factory=dict, metadata={"private": True}, repr=False
    )
    store: Any = dataclasses.field(default=None, metadata={"private": True}, repr=False)

    _legacy: ClassVar[dict[str, str]] = {"_directions": "raw_directions"}
    _hints: ClassVar[dict[str, str]] = {"_directions": "res.directions[method] (a DirectionSet) or res.raw_directions"}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], store: Any = None) -> AnalysisResult:
        """From the dict :func:`~analyses.layer_sweep.analyse_store` builds (``_directions`` holds the arrays)."""
        return cls(
            position=d["position"],
            layers=dict(d["layers"]),
            layer_cosine=d["layer_cosine"],
            layer_order=list(d["layer_order"]),
            best_layer=int(d["best_layer"]),
            n_pairs=int(d["n_pairs"]),
            raw_directions=dict(d.get("_directions") or {}),
            store=store,
        )

    @functools.cached_property
    def directions(self) -> dict[str, Any]:
        """``{method: DirectionSet}`` (``mean_diff``, ``lat``) with the store's provenance."""
        from cotscope.analyses.artifacts import DirectionMeta, DirectionSet

        if not self.raw_directions:
            raise ResultError(
                "this result holds no direction vectors (it was read back from JSON); rerun "
                "analyse_store, or load the saved direction files with DirectionSet.load"
            )
        if self.store is not None:
            from cotscope.analyses.layer_sweep import directions_to_sets

            return directions_to_sets(self, self.store)
        return {
            m: DirectionSet(dict(v), DirectionMeta(method=m, token_rule=self.position, n_pairs=self.n_pairs))
            for m, v in self.raw_directions.items()
        }

    def _rows(self) -> list[dict[str, Any]]:
        return [{"layer": int(l), **flatten(self.layers[l])} for l in self.layer_order]

    def to_private_dict(self) -> dict[str, Any]:
        """The old dict including the array-valued ``_directions`` (what ``directions_to_sets`` reads)."""
        return {**self.to_dict(), "_directions": self.raw_directions}


# ---------------------------------------------------------------------------------------------- sweep
@dataclasses.dataclass(repr=False)
class SweepResult(ResultMixin):
    """What :func:`probes.sweep.run_sweep` did: the table it wrote and how far it got.

    The rows themselves are in ``table`` (a tidy CSV, :func:`analyses.sweeps.read_table`); ``to_pandas()``
    reads it (one row per prompt × cell).
    """

    table: str
    rows: int
    rows_expected: int
    complete: bool
    batches: int
    batches_run: int
    seconds: float
    cells: list[str]
    vector_norms: dict[str, dict[int, float]] = dataclasses.field(default_factory=dict, repr=False)
    src_layer: dict[int, int] = dataclasses.field(default_factory=dict, repr=False)
    settings: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)

    def _rows(self) -> list[dict[str, Any]]:
        from pathlib import Path

        from cotscope.analyses.sweeps import read_table

        return read_table(self.table) if Path(self.table).is_file() else []


# ---------------------------------------------------------------------------------------------- attention
@dataclasses.dataclass(repr=False)
class AttentionResult(ResultMixin):
    """Attention-shift analysis of a captured run (:func:`analyses.attention_shift.analyse_run`).

    ``aggregate[condition]`` holds per-step and per-token bands (mean ± s.e.m.) of R, F and the image share,
    pooled slopes and the layer × step image-share map; ``traces`` the per-trace numbers.
    ``to_pandas()``: one row per condition × metric × reasoning step (mean, lo, hi, n).
    """

    conditions: list[str]
    layers: list[int]
    choice: dict[str, Any]
    k: int | None
    band: str
    max_steps: int | None
    aggregate: dict[str, dict[str, Any]]
    traces: list[dict[str, Any]] = dataclasses.field(default_factory=list, repr=False)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)  # keys added later (summary …)

    def _rows(self) -> list[dict[str, Any]]:
        out = []
        for cond in self.conditions:
            a = self.aggregate.get(cond, {})
            for metric, band in a.get("step", {}).items():
                for j, m in enumerate(band.get("mean", [])):
                    out.append(
                        {
                            "condition": cond,
                            "metric": metric,
                            "step": j,
                            "mean": m,
                            "lo": band["lo"][j],
                            "hi": band["hi"][j],
                            "n": band["n"][j],
                        }
                    )
        return out
