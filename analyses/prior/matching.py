"""Canonical tensor names, module sets (presets and regexes) and pairing two checkpoints' tensors.

Names are compared in a *canonical* form: the language-model prefix is stripped, so
``model.text_model.layers.3.mlp.up_proj.weight`` and ``model.layers.3.mlp.up_proj.weight`` are both
``layers.3.mlp.up_proj.weight``; ``embed_tokens.weight``, ``norm.weight`` and ``lm_head.weight`` are
the non-layer names. Presets and user regexes (``re.search``) select language-model tensors by
canonical name; ``"raw:<regex>"`` selects tensors outside the language model (connectors,
projectors) by raw name, paired by exact name. Names containing ``visual``/``vision`` are always
skipped (as in DRIFT).
"""

from __future__ import annotations

import collections
import dataclasses
import re
from collections.abc import Sequence
from pathlib import Path

from cotscope.analyses.prior.errors import CheckpointError, ModuleMatchError, PatternError
from cotscope.analyses.prior.reader import Checkpoint

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
DEFAULT_MODULES: tuple[str, ...] = ("attn", "mlp")  # as in the released DRIFT code
RAW_PREFIX = "raw:"  # "raw:<regex>" selects tensors outside the language model by their raw names


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
                out.append((m, re.compile(m[len(RAW_PREFIX) :] if m.startswith(RAW_PREFIX) else m)))
            except re.error as e:
                raise PatternError(
                    f"module pattern {m!r} is neither a preset ({sorted(PRESETS)}) nor a valid regex ({e})"
                ) from None
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
    method: str  # "exact" or "mapped:<reason layout>-><vl layout>" (+ ",tied" for a tied head)


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
            raise CheckpointError(
                f"{ck.path}: tensors {canon[name][0]!r} and {raw!r} both map to {name!r}; "
                "the checkpoint holds two language models. Split the checkpoint first."
            )
        canon[name] = (raw, layout)
    return canon, counts


def match_checkpoints(
    reason: Checkpoint | str | Path,
    vl: Checkpoint | str | Path,
    modules: str | Sequence[str] | None = "default",
    *,
    allow_unmatched: bool = False,
    allow_shape_mismatch: bool = False,
) -> tuple[list[Pair], MatchReport]:
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
    tied = {
        s: ck.ties_embeddings() and "lm_head.weight" not in canon[s] and "embed_tokens.weight" in canon[s]
        for s, ck in sides.items()
    }
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
            extra = (
                " (both checkpoints tie lm_head to embed_tokens; use 'embed')"
                if label == "head" and tied["reason"] and tied["vl"]
                else ""
            )
            where = (
                "no non-LM, non-vision tensor (raw names)"
                if label.startswith(RAW_PREFIX)
                else "no language-model tensor"
            )
            raise PatternError(
                f"module pattern {label!r} matched {where} in either checkpoint{extra}. Patterns are "
                f"matched (re.search) against canonical names such as {examples}; use "
                f"'{RAW_PREFIX}<regex>' for connector/projector tensors."
            )
    report = MatchReport(
        reason_path=str(reason.path),
        vl_path=str(vl.path),
        modules=[l for l, _ in specs],
        n_tensors={s: len(ck.tensors) for s, ck in sides.items()},
        n_lm={s: sum(1 for v in canon[s].values() if v[1] != NON_LM and not v[1].endswith(",tied")) for s in sides},
        n_vision={s: counts[s]["vision"] for s in sides},
        n_other={s: counts[s]["other"] for s in sides},
        layouts={
            s: dict(collections.Counter(v[1].split(",")[0] for v in canon[s].values() if v[1] != NON_LM)) for s in sides
        },
        n_selected={s: len(sel[s]) for s in sides},
        notes=notes,
    )
    pairs: list[Pair] = []
    vl_sel = set(sel["vl"])
    for name in sel["reason"]:
        if name not in vl_sel:
            report.unmatched_reason.append(canon["reason"][name][0])
            continue
        (rk, rl), (vk, vlay) = canon["reason"][name], canon["vl"][name]
        rs, vs = reason.info(rk).shape, vl.info(vk).shape
        if rs != vs:
            report.shape_mismatched.append(
                {"canonical": name, "reason_key": rk, "vl_key": vk, "reason_shape": list(rs), "vl_shape": list(vs)}
            )
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
        why = (
            f"all {len(report.shape_mismatched)} name-matched tensors have different shapes"
            if report.shape_mismatched
            else "no selected name is shared"
        )
        raise ModuleMatchError(
            f"no tensor pairs match between the two checkpoints ({why}): they have different "
            "architectures or layouts. Check the paths, or pass a regex module set that names "
            "tensors both sides have.",
            report,
        )
    if report.shape_mismatched and not allow_shape_mismatch:
        raise ModuleMatchError(
            f"{len(report.shape_mismatched)} matched tensors have different shapes (different "
            "architectures or a resized vocabulary). Fix: restrict the module set (e.g. drop "
            "'embed'/'head'), or pass allow_shape_mismatch=True to skip them (they stay in the "
            "report).",
            report,
        )
    if (report.unmatched_reason or report.unmatched_vl) and not allow_unmatched:
        raise ModuleMatchError(
            f"{len(report.unmatched_reason)} selected reason tensors and {len(report.unmatched_vl)} "
            "selected VL tensors have no partner (different depth or module names). Fix: restrict "
            "the module set, or pass allow_unmatched=True to use only the matched pairs.",
            report,
        )
    pairs.sort(key=lambda p: (p.layer is None, p.layer if p.layer is not None else 0, p.canonical))
    return pairs, report
