"""DRIFT's reasoning prior ``Δ = θ_reason − θ_VL`` between two checkpoints (METHODS.md §6).

Four steps, each usable alone:

1. :class:`Checkpoint` — a directory of safetensors shards (with or without
   ``model.safetensors.index.json``) read tensor by tensor; nothing is loaded up front.
2. :func:`match_checkpoints` — pairs tensors by exact name, then by a mapping for known layouts
   (``model.layers.*`` ↔ ``model.language_model.layers.*`` / ``model.text_model.layers.*`` /
   ``language_model.model.layers.*``, ``lm_head``, embeddings, tied heads). It always returns a
   :class:`MatchReport`; it raises :class:`ModuleMatchError` (with the report in the message) when
   nothing matches, a selected tensor has no partner, or shapes differ — unless explicitly allowed.
   The released DRIFT code skips such tensors silently; here that cannot happen.
3. :func:`compute_prior` — streams the matched pairs (one tensor pair at a time, large tensors in
   row chunks) and accumulates per-tensor/per-layer norms, cosines and the spectrum of Δ's rows along
   the hidden dimension with a permutation null (:mod:`analyses.spectral`). Optionally writes Δ to a
   prior artifact while streaming, so peak memory is bounded by the largest tensor pair.
4. :class:`PriorArtifact` — the reusable prior (safetensors of ``delta.<canonical name>`` tensors,
   JSON provenance in the header); :meth:`PriorArtifact.fit` maps it onto a model's parameter names
   and raises :class:`PriorFitError` if it does not fit.

Names are compared in a *canonical* form: the language-model prefix is stripped, so
``model.text_model.layers.3.mlp.up_proj.weight`` and ``model.layers.3.mlp.up_proj.weight`` are both
``layers.3.mlp.up_proj.weight``; ``embed_tokens.weight``, ``norm.weight`` and ``lm_head.weight`` are
the non-layer names. Presets and user regexes (``re.search``) select language-model tensors by
canonical name; ``"raw:<regex>"`` selects tensors outside the language model (connectors,
projectors) by raw name, paired by exact name. Names containing ``visual``/``vision`` are always
skipped (as in DRIFT).

>>> res = run_prior_analysis("ckpt/smollm2", "ckpt/reference_vlm", "out/prior")   # doctest: +SKIP
>>> res["delta_norm_total"], res["spectral_verdict"]                                # doctest: +SKIP
"""
from __future__ import annotations

import collections
import dataclasses
import datetime as _dt
import hashlib
import json
import re
import struct
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from analyses import spectral

PRIOR_FORMAT = "cotscope.prior"
PRIOR_FORMAT_VERSION = 1
PRIOR_FILENAME = "prior.safetensors"
ANALYSIS_FILENAME = "prior_analysis.json"
SIGN_CONVENTION = "delta = theta_reason - theta_vl"
ZERO_VERDICT = "delta is exactly zero: no spectrum"
NULL_VERDICT = "no frequency structure beyond the permutation null"

# ----------------------------------------------------------------------------------------------
# errors


class PriorError(ValueError):
    """Base class for reasoning-prior errors."""


class CheckpointError(PriorError):
    """A checkpoint directory is missing, empty, corrupt or uses an unsupported dtype."""


class PatternError(PriorError):
    """A module preset or regex matched no tensor."""


class ModuleMatchError(PriorError):
    """The two checkpoints do not pair up; ``.report`` holds the :class:`MatchReport`."""

    def __init__(self, message: str, report: "MatchReport") -> None:
        super().__init__(f"{message}\n{report}")
        self.report = report


class PriorFitError(PriorError):
    """A prior artifact does not fit the model it is applied to."""


# ----------------------------------------------------------------------------------------------
# 1. checkpoints

_NP_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
              "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}
_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives: shard file, dtype tag, shape and byte offsets inside the shard."""

    name: str
    file: Path
    dtype: str
    shape: tuple[int, ...]
    start: int          # absolute byte offset of the data in the file
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start


def _read_header(path: Path) -> tuple[dict, int, str]:
    """Parse a safetensors header without mapping the file: (header dict, data offset, header sha256)."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(8)
            if len(raw) != 8:
                raise ValueError("file shorter than 8 bytes")
            (n,) = struct.unpack("<Q", raw)
            if n > 100_000_000:
                raise ValueError(f"header length {n} is implausible")
            blob = fh.read(n)
            if len(blob) != n:
                raise ValueError("header truncated")
        return json.loads(blob), 8 + n, hashlib.sha256(blob).hexdigest()
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file ({e}); it may be truncated. "
                              "Re-save the checkpoint with save_pretrained.") from None


