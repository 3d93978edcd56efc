"""Find a run's stored results wherever the CLI, the API, recipes or the demo wrote them.

Figures draw from files, not from the demo's exact layout. A run directory may hold, e.g.::

    analysis/<name>.json  directions/<name>_<method>.safetensors  stores/<name>/      (demo, API, stages)
    <dir>/analysis.json   <dir>/<method>.safetensors                                  (``cotscope analyse --out <dir>``)
    <dir>/<table>.csv + <table>.csv.meta.json                                          (sweep tables, anywhere)

Each finder recognises its files by their content (format names and keys), so a file of another kind under
the same pattern is ignored, not misdrawn.

>>> import tempfile, json, pathlib
>>> run = pathlib.Path(tempfile.mkdtemp())
>>> (run / "mine").mkdir()
>>> _ = (run / "mine" / "analysis.json").write_text(json.dumps(
...     {"position": "last", "best_layer": 1, "layers": {"1": {"probe": {"test_accuracy": 1.0}}}}))
>>> [(a.name, a.path.name) for a in layer_analyses(run)]
[('mine', 'analysis.json')]
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SKIP_DIRS = frozenset({"figures", "__pycache__"})
LAYER_ANALYSIS_INPUTS = ("analysis/*.json", "*/analysis/*.json", "analysis.json", "*/analysis.json")
ATTENTION_INPUTS = ("analysis/*.json", "*/analysis/*.json", "attention_shift.json", "*/attention_shift.json")
CROSSMODEL_INPUTS = ("analysis/crossmodel_*.json", "*/analysis/crossmodel_*.json", "*/crossmodel_*.json")
SWEEP_INPUTS = ("*.csv.meta.json", "*/*.csv.meta.json", "*/*/*.csv.meta.json")
SWEEP_COLUMNS = frozenset({"cell_id", "control", "layer", "lam", "prompt_id", "gold_logprob", "correct", "n_tokens"})


def glob_run(run_dir: str | Path, patterns: Iterable[str]) -> list[Path]:
    """Files under ``run_dir`` matching any of ``patterns`` (relative globs), sorted, without duplicates;
    ``figures/`` and hidden folders are left out."""
    run_dir = Path(run_dir)
    seen: dict[Path, Path] = {}
    for pat in patterns:
        for p in run_dir.glob(pat):
            parts = p.relative_to(run_dir).parts
            if any(x in SKIP_DIRS or x.startswith(".") for x in parts[:-1]) or p.name.startswith("."):
                continue
            if p.is_file():
                seen.setdefault(p.resolve(), p)
    return sorted(seen.values())


def slug(text: str | Path) -> str:
    """A file-name-safe instance key: ``"sub/dir name"`` → ``"sub_dir_name"``."""
    s = re.sub(r"[^A-Za-z0-9.-]+", "_", str(text)).strip("_.")
    return s or "run"


def folder_key(run_dir: str | Path, path: str | Path) -> str:
    """The folder of ``path`` relative to the run, as an instance key (``"run"`` for the run directory itself)."""
    rel = Path(path).resolve().relative_to(Path(run_dir).resolve()).parent
    return "run" if str(rel) == "." else slug(rel)


def read_json(path: str | Path) -> Any:
    """The JSON content of ``path``, or ``None`` when it is unreadable (sniffing must not raise)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        log.debug("not JSON: %s (%s)", path, e)
        return None


def direction_header(path: str | Path) -> dict[str, Any] | None:
    """The provenance a cotscope direction file carries in its safetensors header (tensors are not read);
    ``None`` when ``path`` is not a readable direction file."""
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as fh:
            header = fh.metadata() or {}
        if header.get("format") != "cotscope.direction":
            return None
        meta = json.loads(header["cotscope"])
        meta["format_version"] = header.get("format_version")
        return meta
    except Exception as e:  # safetensors raises several types for foreign or truncated files
        log.debug("not a direction file: %s (%s)", path, e)
        return None


def _existing(cands: Iterable[Path | None], ok: Callable[[Path], bool] = Path.is_file) -> Path | None:
    for c in cands:
        if c is not None and ok(c):
            return c
    return None


def _stored_path(run_dir: Path, stored: Any, anchor: str) -> list[Path]:
    """Candidates for a path stored in a result: as written (relative to the cwd of the run), and its tail from
    the ``anchor`` folder on, under this run directory (the run may have moved since)."""
    if not stored:
        return []
    p = Path(str(stored))
    out = [p]
    if anchor in p.parts:
        out.append(run_dir.joinpath(*p.parts[p.parts.index(anchor) :]))
    return out


def _is_store(p: Path) -> bool:
    return (p / "manifest.json").is_file()


@dataclasses.dataclass
class LayerAnalysis:
    """One stored per-layer analysis (:func:`cotscope.analyses.layer_sweep.analyse_store` output as JSON)."""

    name: str
    path: Path
    data: dict[str, Any]
    run_dir: Path

    def direction_file(self, method: str = "mean_diff") -> Path | None:
        """The direction file this analysis wrote for ``method``, wherever the writer put it."""
        stored = (self.data.get("directions") or {}).get(method)
        stem = self.path.stem
        return _existing(
            [
                *_stored_path(self.run_dir, stored, "directions"),
                self.path.parent.parent / "directions" / f"{stem}_{method}.safetensors",  # stages, API
                self.path.parent / f"{method}.safetensors",  # cotscope analyse
                self.path.parent / "directions" / f"{stem}_{method}.safetensors",
            ]
        )

    def direction_meta(self) -> dict[str, Any]:
        for method in ("mean_diff", "lat"):
            f = self.direction_file(method)
            meta = direction_header(f) if f else None
            if meta:
                return meta
        return {}

    def store_dir(self) -> Path | None:
        """The activation store the analysis read (stored path, direction provenance, or ``stores/<name>``)."""
        extra = self.direction_meta().get("extra") or {}
        return _existing(
            [
                *_stored_path(self.run_dir, self.data.get("store"), "stores"),
                *_stored_path(self.run_dir, extra.get("store"), "stores"),
                self.run_dir / "stores" / self.path.stem,
            ],
            ok=_is_store,
        )

    @property
    def model_id(self) -> str:
        if self.data.get("model_id"):
            return str(self.data["model_id"])
        meta = self.direction_meta()
        if meta.get("model_id") and meta["model_id"] != "unknown":
            return str(meta["model_id"])
        store = self.store_dir()
        man = read_json(store / "manifest.json") if store else None
        return str(((man or {}).get("model") or {}).get("model_id") or "model")

    @property
    def model_short(self) -> str:
        return self.model_id.split(" (")[0].rstrip("/").split("/")[-1]


