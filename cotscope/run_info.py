"""What a run directory holds, read for the reports: its drawn figures and the provenance of every artifact.

Everything here reads stored files only (headers, manifests, sidecars); nothing loads a model or a tensor.

>>> import tempfile
>>> info = collect(tempfile.mkdtemp())
>>> info.figures, info.directions, info.stores
([], [], [])
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

from cotscope.figures.common import META_SUFFIX, PLOTLY_SUFFIX
from cotscope.figures.inputs import LayerAnalysis, direction_header, glob_run, layer_analyses, read_json, sweep_tables

log = logging.getLogger(__name__)

SECTIONS = {  # report sections of the figures, in reading order
    "llm": "Per-layer analyses: CoT vs direct",
    "crossmodel": "LLM ↔ VLM: a shared CoT direction?",
    "intervention": "Injecting the direction",
    "attention": "Attention shift during reasoning",
    "prior": "Parameter space: the reasoning prior",
    "reconstruction": "Vision latents in the residual stream",
    "other": "Other figures",
}
FIGURE_ORDER = (
    "probe_accuracy",
    "spectrum",
    "pca_scatter",
    "crossmodel_cosine",
    "dispersion_bars",
    "injection_layers",
    "injection_strength",
    "injection_controls",
    "length_vs_accuracy",
    "attention_ratio_focus",
    "attention_layer_step",
    "selected_patches",
    "prior_norms",
    "prior_modules",
    "prior_spectrum",
    "drift_cosine",
    "reconstruction",
    "patch_similarity",
)


@dataclasses.dataclass
class Figure:
    """One drawn figure of the run: its files (relative to the run) and what it was drawn from."""

    name: str
    png: Path
    title: str
    description: str = ""
    section: str = "other"
    figure: str = ""
    instance: str = ""
    sources: list[str] = dataclasses.field(default_factory=list)
    plotly: Path | None = None
    html: Path | None = None
    pdf: Path | None = None

    def sort_key(self) -> tuple:
        sec = list(SECTIONS).index(self.section) if self.section in SECTIONS else len(SECTIONS)
        fig = FIGURE_ORDER.index(self.figure) if self.figure in FIGURE_ORDER else len(FIGURE_ORDER)
        return sec, self.instance, fig, self.name


@dataclasses.dataclass
class Artifact:
    """One stored artifact and its provenance (``meta``: the fields worth showing)."""

    kind: str
    path: str
    meta: dict[str, Any]


@dataclasses.dataclass
class RunInfo:
    run_dir: Path
    figures: list[Figure]
    directions: list[Artifact]
    stores: list[Artifact]
    tables: list[Artifact]
    exports: list[Artifact]
    others: list[Artifact]
    analyses: list[LayerAnalysis]

    def models(self) -> list[dict[str, str]]:
        """Every model the artifacts name, with its revision and where it appears."""
        seen: dict[tuple[str, str], set[str]] = {}

        def add(model_id: Any, revision: Any, where: str) -> None:
            if model_id and model_id != "unknown":
                seen.setdefault((str(model_id), str(revision or "unknown")), set()).add(where)

        for a in self.directions + self.exports:
            add(a.meta.get("model_id"), a.meta.get("model_revision"), a.path)
        for a in self.stores:
            add(a.meta.get("model_id"), a.meta.get("revision"), a.path)
        for a in self.tables:
            for side in ("direction", "target"):
                add(a.meta.get(f"{side}_model"), a.meta.get(f"{side}_revision"), a.path)
        for a in self.others:  # the prior's two checkpoints: folder name, header hash
            for side in ("reason", "vl"):
                s = a.meta.get(side)
                if isinstance(s, dict) and s.get("path"):
                    h = s.get("shard_header_sha256") or "?"
                    h = ", ".join(str(v)[:12] for v in h.values()) if isinstance(h, dict) else str(h)[:12]
                    add(Path(s["path"]).name, f"safetensors header sha256 {h}", a.path)
        known = {m for (m, r) in seen if r != "unknown"}
        for m, r in [k for k in seen if k[1] == "unknown" and k[0] in known]:  # one row per model when any
            where = seen.pop((m, r))  # artifact knows its revision
            for k in seen:
                if k[0] == m:
                    seen[k] |= where
        return [{"model_id": m, "revision": r, "seen_in": ", ".join(sorted(w))} for (m, r), w in sorted(seen.items())]

    def libraries(self) -> dict[str, set[str]]:
        """Library versions recorded by the artifacts: name → versions seen."""
        out: dict[str, set[str]] = {}
        for a in self.directions + self.stores + self.others:
            for k, v in (a.meta.get("library") or {}).items():
                out.setdefault(k, set()).add(str(v))
        return out


def rel(run_dir: Path, p: Path) -> str:
    try:
        return str(Path(p).resolve().relative_to(run_dir.resolve()))
    except ValueError:
        return str(p)


def figures(run_dir: str | Path) -> list[Figure]:
    """The figures drawn into ``RUN/figures`` (one per PNG), with their ``.meta.json`` when present."""
    run_dir = Path(run_dir)
    out = []
    for png in sorted((run_dir / "figures").glob("*.png")):
        stem = png.stem
        meta = read_json(png.with_name(stem + META_SUFFIX)) or {}
        side = {ext: png.with_name(stem + ext) for ext in (PLOTLY_SUFFIX, ".html", ".pdf")}
        out.append(
            Figure(
                name=stem,
                png=png,
                title=meta.get("title") or stem.replace("_", " "),
                description=meta.get("description", ""),
                section=meta.get("section") or "other",
                figure=meta.get("figure", stem),
                instance=meta.get("instance", ""),
                sources=list(meta.get("sources", [])),
                plotly=side[PLOTLY_SUFFIX] if side[PLOTLY_SUFFIX].is_file() else None,
                html=side[".html"] if side[".html"].is_file() else None,
                pdf=side[".pdf"] if side[".pdf"].is_file() else None,
            )
        )
    return sorted(out, key=Figure.sort_key)


def _short(v: Any, n: int = 8) -> Any:
    """Long lists and dicts shortened for display (``[first, …, last] (k items)``)."""
    if isinstance(v, list) and len(v) > n:
        return f"{', '.join(map(str, v[:3]))}, …, {v[-1]} ({len(v)} items)"
    if isinstance(v, dict) and len(v) > n:
        return f"{len(v)} entries"
    return v


def _direction(run_dir: Path, p: Path, meta: dict[str, Any]) -> Artifact:
    keep = (
        "model_id",
        "model_revision",
        "model_type",
        "hidden_size",
        "n_layers",
        "layer_convention",
        "token_rule",
        "pairing",
        "method",
        "normalisation",
        "sign",
        "filter",
        "stimulus_hash",
        "n_pairs",
        "created",
        "format_version",
    )
    m = {k: meta[k] for k in keep if k in meta}
    try:
        from safetensors import safe_open

        with safe_open(str(p), framework="numpy") as fh:
            layers = sorted(int(k.split(".", 1)[1]) for k in fh.keys() if k.startswith("direction."))
        m["layers"] = f"{layers[0]}..{layers[-1]} ({len(layers)})" if layers else "none"
    except Exception as e:  # a header we could read but tensors we cannot list: still show the provenance
        log.debug("cannot list %s: %s", p, e)
    for k in ("extra", "history"):
        if meta.get(k):
            m[k] = {kk: _short(vv) for kk, vv in meta[k].items()} if isinstance(meta[k], dict) else _short(meta[k])
    m["library"] = meta.get("library") or meta.get("libraries") or {}
    return Artifact("direction", rel(run_dir, p), m)


def _safetensors_other(run_dir: Path, p: Path) -> Artifact | None:
    try:
        from safetensors import safe_open

        with safe_open(str(p), framework="numpy") as fh:
            header = fh.metadata() or {}
    except Exception as e:
        log.debug("not safetensors: %s (%s)", p, e)
        return None
    fmt = header.get("format", "")
    if not fmt.startswith("cotscope."):
        return None
    meta: dict[str, Any] = {"format": fmt, "format_version": header.get("format_version")}
    try:
        prov = json.loads(header.get("cotscope", "{}"))
    except ValueError:
        prov = {}
    for k, v in prov.items():
        if k != "tensors":
            meta[k] = {kk: _short(vv) for kk, vv in v.items()} if isinstance(v, dict) and k != "library" else _short(v)
    if "tensors" in prov:
        meta["n_tensors"] = len(prov["tensors"])
    return Artifact(fmt.removeprefix("cotscope."), rel(run_dir, p), meta)


def _manifest(run_dir: Path, p: Path, man: dict[str, Any]) -> Artifact:
    model = man.get("model") or {}
    m: dict[str, Any] = {
        "format": f"{man.get('format')} v{man.get('format_version')}",
        "model_id": model.get("model_id"),
        "revision": model.get("revision"),
        "model_type": model.get("model_type"),
        "n_layers": model.get("n_layers"),
        "hidden_size": model.get("hidden_size"),
    }
    for k in (
        "n_items",
        "layers",
        "positions",
        "pairings",
        "stimulus_hash",
        "config_hash",
        "complete",
        "heads",
        "has_images",
        "batch_size",
    ):
        if k in man:
            m[k] = _short(man[k])
    if "traces" in man:
        m["n_traces"] = len(man["traces"])
    if "shards" in man:
        m["n_shards"] = len(man["shards"])
    extra = man.get("extra") or {}
    m["library"] = extra.get("library") or man.get("library") or {}
    return Artifact(str(man.get("format", "")).removeprefix("cotscope."), rel(run_dir, p.parent), m)


def _table(run_dir: Path, csv: Path) -> Artifact:
    meta = read_json(csv.with_name(csv.name + ".meta.json")) or {}
    cfg = meta.get("config") or {}
    n_rows = max(0, sum(1 for _ in open(csv, encoding="utf-8")) - 1)
    m: dict[str, Any] = {
        "format": f"{meta.get('format')} v{meta.get('format_version')}",
        "rows": n_rows,
        "config_hash": meta.get("config_hash"),
    }
    for side in ("direction", "target"):
        s = cfg.get(side) or {}
        m[f"{side}_model"] = s.get("model_id")
        m[f"{side}_revision"] = s.get("revision") or s.get("model_revision")
    for k, v in cfg.items():
        if k not in ("direction", "target"):
            m[k] = _short(v)
    return Artifact("sweep table", rel(run_dir, csv), m)


def _export(run_dir: Path, p: Path) -> Artifact | None:
    meta: dict[str, Any] = {"format": p.suffix.lstrip("."), "bytes": p.stat().st_size}
    prov: dict[str, Any] = {}
    if p.suffix == ".gguf":
        try:
            from cotscope.analyses.export.gguf_cv import KEY_PROVENANCE, read_gguf_cv

            vectors, strings = read_gguf_cv(p)
            meta["layers (llama.cpp)"] = f"{min(vectors)}..{max(vectors)} ({len(vectors)})"
            prov = json.loads(strings.get(KEY_PROVENANCE, "{}"))
        except Exception as e:  # a foreign or broken GGUF: list it without provenance
            log.debug("cannot read %s: %s", p, e)
    else:
        side = read_json(p.with_name(p.name + ".json"))
        if isinstance(side, dict):
            prov = side.get("meta") or side
    for k in ("model_id", "model_revision", "method", "token_rule", "normalisation", "n_layers"):
        if k in prov:
            meta[k] = prov[k]
    return Artifact("export", rel(run_dir, p), meta)


def collect(run_dir: str | Path) -> RunInfo:
    """Read the provenance of every artifact in ``run_dir`` (direction files, stores, sweep tables, exports,
    other cotscope artifacts) and list its figures."""
    run_dir = Path(run_dir)
    directions, others, stores, tables, exports = [], [], [], [], []
    for p in glob_run(run_dir, ("*.safetensors", "*/*.safetensors", "*/*/*.safetensors")):
        if p.name.startswith("shard-") or p.parent.name == "exports":
            continue
        meta = direction_header(p)
        if meta is not None:
            directions.append(_direction(run_dir, p, meta))
        elif (a := _safetensors_other(run_dir, p)) is not None:
            others.append(a)
    for p in glob_run(run_dir, ("*/manifest.json", "*/*/manifest.json", "*/*/*/manifest.json")):
        man = read_json(p)
        if isinstance(man, dict) and str(man.get("format", "")).startswith("cotscope."):
            stores.append(_manifest(run_dir, p, man))
    for group in sweep_tables(run_dir).values():
        tables += [_table(run_dir, c) for c in group]
    for p in glob_run(run_dir, ("exports/*", "*/exports/*")):
        if p.suffix in (".gguf", ".npz", ".safetensors") and (a := _export(run_dir, p)) is not None:
            exports.append(a)
    return RunInfo(run_dir, figures(run_dir), directions, stores, tables, exports, others, layer_analyses(run_dir))