class Checkpoint:
    """A safetensors checkpoint (directory of shards or a single file), read lazily.

    >>> ck = Checkpoint("path/to/model")                   # doctest: +SKIP
    >>> ck.info("model.layers.0.mlp.up_proj.weight").shape  # doctest: +SKIP
    (1536, 576)
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise CheckpointError(f"checkpoint {self.path} does not exist; pass a directory written by "
                                  "save_pretrained (safetensors shards) or a .safetensors file")
        files = self._shard_files()
        self.tensors: dict[str, TensorInfo] = {}
        self.header_sha256: dict[str, str] = {}
        for f in files:
            header, data_start, digest = _read_header(f)
            self.header_sha256[f.name] = digest
            fsize = f.stat().st_size
            for name, spec in header.items():
                if name == "__metadata__":
                    continue
                if name in self.tensors:
                    raise CheckpointError(f"tensor {name!r} appears in both {self.tensors[name].file.name} and "
                                          f"{f.name}; the checkpoint is inconsistent")
                a, b = spec["data_offsets"]
                info = TensorInfo(name, f, spec["dtype"], tuple(int(s) for s in spec["shape"]), data_start + a,
                                  data_start + b)
                if info.end > fsize:
                    raise CheckpointError(f"{f} is truncated: tensor {name!r} ends at byte {info.end} but the file "
                                          f"has {fsize}")
                self.tensors[name] = info
        if not self.tensors:
            raise CheckpointError(f"checkpoint {self.path} holds no tensors")
        self.config = self._read_config()

    def _shard_files(self) -> list[Path]:
        p = self.path
        if p.is_file():
            return [p]
        index = p / "model.safetensors.index.json"
        if index.is_file():
            try:
                wmap = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise CheckpointError(f"{index} is corrupt ({e}); re-save the checkpoint") from None
            files = sorted({p / f for f in wmap.values()})
            missing = [f.name for f in files if not f.is_file()]
            if missing:
                raise CheckpointError(f"{index} lists shards that are missing: {missing[:5]}; the download or copy "
                                      "is incomplete")
            return files
        files = sorted(p.glob("*.safetensors"))
        if not files:
            raise CheckpointError(f"{p} contains no .safetensors files (found: "
                                  f"{sorted(x.name for x in p.iterdir())[:8]}); convert .bin checkpoints with "
                                  "save_pretrained(safe_serialization=True)")
        return files

    def _read_config(self) -> dict:
        cfg = (self.path if self.path.is_dir() else self.path.parent) / "config.json"
        if cfg.is_file():
            try:
                return json.loads(cfg.read_text())
            except json.JSONDecodeError:
                return {}
        return {}

    # -- config helpers -------------------------------------------------------------------------
    def text_config(self) -> dict:
        """The language model's part of ``config.json`` (``text_config`` for VLMs, else the whole)."""
        c = self.config
        return c.get("text_config") or c

    def hidden_size(self) -> int | None:
        h = self.text_config().get("hidden_size")
        return int(h) if h else None

    def ties_embeddings(self) -> bool:
        """True if the config ties ``lm_head`` to the input embeddings."""
        for c in (self.config, self.text_config()):
            if "tie_word_embeddings" in c:
                return bool(c["tie_word_embeddings"])
        return False

    def model_type(self) -> str:
        return str(self.config.get("model_type", "unknown"))

    def info(self, name: str) -> TensorInfo:
        try:
            return self.tensors[name]
        except KeyError:
            raise CheckpointError(f"tensor {name!r} is not in {self.path}") from None

    # -- reading ----------------------------------------------------------------------------------
    def read(self, name: str, rows: slice | None = None) -> np.ndarray:
        """Read a tensor (or a block of its leading-axis rows) as float32 (float64 stays float64).

        Plain dtypes go through ``safetensors.safe_open``; BF16 (which numpy lacks) is read with
        positioned file reads and widened to float32. The file is opened per call, so no memory map
        outlives the read.
        """
        info = self.info(name)
        if info.dtype not in _ITEMSIZE:
            raise CheckpointError(f"tensor {name!r} has dtype {info.dtype}, which cotscope cannot read without "
                                  "torch; re-save the checkpoint in float32, float16 or bfloat16")
        if info.dtype == "BF16":
            arr = self._read_bf16(info, rows)
        else:
            from safetensors import safe_open

            with safe_open(str(info.file), framework="numpy") as fh:
                sl = fh.get_slice(name)
                arr = sl[rows] if rows is not None and info.shape else sl[:] if info.shape else fh.get_tensor(name)
        arr = np.asarray(arr)
        if arr.dtype != np.float64:
            arr = arr.astype(np.float32, copy=False)
        return arr

    def _read_bf16(self, info: TensorInfo, rows: slice | None) -> np.ndarray:
        shape = info.shape
        row_elems = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        if rows is None or not shape:
            a, b = 0, shape[0] if shape else 1
        else:
            a, b, _ = rows.indices(shape[0])
        n = (b - a) * row_elems
        buf = np.empty(n, dtype=np.uint16)
        with open(info.file, "rb") as fh:
            fh.seek(info.start + a * row_elems * 2)
            got = fh.readinto(memoryview(buf).cast("B"))
        if got != n * 2:
            raise CheckpointError(f"{info.file} is truncated inside tensor {info.name!r}")
        out = (buf.astype(np.uint32) << 16).view(np.float32)
        return out.reshape(((b - a),) + shape[1:] if shape else ())


# ----------------------------------------------------------------------------------------------
# 2. canonical names, module sets, matching

# (regex on the raw name, layout label); the group "rest" is the canonical name.
_LAYOUTS: list[tuple[re.Pattern, str]] = [
    (re.compile(r"^model\.language_model\.(?P<rest>.+)$"), "model.language_model"),
    (re.compile(r"^model\.text_model\.(?P<rest>.+)$"), "model.text_model"),
    (re.compile(r"^language_model\.model\.(?P<rest>.+)$"), "language_model.model"),
    (re.compile(r"^language_model\.(?P<rest>lm_head\..+)$"), "language_model"),
    (re.compile(r"^language_model\.(?P<rest>(?:layers|embed_tokens|norm)\..+)$"), "language_model"),
    (re.compile(r"^text_model\.(?P<rest>.+)$"), "text_model"),
    (re.compile(r"^model\.(?P<rest>(?:layers|embed_tokens|norm)\..+)$"), "model"),
    (re.compile(r"^(?P<rest>lm_head\..+)$"), ""),
    (re.compile(r"^(?P<rest>(?:layers|embed_tokens|norm)\..+)$"), ""),
]
_VISION_WORDS = ("visual", "vision")
_LAYER_RE = re.compile(r"^layers\.(\d+)\.(.+?)(?:\.(?:weight|bias))?$")

PRESETS: dict[str, str] = {
    "attn": r"^layers\.\d+\.self_attn\.[qkvo]_proj\.(weight|bias)$",
    "mlp": r"^layers\.\d+\.mlp\.(gate|up|down)_proj\.(weight|bias)$",
    "norm": r"(^|\.)[a-z_]*norm\.(weight|bias)$",
    "embed": r"^embed_tokens\.weight$",
    "head": r"^lm_head\.weight$",
    "full": r".",
}
DEFAULT_MODULES: tuple[str, ...] = ("attn", "mlp")   # as in the released DRIFT code
RAW_PREFIX = "raw:"     # "raw:<regex>" selects tensors outside the language model by their raw names


def is_vision_name(raw: str) -> bool:
    """DRIFT skips every tensor whose name contains ``visual`` or ``vision``."""
    low = raw.lower()
    return any(w in low for w in _VISION_WORDS)


def canonical_name(raw: str) -> tuple[str, str] | None:
    """``(canonical, layout)`` for a language-model tensor, or ``None`` for anything else.

    >>> canonical_name("model.text_model.layers.2.mlp.up_proj.weight")
    ('layers.2.mlp.up_proj.weight', 'model.text_model')
    >>> canonical_name("model.vision_model.encoder.layers.0.mlp.fc1.weight") is None
    True
    """
    if is_vision_name(raw):
        return None
    for rx, layout in _LAYOUTS:
        m = rx.match(raw)
        if m:
            return m.group("rest"), layout
    return None


def layer_and_module(canonical: str) -> tuple[int | None, str]:
    """``layers.3.mlp.up_proj.weight`` → ``(3, "mlp.up_proj")``; ``embed_tokens.weight`` → ``(None, "embed_tokens")``."""
    m = _LAYER_RE.match(canonical)
    if m:
        return int(m.group(1)), m.group(2)
    return None, re.sub(r"\.(weight|bias)$", "", canonical)