def is_layer_analysis(d: Any) -> bool:
    layers = d.get("layers") if isinstance(d, dict) else None
    return (
        isinstance(layers, dict)
        and bool(layers)
        and "best_layer" in d
        and "position" in d
        and all(isinstance(v, dict) and "probe" in v for v in layers.values())
    )


def _analysis_name(run_dir: Path, path: Path) -> str:
    rel = path.resolve().relative_to(run_dir.resolve())
    if path.name == "analysis.json":
        return "analysis" if len(rel.parts) == 1 else slug(rel.parent)
    if len(rel.parts) == 2:  # analysis/<name>.json
        return slug(path.stem)
    return slug(Path(*rel.parts[:-2]) / path.stem)  # <dir>/analysis/<name>.json


def _unique(names: Sequence[str]) -> list[str]:
    out, seen = [], {}
    for n in names:
        k = seen.get(n, 0)
        seen[n] = k + 1
        out.append(n if k == 0 else f"{n}-{k + 1}")
    return out


def layer_analyses(run_dir: str | Path) -> list[LayerAnalysis]:
    """Every per-layer LLM/VLM analysis of the run: ``analysis/<name>.json`` (name ``<name>``) and
    ``<dir>/analysis.json`` (name ``<dir>``), recognised by their keys."""
    run_dir = Path(run_dir)
    found = [(p, d) for p in glob_run(run_dir, LAYER_ANALYSIS_INPUTS) if is_layer_analysis(d := read_json(p))]
    names = _unique([_analysis_name(run_dir, p) for p, _ in found])
    return [LayerAnalysis(n, p, d, run_dir) for n, (p, d) in zip(names, found)]


def is_attention_analysis(d: Any) -> bool:
    return isinstance(d, dict) and isinstance(d.get("aggregate"), dict) and "traces" in d


def attention_analyses(run_dir: str | Path) -> list[tuple[str, Path, dict[str, Any]]]:
    """``(key, path, data)`` per attention-shift analysis; the demo's ``analysis/attention_shift.json`` has key
    ``attention_shift``."""
    run_dir = Path(run_dir)
    found = [(p, d) for p in glob_run(run_dir, ATTENTION_INPUTS) if is_attention_analysis(d := read_json(p))]
    keys = _unique(
        [
            _analysis_name(run_dir, p) if p.parent.name == "analysis" else slug(Path(folder_key(run_dir, p)) / p.stem)
            for p, _ in found
        ]
    )
    return [(k, p, d) for k, (p, d) in zip(keys, found)]


def is_crossmodel(d: Any) -> bool:
    L = d.get("layers") if isinstance(d, dict) else None
    return isinstance(L, list) and bool(L) and isinstance(L[0], dict) and "cutoffs" in L[0]


def crossmodel_groups(run_dir: str | Path) -> dict[str, dict[str, tuple[Path, dict[str, Any]]]]:
    """Cross-model analyses grouped by folder: ``{key: {condition: (path, data)}}``; the demo's
    ``analysis/crossmodel_{text,image}.json`` are group ``run``."""
    run_dir = Path(run_dir)
    groups: dict[str, dict[str, tuple[Path, dict[str, Any]]]] = {}
    for p in glob_run(run_dir, CROSSMODEL_INPUTS):
        d = read_json(p)
        if not is_crossmodel(d):
            continue
        folder = p.parent.parent if p.parent.name == "analysis" else p.parent
        key = "run" if folder.resolve() == run_dir.resolve() else slug(folder.resolve().relative_to(run_dir.resolve()))
        groups.setdefault(key, {})[p.stem.removeprefix("crossmodel_")] = (p, d)
    order = {"text": 0, "image": 1}
    return {k: dict(sorted(v.items(), key=lambda kv: (order.get(kv[0], 2), kv[0]))) for k, v in sorted(groups.items())}


def is_sweep_meta(d: Any) -> bool:
    return isinstance(d, dict) and d.get("format") == "cotscope.sweep" and SWEEP_COLUMNS <= set(d.get("columns") or {})


def sweep_tables(run_dir: str | Path) -> dict[str, list[Path]]:
    """Injection sweep tables (``<table>.csv`` with a ``cotscope.sweep`` sidecar and the sweep columns), grouped
    by folder: ``{key: [csv, …]}``; the demo's ``intervention/sweep_*.csv`` are group ``intervention``."""
    run_dir = Path(run_dir)
    groups: dict[str, list[Path]] = {}
    for meta in glob_run(run_dir, SWEEP_INPUTS):
        csv = meta.with_name(meta.name[: -len(".meta.json")])
        if csv.is_file() and is_sweep_meta(read_json(meta)):
            groups.setdefault(folder_key(run_dir, csv), []).append(csv)
    return {k: sorted(v) for k, v in sorted(groups.items())}