def resolve_modules(modules: str | Sequence[str] | None) -> list[tuple[str, re.Pattern]]:
    """Turn presets and regexes into ``[(label, compiled regex)]``.

    ``modules`` is a preset name (``attn``, ``mlp``, ``norm``, ``embed``, ``head``, ``full``,
    ``default`` = attn+mlp), a ``+``-joined combination (``"attn+norm"``), a regex on canonical
    names, ``"raw:<regex>"`` on raw names of non-LM tensors, or a list of these.
    """
    if modules is None or modules == "default":
        modules = list(DEFAULT_MODULES)
    if isinstance(modules, str):
        modules = modules.split("+") if all(p in PRESETS or p == "default" for p in modules.split("+")) else [modules]
    out: list[tuple[str, re.Pattern]] = []
    for m in modules:
        if m == "default":
            out += resolve_modules(list(DEFAULT_MODULES))
        elif m in PRESETS:
            out.append((m, re.compile(PRESETS[m])))
        else:
            try:
                out.append((m, re.compile(m[len(RAW_PREFIX):] if m.startswith(RAW_PREFIX) else m)))
            except re.error as e:
                raise PatternError(f"module pattern {m!r} is neither a preset ({sorted(PRESETS)}) nor a valid regex "
                                   f"({e})") from None
    if not out:
        raise PatternError("empty module set; pass a preset such as 'attn+mlp' or a regex")
    return out


@dataclasses.dataclass
class Pair:
    """One matched tensor pair."""

    canonical: str
    reason_key: str
    vl_key: str
    shape: tuple[int, ...]
    layer: int | None
    module: str
    method: str            # "exact" or "mapped:<reason layout>-><vl layout>" (+ ",tied" for a tied head)


@dataclasses.dataclass
class MatchReport:
    """What matched between two checkpoints. ``str(report)`` is the printed table."""

    reason_path: str
    vl_path: str
    modules: list[str]
    n_tensors: dict[str, int]
    n_lm: dict[str, int]
    n_vision: dict[str, int]
    n_other: dict[str, int]
    layouts: dict[str, dict[str, int]]
    n_selected: dict[str, int]
    matched_exact: int = 0
    matched_mapped: dict[str, int] = dataclasses.field(default_factory=dict)
    unmatched_reason: list[str] = dataclasses.field(default_factory=list)
    unmatched_vl: list[str] = dataclasses.field(default_factory=list)
    shape_mismatched: list[dict] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def n_matched(self) -> int:
        return self.matched_exact + sum(self.matched_mapped.values())

    @property
    def ok(self) -> bool:
        return self.n_matched > 0 and not (self.unmatched_reason or self.unmatched_vl or self.shape_mismatched)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.update(n_matched=self.n_matched, ok=self.ok)
        return d

    def __str__(self) -> str:
        def lay(side: str) -> str:
            return ", ".join(f"{k or '<bare>'}:{v}" for k, v in self.layouts[side].items()) or "none"

        mapped = ", ".join(f"{k}: {v}" for k, v in self.matched_mapped.items()) or "none"
        lines = [
            "Module match report",
            f"  reason: {self.reason_path}  [LM layouts {lay('reason')}]",
            f"  VL:     {self.vl_path}  [LM layouts {lay('vl')}]",
            f"  module set: {'+'.join(self.modules)}",
            f"  tensors:          reason {self.n_tensors['reason']} (LM {self.n_lm['reason']}, vision "
            f"{self.n_vision['reason']}, other {self.n_other['reason']}) | VL {self.n_tensors['vl']} (LM "
            f"{self.n_lm['vl']}, vision {self.n_vision['vl']}, other {self.n_other['vl']})",
            f"  selected:         reason {self.n_selected['reason']} | VL {self.n_selected['vl']}",
            f"  matched:          {self.n_matched} (exact {self.matched_exact}; mapped {mapped})",
            f"  unmatched:        reason {len(self.unmatched_reason)} | VL {len(self.unmatched_vl)}",
            f"  shape-mismatched: {len(self.shape_mismatched)}",
        ]
        for label, names in (("unmatched in reason", self.unmatched_reason), ("unmatched in VL", self.unmatched_vl)):
            if names:
                more = f" … (+{len(names) - 5})" if len(names) > 5 else ""
                lines.append(f"    {label}: {', '.join(names[:5])}{more}")
        for s in self.shape_mismatched[:5]:
            lines.append(f"    shape {s['canonical']}: reason {tuple(s['reason_shape'])} vs VL {tuple(s['vl_shape'])}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


NON_LM = "non-LM"


def _side_names(ck: Checkpoint) -> tuple[dict[str, tuple[str, str]], dict[str, int]]:
    """name → (raw, layout): LM tensors under canonical names, other non-vision tensors (connectors,
    projectors) under their raw names with layout ``non-LM``; plus counts of vision/other tensors."""
    canon: dict[str, tuple[str, str]] = {}
    counts = {"vision": 0, "other": 0}
    for raw in ck.tensors:
        if is_vision_name(raw):
            counts["vision"] += 1
            continue
        c = canonical_name(raw)
        if c is None:
            counts["other"] += 1
            c = (raw, NON_LM)
        name, layout = c
        if name in canon:
            raise CheckpointError(f"{ck.path}: tensors {canon[name][0]!r} and {raw!r} both map to {name!r}; "
                                  "the checkpoint holds two language models. Split the checkpoint first.")
        canon[name] = (raw, layout)
    return canon, counts


def match_checkpoints(reason: Checkpoint | str | Path, vl: Checkpoint | str | Path,
                      modules: str | Sequence[str] | None = "default", *, allow_unmatched: bool = False,
                      allow_shape_mismatch: bool = False) -> tuple[list[Pair], MatchReport]:
    """Pair the selected tensors of two checkpoints; always returns the report, raises on mismatch.

    Exact raw names are paired first, then canonical names (known LM layouts). A checkpoint that
    ties ``lm_head`` to its embeddings (and stores no ``lm_head``) offers its embedding as the head
    when the other side has a real ``lm_head``; if both tie, the head is the embedding and is not
    counted twice. Raises :class:`PatternError` if a preset/regex selects nothing on either side and
    :class:`ModuleMatchError` if nothing matches, or (unless allowed) a selected tensor has no
    partner or the shapes differ.

    >>> pairs, report = match_checkpoints("smollm2/", "vlm/", "attn+mlp")   # doctest: +SKIP
    >>> print(report)                                                      # doctest: +SKIP
    """
    reason = reason if isinstance(reason, Checkpoint) else Checkpoint(reason)
    vl = vl if isinstance(vl, Checkpoint) else Checkpoint(vl)
    specs = resolve_modules(modules)
    sides = {"reason": reason, "vl": vl}
    canon, counts = {}, {}
    for side, ck in sides.items():
        canon[side], counts[side] = _side_names(ck)
    notes: list[str] = []
    # tied heads
    tied = {s: ck.ties_embeddings() and "lm_head.weight" not in canon[s] and "embed_tokens.weight" in canon[s]
            for s, ck in sides.items()}
    for s, other in (("reason", "vl"), ("vl", "reason")):
        if tied[s] and "lm_head.weight" in canon[other]:
            raw, layout = canon[s]["embed_tokens.weight"]
            canon[s]["lm_head.weight"] = (raw, layout + ",tied")
            notes.append(f"{s} ties lm_head to {raw}; paired with the other side's lm_head")
    if tied["reason"] and tied["vl"]:
        notes.append("both checkpoints tie lm_head to embed_tokens: the head's Δ is the embedding's Δ ('embed')")

    def hit(label: str, rx: re.Pattern, side: str, name: str) -> bool:
        # presets and plain regexes see language-model tensors; "raw:<regex>" sees the other non-vision tensors
        return bool(rx.search(name)) and (canon[side][name][1] == NON_LM) == label.startswith(RAW_PREFIX)

    sel = {s: sorted(n for n in canon[s] if any(hit(l, rx, s, n) for l, rx in specs)) for s in sides}
    for label, rx in specs:
        if not any(hit(label, rx, s, n) for s in sides for n in canon[s]):
            examples = sorted(canon["reason"])[:4] or sorted(canon["vl"])[:4]
            extra = (" (both checkpoints tie lm_head to embed_tokens; use 'embed')"
                     if label == "head" and tied["reason"] and tied["vl"] else "")
            where = ("no non-LM, non-vision tensor (raw names)" if label.startswith(RAW_PREFIX)
                     else "no language-model tensor")
            raise PatternError(f"module pattern {label!r} matched {where} in either checkpoint{extra}. Patterns are "
                               f"matched (re.search) against canonical names such as {examples}; use "
                               f"'{RAW_PREFIX}<regex>' for connector/projector tensors.")
    report = MatchReport(
        reason_path=str(reason.path), vl_path=str(vl.path), modules=[l for l, _ in specs],
        n_tensors={s: len(ck.tensors) for s, ck in sides.items()},
        n_lm={s: sum(1 for v in canon[s].values() if v[1] != NON_LM and not v[1].endswith(",tied")) for s in sides},
        n_vision={s: counts[s]["vision"] for s in sides}, n_other={s: counts[s]["other"] for s in sides},
        layouts={s: dict(collections.Counter(v[1].split(",")[0] for v in canon[s].values() if v[1] != NON_LM))
                 for s in sides},
        n_selected={s: len(sel[s]) for s in sides}, notes=notes)
    pairs: list[Pair] = []
    vl_sel = set(sel["vl"])
    for name in sel["reason"]:
        if name not in vl_sel:
            report.unmatched_reason.append(canon["reason"][name][0])
            continue
        (rk, rl), (vk, vlay) = canon["reason"][name], canon["vl"][name]
        rs, vs = reason.info(rk).shape, vl.info(vk).shape
        if rs != vs:
            report.shape_mismatched.append({"canonical": name, "reason_key": rk, "vl_key": vk,
                                            "reason_shape": list(rs), "vl_shape": list(vs)})
            continue
        if rk == vk:
            method = "exact"
            report.matched_exact += 1
        else:
            key = f"{rl or '<bare>'} -> {vlay or '<bare>'}"
            method = f"mapped:{key}"
            report.matched_mapped[key] = report.matched_mapped.get(key, 0) + 1
        layer, module = layer_and_module(name)
        pairs.append(Pair(name, rk, vk, rs, layer, module, method))
    r_sel = set(sel["reason"])
    report.unmatched_vl = [canon["vl"][n][0] for n in sel["vl"] if n not in r_sel]
    if not pairs:
        why = (f"all {len(report.shape_mismatched)} name-matched tensors have different shapes"
               if report.shape_mismatched else "no selected name is shared")
        raise ModuleMatchError(f"no tensor pairs match between the two checkpoints ({why}): they have different "
                               "architectures or layouts. Check the paths, or pass a regex module set that names "
                               "tensors both sides have.", report)
    if report.shape_mismatched and not allow_shape_mismatch:
        raise ModuleMatchError(f"{len(report.shape_mismatched)} matched tensors have different shapes (different "
                               "architectures or a resized vocabulary). Fix: restrict the module set (e.g. drop "
                               "'embed'/'head'), or pass allow_shape_mismatch=True to skip them (they stay in the "
                               "report).", report)
    if (report.unmatched_reason or report.unmatched_vl) and not allow_unmatched:
        raise ModuleMatchError(f"{len(report.unmatched_reason)} selected reason tensors and {len(report.unmatched_vl)} "
                               "selected VL tensors have no partner (different depth or module names). Fix: restrict "
                               "the module set, or pass allow_unmatched=True to use only the matched pairs.", report)
    pairs.sort(key=lambda p: (p.layer is None, p.layer if p.layer is not None else 0, p.canonical))
    return pairs, report


# ----------------------------------------------------------------------------------------------
# 3. spectrum along the hidden dimension (from a Gram matrix, so it streams and permutes cheaply)

_WRITE_MODULES = ("o_proj", "down_proj", "out_proj", "dense_4h_to_h", "c_proj", "fc2", "wo", "w2")


def hidden_axis(module: str, shape: Sequence[int], hidden: int) -> int | None:
    """Axis of a tensor that runs along the residual stream, or ``None``.

    Linear layers that *read* the residual (q/k/v/gate/up, embeddings, lm_head) have it last; the
    ones that *write* it (o_proj, down_proj) have it first; norm weights are 1-D.
    """
    if len(shape) == 1:
        return 0 if shape[0] == hidden else None
    if len(shape) != 2:
        return None
    if module.split(".")[-1] in _WRITE_MODULES and shape[0] == hidden:
        return 0
    if shape[1] == hidden:
        return 1
    if shape[0] == hidden:
        return 0
    return None


def onesided_weights(d: int) -> np.ndarray:
    """Parseval weights of rfft bins (interior bins stand for two mirrored FFT bins)."""
    w = np.full(spectral.n_bins(d), 2.0)
    w[0] = 1.0
    if d % 2 == 0:
        w[-1] = 1.0
    return w


class GramSpectrum:
    """Energy spectrum of many hidden-dimension vectors, kept as their Gram matrix ``Σ x xᵀ``.

    ``spectrum()`` equals ``Σ_rows spectral.energy_spectrum(x)`` exactly; ``spectrum(perm)`` is the
    same after permuting the coordinates of every vector, computed in O(d²) from circular diagonal
    sums of the permuted Gram matrix (``E_k = Σ_m r_m e^{2πikm/d}``, ``r_m = Σ_i C[p_i, p_{i+m}]``).
    """

    def __init__(self, d: int) -> None:
        self.d = d
        self.C = np.zeros((d, d))
        self.n_vectors = 0
        self._K: np.ndarray | None = None
        self._C32: np.ndarray | None = None

    def add(self, X: np.ndarray) -> None:
        """Add vectors ``X`` of shape ``[n, d]`` (or ``[d]``)."""
        X = np.atleast_2d(np.asarray(X))
        if X.dtype != np.float64:
            X = X.astype(np.float32, copy=False)       # float32 GEMM, float64 accumulator
        self.C += X.T @ X
        self.n_vectors += X.shape[0]
        self._C32 = None

    def add_gram(self, other: "GramSpectrum") -> None:
        self.C += other.C
        self.n_vectors += other.n_vectors
        self._C32 = None

    def spectrum(self, perm: np.ndarray | None = None) -> np.ndarray:
        """Energy per rfft bin (``|rfft|²`` summed over vectors), optionally after permuting coordinates.

        Permuted spectra use a float32 copy of the Gram matrix (relative error ~1e-7, 3-4x faster).
        """
        d = self.d
        if self._K is None:
            i = np.arange(d, dtype=np.int64)
            self._K = i[:, None] * d + (i[:, None] + i[None, :]) % d     # flat index of C[i, (i+m) % d]
        if perm is None:
            r = np.take(self.C, self._K).sum(0)
        else:
            if self._C32 is None:
                self._C32 = self.C.astype(np.float32)
            p = np.asarray(perm)
            r = np.take(self._C32[p][:, p], self._K).sum(0, dtype=np.float64)
        E = np.fft.fft(r).real
        return np.maximum(E[: spectral.n_bins(d)], 0.0)


def spectral_centroid(E: np.ndarray, d: int) -> float:
    """Energy-weighted mean frequency in ``[0, 1]`` (1 = Nyquist); a flat spectrum gives ≈ 0.5."""
    w = onesided_weights(d) * E
    tot = w.sum()
    return float((w * np.arange(len(E))).sum() / tot / (d / 2)) if tot > 0 else float("nan")


def lowpass_fraction(E: np.ndarray, d: int, cutoff: int | float) -> float:
    """Share of energy in rfft bins below ``cutoff`` (``spectral.cutoff_bins`` semantics)."""
    w = onesided_weights(d) * E
    tot = w.sum()
    c = spectral.cutoff_bins(d, cutoff)
    return float(w[:c].sum() / tot) if tot > 0 else float("nan")


def spectrum_test(gs: GramSpectrum, cutoff: int | float = 0.1, n_perm: int = 200, seed: int = 0) -> dict:
    """Spectral summary of a :class:`GramSpectrum` against ``spectral.permutation_null``.

    ``centroid`` tests "more high-frequency than chance" (``p_high``); ``lowpass_fraction`` tests
    "more low-frequency than chance" (``p_low``). The permutation is applied to the coordinate
    index and the Gram matrix is re-indexed with it, so the null uses every vector, not a sample.
    """
    d = gs.d
    if not np.trace(gs.C) > 0:
        keys = ("centroid", "centroid_null_mean", "centroid_null_q05", "centroid_null_q95", "centroid_z", "p_high",
                "lowpass_fraction", "lowpass_null_mean", "lowpass_null_q05", "lowpass_null_q95", "lowpass_z", "p_low")
        return {**dict.fromkeys(keys), "cutoff_bins": spectral.cutoff_bins(d, cutoff), "n_perm": 0, "seed": seed,
                "n_vectors": gs.n_vectors, "verdict": ZERO_VERDICT}
    lows: list[float] = []

    def centroid_stat(p: np.ndarray) -> float:       # one spectrum per permutation serves both statistics
        E = gs.spectrum(None if p is idx else p)
        lows.append(lowpass_fraction(E, d, cutoff))
        return spectral_centroid(E, d)

    idx = np.arange(d)
    cen = spectral.permutation_null(centroid_stat, idx, n_perm=n_perm, seed=seed)
    null_low = np.asarray(lows[1:])
    low = {"observed": lows[0], "null_mean": float(null_low.mean()), "null_q05": float(np.quantile(null_low, 0.05)),
           "null_q95": float(np.quantile(null_low, 0.95)),
           "z": float((lows[0] - null_low.mean()) / (null_low.std(ddof=1) + 1e-12)) if n_perm > 1 else 0.0,
           "p_value": float((1 + np.sum(null_low >= lows[0])) / (1 + n_perm))}
    p_high, p_low = cen["p_value"], low["p_value"]
    verdict = "high-frequency" if p_high < 0.05 else "low-frequency" if p_low < 0.05 else NULL_VERDICT
    return {"centroid": cen["observed"], "centroid_null_mean": cen["null_mean"], "centroid_null_q05": cen["null_q05"],
            "centroid_null_q95": cen["null_q95"], "centroid_z": cen["z"], "p_high": p_high,
            "lowpass_fraction": low["observed"], "lowpass_null_mean": low["null_mean"],
            "lowpass_null_q05": low["null_q05"], "lowpass_null_q95": low["null_q95"], "lowpass_z": low["z"],
            "p_low": p_low, "cutoff_bins": spectral.cutoff_bins(d, cutoff), "n_perm": n_perm, "seed": seed,
            "n_vectors": gs.n_vectors, "verdict": verdict}


# ----------------------------------------------------------------------------------------------
# streaming safetensors writer (the header is known before any Δ is computed)

_OUT_DTYPES = {"float32": ("F32", np.float32), "float16": ("F16", np.float16)}


class _StreamingWriter:
    """Write a safetensors file tensor by tensor, chunk by chunk, in a fixed order."""

    def __init__(self, fh, specs: Sequence[tuple[str, tuple[int, ...]]], dtype: str, metadata: Mapping[str, str]):
        tag, self.np_dtype = _OUT_DTYPES[dtype]
        item = np.dtype(self.np_dtype).itemsize
        header: dict[str, Any] = {"__metadata__": dict(metadata)}
        off = 0
        self.order: list[tuple[str, int]] = []
        for name, shape in specs:
            n = int(np.prod(shape)) * item
            header[name] = {"dtype": tag, "shape": list(shape), "data_offsets": [off, off + n]}
            self.order.append((name, n))
            off += n
        blob = json.dumps(header, separators=(",", ":")).encode()
        blob += b" " * (-len(blob) % 8)
        fh.write(struct.pack("<Q", len(blob)) + blob)
        self.fh, self.pos, self.written = fh, 0, 0

    def write(self, name: str, chunk: np.ndarray) -> None:
        exp, n = self.order[self.pos]
        if name != exp:
            raise RuntimeError(f"internal: writing {name} but {exp} is next")
        b = memoryview(np.ascontiguousarray(chunk, dtype=self.np_dtype)).cast("B")
        self.fh.write(b)
        self.written += b.nbytes
        if self.written == n:
            self.pos, self.written = self.pos + 1, 0
        elif self.written > n:
            raise RuntimeError(f"internal: too many bytes for {name}")

    def close(self) -> None:
        if self.pos != len(self.order):
            raise RuntimeError(f"internal: only {self.pos}/{len(self.order)} tensors written")


# ----------------------------------------------------------------------------------------------
# 4. the artifact

def library_versions() -> dict[str, str]:
    from analyses.artifacts import library_versions as lv

    return lv()


def _side_provenance(ck: Checkpoint) -> dict:
    return {"path": str(ck.path.resolve()), "model_type": ck.model_type(), "hidden_size": ck.hidden_size(),
            "n_layers": ck.text_config().get("num_hidden_layers"), "tie_word_embeddings": ck.ties_embeddings(),
            "shard_header_sha256": ck.header_sha256,
            "config_sha256": hashlib.sha256(json.dumps(ck.config, sort_keys=True).encode()).hexdigest()
            if ck.config else "unknown"}


@dataclasses.dataclass
class PriorArtifact:
    """A saved reasoning prior: ``delta.<canonical>`` tensors + provenance (``meta``).

    >>> prior = PriorArtifact.load("out/prior.safetensors")                       # doctest: +SKIP
    >>> mapping = prior.fit({n: tuple(p.shape) for n, p in model.named_parameters()})  # doctest: +SKIP
    """

    path: Path
    meta: dict
    shapes: dict[str, tuple[int, ...]]

    @classmethod
    def load(cls, path: str | Path) -> "PriorArtifact":
        """Open and validate a prior file (tensors are read on demand with :meth:`get`)."""
        path = Path(path)
        if path.is_dir():
            path = path / PRIOR_FILENAME
        if not path.is_file():
            raise PriorFitError(f"prior file {path} does not exist; create it with analyses.prior.compute_prior(..., "
                                "out_path=...) or run_prior_analysis")
        try:
            header, _, _ = _read_header(path)
        except CheckpointError as e:
            raise PriorFitError(str(e)) from None
        md = header.get("__metadata__") or {}
        if md.get("format") != PRIOR_FORMAT:
            raise PriorFitError(f"{path} is not a cotscope prior file (header format={md.get('format')!r})")
        if int(md.get("format_version", 0)) > PRIOR_FORMAT_VERSION:
            raise PriorFitError(f"{path} has prior format version {md['format_version']}, newer than this cotscope "
                                f"({PRIOR_FORMAT_VERSION}); upgrade cotscope")
        try:
            meta = json.loads(md["cotscope"])
        except (KeyError, json.JSONDecodeError) as e:
            raise PriorFitError(f"{path}: provenance metadata is corrupt ({e})") from None
        shapes = {}
        for k, spec in header.items():
            if k == "__metadata__":
                continue
            if not k.startswith("delta."):
                raise PriorFitError(f"{path}: unexpected tensor {k!r} (prior tensors are named delta.<canonical>)")
            shapes[k[len("delta."):]] = tuple(spec["shape"])
        listed = set(meta.get("tensors", {}))
        if listed != set(shapes):
            raise PriorFitError(f"{path}: provenance lists {len(listed)} tensors but the file holds {len(shapes)}; the "
                                "file is inconsistent — regenerate it")
        return cls(path, meta, shapes)

    @property
    def names(self) -> list[str]:
        return list(self.shapes)

    def get(self, canonical: str) -> np.ndarray:
        """Δ for one canonical name as a float32 array."""
        if canonical not in self.shapes:
            raise KeyError(f"{canonical!r} is not in this prior (has {len(self.shapes)} tensors, e.g. {self.names[:3]})")
        from safetensors import safe_open

        with safe_open(str(self.path), framework="numpy") as fh:
            a = fh.get_tensor("delta." + canonical)
        if not np.all(np.isfinite(a)):
            raise PriorFitError(f"{self.path}: Δ for {canonical} contains NaN or inf")
        return a.astype(np.float32, copy=False)

    def items(self) -> Iterator[tuple[str, np.ndarray]]:
        for n in self.names:
            yield n, self.get(n)

    def fit(self, param_shapes: Mapping[str, Sequence[int]], allow_partial: bool = False) -> dict[str, str]:
        """Map a model's parameter names onto this prior: ``{param name: canonical name}``.

        ``param_shapes`` is ``{name: shape}`` (e.g. from ``model.named_parameters()``). Every Δ must find
        a parameter of the same shape (``allow_partial=True`` tolerates Δ tensors without a parameter,
        never a shape mismatch); otherwise :class:`PriorFitError` lists what is wrong.
        """
        by_canon: dict[str, str] = {}
        for pname in param_shapes:
            c = canonical_name(pname)
            key = c[0] if c is not None else pname          # non-LM Δ ("raw:" selections) match by exact name
            by_canon.setdefault(key, pname)
        missing = [c for c in self.names if c not in by_canon]
        bad = [(c, by_canon[c], tuple(param_shapes[by_canon[c]]), self.shapes[c]) for c in self.names
               if c in by_canon and tuple(param_shapes[by_canon[c]]) != self.shapes[c]]
        src = self.meta.get("vl", {})
        if bad or (missing and not allow_partial) or len(missing) == len(self.names):
            lines = [f"the prior {self.path.name} (from {src.get('model_type', '?')} with hidden size "
                     f"{src.get('hidden_size', '?')}, {len(self.names)} tensors) does not fit this model:"]
            if missing:
                lines.append(f"  {len(missing)} Δ tensors have no parameter, e.g. {missing[:4]}")
            for c, p, ps, ds in bad[:5]:
                lines.append(f"  shape mismatch {p}: model {ps} vs prior {ds}")
            lines.append("Fix: apply the prior to the model family it was computed for, or recompute it with "
                         "analyses.prior.compute_prior between matching checkpoints.")
            raise PriorFitError("\n".join(lines))
        return {by_canon[c]: c for c in self.names if c in by_canon}


# ----------------------------------------------------------------------------------------------
# 3'. streaming computation


@dataclasses.dataclass
class PriorResult:
    """Everything :func:`compute_prior` measured (JSON-ready via :meth:`to_dict`)."""

    report: MatchReport
    tensors: list[dict]
    layers: list[dict]
    modules: list[dict]
    spectrum: dict
    hidden_size: int
    artifact: str | None
    provenance: dict

    def to_dict(self) -> dict:
        return {"format": "cotscope.prior_analysis", "sign": SIGN_CONVENTION, "hidden_size": self.hidden_size,
                "artifact": self.artifact, "match": self.report.to_dict(), "tensors": self.tensors,
                "layers": self.layers, "modules": self.modules, "spectrum": self.spectrum,
                "provenance": self.provenance}


_MODULE_ORDER = ("embed_tokens", "input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                 "self_attn.o_proj", "post_attention_layernorm", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj",
                 "norm", "lm_head")


def _module_order(module: str) -> tuple[int, str]:
    return (_MODULE_ORDER.index(module) if module in _MODULE_ORDER else len(_MODULE_ORDER), module)


def _dot64(x: np.ndarray, y: np.ndarray) -> float:
    """``x·y`` accumulated in float64 without materialising float64 copies."""
    return float(np.einsum("i,i->", x.ravel(), y.ravel(), dtype=np.float64))


def _row_chunks(n_rows: int, row_bytes: int, chunk_bytes: int) -> Iterator[slice]:
    step = max(1, chunk_bytes // max(1, row_bytes))
    for a in range(0, max(n_rows, 1), step):
        yield slice(a, min(n_rows, a + step))


def compute_prior(reason_dir: str | Path, vl_dir: str | Path, modules: str | Sequence[str] | None = "default", *,
                  out_path: str | Path | None = None, out_dtype: str = "float32", spectrum: bool = True,
                  cutoff: int | float = 0.1, n_perm: int = 200, n_perm_layer: int = 100, seed: int = 0,
                  chunk_mb: float = 16.0,
                  allow_unmatched: bool = False, allow_shape_mismatch: bool = False, verbose: bool = True,
                  progress: bool = True) -> PriorResult:
    """Stream ``Δ = θ_reason − θ_VL`` over the matched tensors and measure it.

    Per tensor: ``‖Δ‖``, ``‖θ_reason‖``, ``‖θ_VL‖``, cosine. Per layer: the same over the layer's
    selected tensors. Per module type: mean/std of ``‖Δ‖`` over layers (DRIFT fig. 2). With
    ``spectrum=True``: energy spectrum of Δ's vectors along the hidden dimension per layer, per
    module type and in total, with a permutation null (:func:`spectrum_test`; ``n_perm`` permutations
    for the total, ``n_perm_layer`` per layer, whose verdicts use Benjamini–Hochberg-adjusted
    p-values across layers). With ``out_path``:
    the prior artifact, written while streaming. Tensors are read one pair at a time, in row blocks
    of at most ``chunk_mb`` unless the hidden axis is the first (o_proj, down_proj: whole tensor).
    """
    if out_dtype not in _OUT_DTYPES:
        raise PriorError(f"out_dtype {out_dtype!r} is not supported; use one of {sorted(_OUT_DTYPES)}")
    reason, vl = Checkpoint(reason_dir), Checkpoint(vl_dir)
    pairs, report = match_checkpoints(reason, vl, modules, allow_unmatched=allow_unmatched,
                                      allow_shape_mismatch=allow_shape_mismatch)
    if verbose:
        print(report)
    d = reason.hidden_size() or vl.hidden_size()
    if d is None:
        emb = [p.shape[1] for p in pairs if p.module == "embed_tokens"]
        d = emb[0] if emb else collections.Counter(s for p in pairs for s in p.shape).most_common(1)[0][0]
    provenance = {"format": PRIOR_FORMAT, "sign": SIGN_CONVENTION, "reason": _side_provenance(reason),
                  "vl": _side_provenance(vl), "modules": report.modules, "out_dtype": out_dtype,
                  "match": {"n_matched": report.n_matched, "matched_exact": report.matched_exact,
                            "matched_mapped": report.matched_mapped, "unmatched_reason": len(report.unmatched_reason),
                            "unmatched_vl": len(report.unmatched_vl),
                            "shape_mismatched": len(report.shape_mismatched)},
                  "tensors": {p.canonical: {"reason_key": p.reason_key, "vl_key": p.vl_key, "shape": list(p.shape),
                                            "layer": p.layer, "module": p.module} for p in pairs},
                  "library": library_versions(),
                  "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    chunk_bytes = int(chunk_mb * 2 ** 20)
    tensors: list[dict] = []
    layer_gram: GramSpectrum | None = None
    total_gram = GramSpectrum(d) if spectrum else None
    module_spec: dict[str, np.ndarray] = {}
    layer_spec: dict[Any, dict] = {}
    cur_layer: Any = object()

    def flush_layer() -> None:
        if spectrum and layer_gram is not None and layer_gram.n_vectors:
            res = spectrum_test(layer_gram, cutoff, n_perm_layer, seed)
            res["energy"] = (layer_gram.spectrum() * onesided_weights(d)).tolist()
            layer_spec[cur_layer] = res

    def run(writer: _StreamingWriter | None) -> None:
        nonlocal layer_gram, cur_layer
        it: Iterable[Pair] = pairs
        if progress:
            from tqdm.auto import tqdm

            it = tqdm(pairs, desc="Δ = reason − VL", unit="tensor")
        for p in it:
            if p.layer != cur_layer:
                flush_layer()
                cur_layer, layer_gram = p.layer, (GramSpectrum(d) if spectrum else None)
            axis = hidden_axis(p.module, p.shape, d) if spectrum else None
            tg = GramSpectrum(d) if axis is not None else None
            dd = rr = vv = rv = 0.0
            n_rows = p.shape[0] if p.shape else 1
            row_bytes = 4 * (int(np.prod(p.shape[1:])) if len(p.shape) > 1 else 1)
            blocks = [None] if (axis == 0 and len(p.shape) == 2) or len(p.shape) <= 1 else \
                list(_row_chunks(n_rows, row_bytes, chunk_bytes))
            for rows in blocks:
                a = reason.read(p.reason_key, rows)
                b = vl.read(p.vl_key, rows)
                delta = np.subtract(a, b)
                dd += _dot64(delta, delta); rr += _dot64(a, a); vv += _dot64(b, b); rv += _dot64(a, b)
                del a, b
                if tg is not None:
                    tg.add(delta.T if (axis == 0 and delta.ndim == 2) else delta)
                if writer is not None:
                    writer.write("delta." + p.canonical, delta)
                del delta
            row = {"canonical": p.canonical, "layer": p.layer, "module": p.module, "shape": list(p.shape),
                   "delta_norm": dd ** 0.5, "reason_norm": rr ** 0.5, "vl_norm": vv ** 0.5,
                   "rel_norm": dd ** 0.5 / vv ** 0.5 if vv > 0 else None,
                   "cos": rv / (rr * vv) ** 0.5 if rr > 0 and vv > 0 else None,
                   "_rr": rr, "_vv": vv, "_rv": rv, "_dd": dd}
            tensors.append(row)
            if tg is not None:
                E = tg.spectrum() * onesided_weights(d)
                module_spec[p.module] = module_spec.get(p.module, 0) + E
                layer_gram.add_gram(tg)
                total_gram.add_gram(tg)
        flush_layer()
        if writer is not None:
            writer.close()

    artifact = None
    if out_path is not None:
        from analyses.atomic import atomic_path

        out_path = Path(out_path)
        specs = [("delta." + p.canonical, p.shape) for p in pairs]
        md = {"format": PRIOR_FORMAT, "format_version": str(PRIOR_FORMAT_VERSION),
              "cotscope": json.dumps(provenance, sort_keys=True)}
        with atomic_path(out_path) as tmp:
            with open(tmp, "wb") as fh:
                run(_StreamingWriter(fh, specs, out_dtype, md))
        artifact = str(out_path)
    else:
        run(None)

    # per layer
    by_layer: dict[Any, list[dict]] = collections.defaultdict(list)
    for t in tensors:
        by_layer[t["layer"]].append(t)
    layers = []
    for layer in sorted((l for l in by_layer if l is not None)):
        ts = by_layer[layer]
        dd, rr, vv, rv = (sum(t[k] for t in ts) for k in ("_dd", "_rr", "_vv", "_rv"))
        row = {"layer": layer, "n_tensors": len(ts), "delta_norm": dd ** 0.5, "rel_norm": (dd / vv) ** 0.5 if vv else None,
               "cos": rv / (rr * vv) ** 0.5 if rr > 0 and vv > 0 else None}
        if layer in layer_spec:
            row.update({k: layer_spec[layer][k] for k in ("centroid", "p_high", "lowpass_fraction", "p_low")})
        layers.append(row)
    for r in layers:
        if r.get("p_high", 0) is None:
            r.update(q_high=None, q_low=None, verdict=ZERO_VERDICT)
            layer_spec[r["layer"]].update(q_high=None, q_low=None)
    spec_layers = [r for r in layers if r.get("p_high") is not None]
    if spec_layers:
        q_high = bh_adjust([r["p_high"] for r in spec_layers])
        q_low = bh_adjust([r["p_low"] for r in spec_layers])
        for r, qh, ql in zip(spec_layers, q_high, q_low):
            r.update(q_high=qh, q_low=ql, verdict="high-frequency" if qh < 0.05 else "low-frequency" if ql < 0.05
                     else NULL_VERDICT)
            layer_spec[r["layer"]].update(q_high=qh, q_low=ql, verdict=r["verdict"])
    # per module type (DRIFT fig. 2)
    by_mod: dict[str, list[float]] = collections.defaultdict(list)
    for t in tensors:
        by_mod[t["module"]].append(t["delta_norm"])
    modules_rows = [{"module": m, "mean_delta_norm": float(np.mean(v)), "std_delta_norm": float(np.std(v)),
                     "n": len(v)} for m, v in sorted(by_mod.items(), key=lambda kv: _module_order(kv[0]))]
    for t in tensors:
        for k in ("_dd", "_rr", "_vv", "_rv"):
            t.pop(k)
    spec_out: dict = {}
    if spectrum and total_gram is not None and total_gram.n_vectors:
        tot = spectrum_test(total_gram, cutoff, n_perm, seed)
        tot["energy"] = (total_gram.spectrum() * onesided_weights(d)).tolist()
        # the permutation null's mean spectrum is flat: E[E_k] is the same for every k ≠ 0
        spec_out = {"hidden_size": d, "n_bins": spectral.n_bins(d), "cutoff": cutoff, "total": tot,
                    "null_flat_energy": _null_mean_spectrum(total_gram).tolist(),
                    "per_layer": {str(k): v for k, v in layer_spec.items() if k is not None},
                    "non_layer": layer_spec.get(None),
                    "per_module": {m: E.tolist() for m, E in module_spec.items()}}
    return PriorResult(report, tensors, layers, modules_rows, spec_out, d, artifact,
                       {k: v for k, v in provenance.items() if k != "tensors"})


def bh_adjust(p: Sequence[float]) -> list[float]:
    """Benjamini–Hochberg adjusted p-values (q-values), in the input order.

    >>> [round(q, 3) for q in bh_adjust([0.01, 0.04, 0.03])]
    [0.03, 0.04, 0.04]
    """
    p = np.asarray(p, dtype=float)
    n = len(p)
    if n == 0:
        return []
    order = np.argsort(p)
    q = p[order] * n / np.arange(1, n + 1)
    q = np.minimum.accumulate(q[::-1])[::-1]
    out = np.empty(n)
    out[order] = np.minimum(q, 1.0)
    return out.tolist()


def _null_mean_spectrum(gs: GramSpectrum) -> np.ndarray:
    """Exact mean (one-sided weighted) spectrum under uniformly random coordinate permutations.

    For one vector, ``E[|F_k|²] = (d·Σx² − (Σx)²)/(d−1)`` for ``k ≠ 0`` and ``(Σx)²`` for ``k = 0``;
    summed over vectors these are ``(d·tr C − 1ᵀC1)/(d−1)`` and ``1ᵀC1``.
    """
    d = gs.d
    tr, s = float(np.trace(gs.C)), float(gs.C.sum())
    E = np.full(spectral.n_bins(d), (d * tr - s) / (d - 1))
    E[0] = s
    return E * onesided_weights(d)


# ----------------------------------------------------------------------------------------------
# demo entry point


def run_prior_analysis(reason_dir: str | Path, vl_dir: str | Path, out_dir: str | Path,
                       modules: str | Sequence[str] | None = "default", *, write_artifact: bool = True,
                       figures: bool = True, figures_dir: str | Path | None = None, n_perm: int = 200,
                       **kw: Any) -> dict:
    """Compute the prior, write ``prior.safetensors`` + ``prior_analysis.json`` (+ figures), return summary numbers.

    Figures go to ``figures_dir`` (default ``out_dir``); ``python -m figures RUN`` redraws them from
    ``RUN/prior/prior_analysis.json`` when ``out_dir`` is ``RUN/prior``. Extra keywords go to
    :func:`compute_prior`.

    >>> s = run_prior_analysis(smollm2_dir(), reference_vlm_dir(), "out/prior")   # doctest: +SKIP
    >>> sorted(s)[:3]                                                            # doctest: +SKIP
    """
    from analyses.atomic import write_json_atomic

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    res = compute_prior(reason_dir, vl_dir, modules, out_path=out_dir / PRIOR_FILENAME if write_artifact else None,
                        n_perm=n_perm, **kw)
    data = res.to_dict()
    write_json_atomic(out_dir / ANALYSIS_FILENAME, data)
    written: list[str] = []
    if figures:
        from figures import fig_prior_modules, fig_prior_norms, fig_prior_spectrum

        for mod in (fig_prior_norms, fig_prior_modules, fig_prior_spectrum):
            if mod is fig_prior_spectrum and not data["spectrum"]:
                continue
            written += [str(p) for p in mod.save(data, figures_dir or out_dir)]
    return summarize(data, artifact=res.artifact, figures=written)


def summarize(data: Mapping[str, Any], **extra: Any) -> dict:
    """Flat summary numbers of a ``prior_analysis.json`` dict (for summary.json / report.md)."""
    layers = data["layers"]
    tot2 = sum(t["delta_norm"] ** 2 for t in data["tensors"])
    m = data["match"]
    out = {"n_matched": m["n_matched"], "n_unmatched_reason": len(m["unmatched_reason"]),
           "n_unmatched_vl": len(m["unmatched_vl"]), "n_shape_mismatched": len(m["shape_mismatched"]),
           "delta_norm_total": tot2 ** 0.5,
           "delta_norm_max_layer": max(layers, key=lambda r: r["delta_norm"])["layer"] if tot2 > 0 and layers else None,
           "cos_min": min((r["cos"] for r in layers if r["cos"] is not None), default=None),
           "cos_mean": float(np.mean([r["cos"] for r in layers if r["cos"] is not None])) if layers else None,
           "module_mean_delta_norm": {r["module"]: r["mean_delta_norm"] for r in data["modules"]}}
    sp = data.get("spectrum") or {}
    if sp:
        t = sp["total"]
        out.update(spectral_centroid=t["centroid"], spectral_centroid_null=t["centroid_null_mean"],
                   spectral_p_high=t["p_high"], spectral_lowpass_fraction=t["lowpass_fraction"],
                   spectral_lowpass_null=t["lowpass_null_mean"], spectral_p_low=t["p_low"],
                   spectral_verdict=t["verdict"],
                   n_layers_high_frequency=sum(1 for v in sp["per_layer"].values() if v["verdict"] == "high-frequency"),
                   n_layers_low_frequency=sum(1 for v in sp["per_layer"].values() if v["verdict"] == "low-frequency"))
    out.update(extra)
    return out
