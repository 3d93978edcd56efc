"""Attention shift between image and text during generation (IVT-LR §4.4, METHODS.md §5); numpy only.

Per generated token (a *token step*), from the query row ``a`` averaged over the chosen layers and heads:

* ratio ``R = Σ_{image} a / Σ_{text} a`` (text = every non-image key: template, question, generated);
* focus ``F = 1 / (H + ε)`` with ``H = -Σ p log p`` of ``p = a / Σ a`` over all keys or over image keys only;
* image share ``Σ_{image} a / Σ a`` and the mass on each key type;
* two length-robust variants (the released IVT-LR code computes neither R nor F): ``R_question`` = image mass
  over the mass on the **question text only** (template tokens and the first ``n_sink`` attention-sink keys
  excluded, so neither the chat template's sink nor the growing generated text enters the denominator), and
  ``F_norm = 1 / (H / log N + ε)`` with ``N`` the number of keys ``H`` is over (``H / log N`` ∈ [0, 1] whatever the
  context length).

Generated text is segmented into *reasoning steps* (explicit ``Step k`` markers, else sentence and line breaks);
a reasoning step's value is the mean over its tokens. IVT-LR's visual token selection picks, per step, the
top-``k`` image positions of the averaged row that were not picked before.

Every result carries the choices that produced it (layers, heads, entropy keys, ε, segmentation mode).

>>> segment_reasoning(["Step", " 1", ": add", ".", " Step", " 2", ": done", "."]).texts()
['Step 1: add.', 'Step 2: done.']
>>> select_visual_tokens(np.array([[0.1, 0.5, 0.4], [0.1, 0.5, 0.4]]), k=1).tolist()
[[1], [2]]
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from cotscope.analyses.attention_store import IMAGE, KEY_TYPES, QUESTION, AttentionRun, Trace
from cotscope.analyses.results import AttentionResult
from cotscope.errors import CotscopeError

ENTROPY_OVER = ("all", "image")
SEGMENT_MODES = ("auto", "step", "sentence", "line")
METRICS = ("R", "F", "image_share", "R_question", "F_norm")


class AttentionAnalysisError(CotscopeError):
    """A bad analysis request (subset, k, entropy keys, …)."""


# ------------------------------------------------------------------------------------------- averaging


def _subset(available: Sequence[int], chosen: Sequence[int] | None, what: str) -> list[int]:
    """Positions in ``available`` of the ``chosen`` indices (``None`` = all)."""
    available = list(available)
    if chosen is None:
        return list(range(len(available)))
    chosen = list(chosen)
    if not chosen:
        raise AttentionAnalysisError(f"empty {what} subset: pass indices, or None for all captured {what}")
    missing = [c for c in chosen if c not in available]
    if missing:
        raise AttentionAnalysisError(
            f"{what} {missing} were not captured (captured: {available}); choose a subset of "
            f"them or capture again with those {what}"
        )
    return [available.index(c) for c in chosen]


def averaging_choice(trace: Trace, layers: Sequence[int] | None = None, heads: Sequence[int] | None = None) -> dict:
    """The recorded averaging choice: which layers/heads, and that rows (not metrics) are averaged."""
    li, hi = _subset(trace.layers, layers, "layers"), _subset(trace.heads, heads, "heads")
    return {
        "layers": [trace.layers[i] for i in li],
        "heads": [trace.heads[i] for i in hi],
        "layers_subset": layers is not None,
        "heads_subset": heads is not None,
        "averaging": "mean of the query rows over the chosen layers and heads, then the metric",
    }


def averaged_rows(
    trace: Trace, layers: Sequence[int] | None = None, heads: Sequence[int] | None = None
) -> list[np.ndarray]:
    """Per token step, the query row averaged over the chosen layers and heads: ``[prompt_len + s]`` each."""
    li, hi = _subset(trace.layers, layers, "layers"), _subset(trace.heads, heads, "heads")
    sub = trace.rows[np.ix_(li, hi)] if (len(li) != len(trace.layers) or len(hi) != len(trace.heads)) else trace.rows
    flat = sub.astype(np.float64).mean((0, 1))
    off = trace.row_offsets
    return [flat[off[s] : off[s + 1]] for s in range(trace.n_steps)]


# ------------------------------------------------------------------------------------------- metrics


def entropy(p: np.ndarray) -> float:
    """Shannon entropy (nats) of ``p`` normalised to sum 1; zeros contribute 0."""
    p = np.asarray(p, dtype=np.float64)
    tot = p.sum()
    if tot <= 0:
        return float("nan")
    p = p[p > 0] / tot
    return float(-(p * np.log(p)).sum())


def row_metrics(
    row: np.ndarray, key_types: np.ndarray, entropy_over: str = "all", eps: float = 1e-6, n_sink: int = 1
) -> dict[str, Any]:
    """R, F, H, image share and per-type mass of one query row, plus ``R_question``, ``H_norm`` and ``F_norm``.

    >>> m = row_metrics(np.array([0.25, 0.25, 0.5]), np.array([0, 0, 1]))
    >>> round(m["R"], 3), round(m["image_share"], 3)
    (1.0, 0.5)
    >>> m = row_metrics(np.array([0.6, 0.1, 0.1, 0.2]), np.array([1, 0, 2, 3]))   # sink, image, question, generated
    >>> round(m["R"], 3), round(m["R_question"], 3), round(m["H_norm"], 3)
    (0.111, 1.0, 0.785)
    """
    if entropy_over not in ENTROPY_OVER:
        raise AttentionAnalysisError(f"entropy_over must be one of {ENTROPY_OVER}, got {entropy_over!r}")
    row = np.asarray(row, dtype=np.float64)
    kt = np.asarray(key_types)
    if row.shape != kt.shape:
        raise AttentionAnalysisError(f"row has {row.shape[0]} keys but key_types has {kt.shape[0]}")
    mass = np.array([row[kt == c].sum() for c in range(len(KEY_TYPES))])
    img, txt = mass[IMAGE], mass.sum() - mass[IMAGE]
    keys = row if entropy_over == "all" else row[kt == IMAGE]
    H = entropy(keys)
    n_keys = int(keys.shape[0])
    H_norm = H / np.log(n_keys) if n_keys > 1 else float("nan")
    keep = np.ones(kt.shape[0], dtype=bool)
    keep[: max(0, int(n_sink))] = False  # attention-sink keys (the first token(s))
    img_q = float(row[keep & (kt == IMAGE)].sum())
    q = float(row[keep & (kt == QUESTION)].sum())
    return {
        "R": float(img / txt) if txt > 0 else float("inf"),
        "F": 1.0 / (H + eps),
        "H": H,
        "image_share": float(img / mass.sum()) if mass.sum() > 0 else float("nan"),
        "mass": mass,
        "R_question": img_q / q if q > 0 else float("nan"),
        "H_norm": float(H_norm),
        "F_norm": 1.0 / (H_norm + eps) if np.isfinite(H_norm) else float("nan"),
        "n_keys": n_keys,
    }


@dataclasses.dataclass
class TokenMetrics:
    """Per-token-step metrics of one trace (arrays of length ``n_steps``) and the choices behind them."""

    R: np.ndarray
    F: np.ndarray
    H: np.ndarray
    image_share: np.ndarray
    mass: np.ndarray  # [n_steps, 4] by KEY_TYPES
    choice: dict[str, Any]
    R_question: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))
    H_norm: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))
    F_norm: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))

    def get(self, name: str) -> np.ndarray:
        return getattr(self, name)


def token_metrics(
    trace: Trace,
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
    entropy_over: str = "all",
    eps: float = 1e-6,
    n_sink: int = 1,
) -> TokenMetrics:
    """R, F, H, image share, type masses, ``R_question``, ``H_norm`` and ``F_norm`` at every token step of ``trace``."""
    if entropy_over == "image" and trace.n_steps and not (trace.key_types == IMAGE).any():
        raise AttentionAnalysisError(
            "entropy_over='image' needs image keys, but this trace has no image tokens; use entropy_over='all'"
        )
    rows = averaged_rows(trace, layers, heads)
    ms = [row_metrics(r, trace.step_key_types(s), entropy_over, eps, n_sink) for s, r in enumerate(rows)]
    col = lambda k: np.array([m[k] for m in ms], dtype=np.float64)  # noqa: E731
    choice = {
        **averaging_choice(trace, layers, heads),
        "entropy_over": entropy_over,
        "eps": eps,
        "n_sink": n_sink,
        "R_question": "image mass / question-text mass; template keys and the first n_sink keys excluded",
        "F_norm": "1 / (H / log N + eps), N = number of keys H is over",
    }
    return TokenMetrics(
        R=col("R"),
        F=col("F"),
        H=col("H"),
        image_share=col("image_share"),
        mass=np.stack([m["mass"] for m in ms]) if ms else np.zeros((0, len(KEY_TYPES))),
        choice=choice,
        R_question=col("R_question"),
        H_norm=col("H_norm"),
        F_norm=col("F_norm"),
    )


def layer_step_image_share(trace: Trace, heads: Sequence[int] | None = None) -> np.ndarray:
    """Image share of attention per captured layer and token step, mean over the chosen heads: ``[n_layers, n_steps]``."""
    hi = _subset(trace.heads, heads, "heads")
    m = trace.mass[:, :, hi, :].astype(np.float64)  # [S, L, h, 4]
    share = m[..., IMAGE] / np.maximum(m.sum(-1), 1e-30)
    return share.mean(-1).T


# ------------------------------------------------------------------------------------------- reasoning steps

STEP_RE = re.compile(r"(?im)(?:^|(?<=[\s*#(\[]))step\s*\d+\b")
_ABBREV = ("e.g.", "i.e.", "etc.", "vs.", "Mr.", "Mrs.", "Dr.", "approx.")
_LIST_NUM = re.compile(r"^\s*(?:\(?\d+[.)]|[-*•])\s*$")


@dataclasses.dataclass
class Segment:
    text: str
    chars: tuple[int, int]
    tokens: tuple[int, int]  # [start, end) token-step indices


@dataclasses.dataclass
class Segmentation:
    mode: str
    segments: list[Segment]

    def __len__(self) -> int:
        return len(self.segments)

    def texts(self) -> list[str]:
        return [s.text for s in self.segments]

    def token_spans(self) -> list[tuple[int, int]]:
        return [s.tokens for s in self.segments]


def _boundaries(text: str, mode: str) -> list[int]:
    """Start offsets of segments (before whitespace trimming)."""
    if mode == "step":
        starts = [m.start() for m in STEP_RE.finditer(text)]
        return sorted({0, *starts})
    cuts = {0}
    for m in re.finditer(r"\n+", text):
        cuts.add(m.end())
    if mode == "sentence":
        for m in re.finditer(r"(?<=[.!?])[\"')\]]*\s+", text):
            head = text[: m.start()]
            current = text[max(c for c in cuts if c <= m.start()) : m.start()]  # text since the last cut
            if any(head.endswith(a) for a in _ABBREV) or _LIST_NUM.match(current):
                continue  # "e.g. x", or a list number such as "1." / "2)"
            cuts.add(m.end())
    return sorted(cuts)


def segment_reasoning(tokens: Sequence[str], mode: str = "auto") -> Segmentation:
    """Split generated tokens (decoded pieces, ``""`` for special tokens) into reasoning steps.

    ``auto`` uses explicit ``Step k`` markers when present, else sentence and line breaks. Every token belongs to
    exactly one segment (whitespace tokens join the segment they fall into); whitespace-only text gives no
    segments and a warning.
    """
    if mode not in SEGMENT_MODES:
        raise AttentionAnalysisError(f"unknown segmentation mode {mode!r}; choose from {SEGMENT_MODES}")
    tokens = [str(t) for t in tokens]
    text = "".join(tokens)
    if mode == "auto":
        mode = "step" if STEP_RE.search(text) else "sentence"
    cuts = _boundaries(text, mode) + [len(text)]
    spans = []
    for a, b in zip(cuts[:-1], cuts[1:]):
        seg = text[a:b]
        if seg.strip():
            lead = len(seg) - len(seg.lstrip())
            spans.append((a + lead, a + len(seg.rstrip())))
    if not spans:
        warnings.warn(
            "the generation has no reasoning steps (empty or whitespace-only text); returning an empty segmentation",
            stacklevel=2,
        )
        return Segmentation(mode, [])
    starts = np.array([s for s, _ in spans])
    owner = []
    pos = 0
    for t in tokens:
        stripped = len(t) - len(t.lstrip())
        anchor = pos + stripped if t.strip() else pos
        owner.append(max(0, int(np.searchsorted(starts, anchor, side="right")) - 1))
        pos += len(t)
    owner = np.maximum.accumulate(np.array(owner)) if owner else np.array([], int)
    segs = []
    for j, (a, b) in enumerate(spans):
        idx = np.flatnonzero(owner == j)
        if len(idx):
            segs.append(Segment(text=text[a:b], chars=(a, b), tokens=(int(idx[0]), int(idx[-1]) + 1)))
    return Segmentation(mode, segs)


def step_values(values: np.ndarray, seg: Segmentation) -> np.ndarray:
    """Mean of a per-token array over the tokens of each reasoning step (NaNs and infs ignored)."""
    out = np.full(len(seg), np.nan)
    for j, (a, b) in enumerate(seg.token_spans()):
        v = np.asarray(values[a:b], dtype=np.float64)
        v = v[np.isfinite(v)]
        if len(v):
            out[j] = v.mean()
    return out


# ------------------------------------------------------------------------------------------- visual token selection


def select_visual_tokens(image_rows: np.ndarray, k: int) -> np.ndarray:
    """IVT-LR selection: for each step (row of ``image_rows``, the averaged attention over the image tokens), the
    ``k`` highest image positions not picked at an earlier step. Ties go to the lower index.

    Returns ``[n_steps, k]`` image-token indices (0-based among image tokens).
    """
    image_rows = np.asarray(image_rows, dtype=np.float64)
    if image_rows.ndim != 2:
        raise AttentionAnalysisError(f"image_rows must be [n_steps, n_image_tokens], got shape {image_rows.shape}")
    n_steps, n_img = image_rows.shape
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise AttentionAnalysisError(f"k must be a positive integer, got {k!r}")
    if k > n_img:
        raise AttentionAnalysisError(f"k={k} is larger than the number of image tokens ({n_img}); choose k <= {n_img}")
    if k * n_steps > n_img:
        raise AttentionAnalysisError(
            f"k={k} over {n_steps} steps needs {k * n_steps} distinct image positions but there are only {n_img} "
            f"(picked positions are excluded later); use k <= {n_img // max(n_steps, 1)} or at most "
            f"{n_img // k} steps"
        )
    picked = np.zeros(n_img, dtype=bool)
    out = np.zeros((n_steps, k), dtype=np.int64)
    for s in range(n_steps):
        vals = np.where(picked, -np.inf, image_rows[s])
        top = np.argsort(-vals, kind="stable")[:k]
        out[s] = top
        picked[top] = True
    return out


def selection_heatmap(indices: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Grid of ``shape`` (row-major over image tokens): the 1-based step that picked each position, 0 = never."""
    r, c = int(shape[0]), int(shape[1])
    grid = np.zeros(r * c, dtype=np.float64)
    indices = np.asarray(indices)
    if indices.size and indices.max() >= r * c:
        raise AttentionAnalysisError(f"image index {indices.max()} does not fit a {r}x{c} grid")
    for s, row in enumerate(indices):
        grid[row] = s + 1
    return grid.reshape(r, c)


def latent_patch_maps(latent_map: np.ndarray, indices: np.ndarray, image_attention: np.ndarray) -> dict[str, Any]:
    """Project a selection of resampler latents onto vision patches through ``latent_map`` ``[n_latents, gh, gw]``.

    ``patch_selection``: per patch, the 1-based step whose picked latents read it most (0 = read by none more than
    1/n_patches); ``patch_read``: total reading by all picked latents; ``patch_attention``: the averaged attention
    on the latents pushed through the map (``Σ_l a_l · map_l``).
    """
    lmap = np.asarray(latent_map, dtype=np.float64)
    n_patch = lmap[0].size
    per_step = np.stack([lmap[row].sum(0) for row in np.asarray(indices)])  # [steps, gh, gw]
    best = per_step.argmax(0) + 1
    sel = np.where(per_step.max(0) > len(indices[0]) / n_patch, best, 0)
    return {
        "patch_grid": list(lmap.shape[1:]),
        "patch_selection": sel.astype(float).tolist(),
        "patch_read": per_step.sum(0).tolist(),
        "patch_attention": np.tensordot(np.asarray(image_attention, dtype=np.float64), lmap, 1).tolist(),
    }


def image_rows_for_steps(
    trace: Trace,
    seg: Segmentation | None = None,
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
) -> np.ndarray:
    """Averaged attention on the image tokens per reasoning step (mean over its tokens) or per token step."""
    pos = trace.image_positions
    if len(pos) == 0:
        raise AttentionAnalysisError(f"trace {trace.index} has no image tokens; visual token selection needs an image")
    rows = np.stack([r[pos] for r in averaged_rows(trace, layers, heads)]) if trace.n_steps else np.zeros((0, len(pos)))
    if seg is None:
        return rows
    return np.stack([rows[a:b].mean(0) for a, b in seg.token_spans()]) if len(seg) else np.zeros((0, len(pos)))


# ------------------------------------------------------------------------------------------- per trace / per run


def analyse_trace(
    trace: Trace,
    *,
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
    entropy_over: str = "all",
    eps: float = 1e-6,
    segment_mode: str = "auto",
    k: int | None = None,
    max_select_steps: int | None = None,
    n_sink: int = 1,
) -> dict[str, Any]:
    """Token- and reasoning-step metrics of one trace, its layer × step image share, and optionally a selection."""
    tm = token_metrics(trace, layers, heads, entropy_over, eps, n_sink)
    seg = segment_reasoning(trace.gen_tokens, segment_mode)
    ls = layer_step_image_share(trace, heads)
    res: dict[str, Any] = {
        "index": trace.index,
        "id": trace.record.get("id"),
        "condition": trace.record.get("condition"),
        "n_tokens": trace.n_steps,
        "n_steps": len(seg),
        "segmentation": seg.mode,
        "steps": [{"text": s.text, "tokens": list(s.tokens)} for s in seg.segments],
        "token": {m: tm.get(m).tolist() for m in (*METRICS, "H", "H_norm")},
        "token_mass": {t: tm.mass[:, c].tolist() for c, t in enumerate(KEY_TYPES)},
        "step": {m: step_values(tm.get(m), seg).tolist() for m in METRICS},
        "layer_step_share": np.stack([step_values(ls[i], seg) for i in range(ls.shape[0])]).tolist()
        if len(seg)
        else [[] for _ in range(ls.shape[0])],
        "choice": {**tm.choice, "segment_mode": segment_mode, "step_reduce": "mean over the tokens of each step"},
    }
    if k is not None and len(seg):
        rows = image_rows_for_steps(trace, seg, layers, heads)
        n = len(rows) if max_select_steps is None else min(len(rows), max_select_steps)
        n = min(n, rows.shape[1] // k) if k <= rows.shape[1] else n
        idx = select_visual_tokens(rows[: max(n, 1)], k)
        layout = trace.record.get("image_layout", {})
        shape = layout.get("shape") or [1, rows.shape[1]]
        res["selection"] = {
            "k": k,
            "indices": idx.tolist(),
            "positions": trace.image_positions[idx].tolist(),
            "layout": layout,
            "heatmap": selection_heatmap(idx, shape).tolist(),
            "attention_map": rows[: len(idx)].mean(0).reshape(shape).tolist(),
        }
        lmap = trace.extras.get("latent_map")
        if lmap is not None and lmap.shape[0] == rows.shape[1]:
            res["selection"].update(latent_patch_maps(lmap, idx, rows[: len(idx)].mean(0)))
    return res


def _band(curves: list[np.ndarray]) -> dict[str, list]:
    """Mean ± s.e.m. over prompts per step index (prompts with fewer steps drop out)."""
    n = max((len(c) for c in curves), default=0)
    mean, lo, hi, cnt = [], [], [], []
    for j in range(n):
        v = np.array([c[j] for c in curves if len(c) > j and np.isfinite(c[j])])
        cnt.append(int(len(v)))
        if len(v) == 0:
            mean.append(None), lo.append(None), hi.append(None)
            continue
        m = float(v.mean())
        se = float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0
        mean.append(m), lo.append(m - se), hi.append(m + se)
    return {"mean": mean, "lo": lo, "hi": hi, "n": cnt}


def pooled_slope(curves: list[np.ndarray]) -> float | None:
    """Least-squares slope of value vs step index over all (prompt, step) points; ``None`` if undefined."""
    x = np.concatenate([np.arange(len(c)) for c in curves]) if curves else np.zeros(0)
    y = np.concatenate([np.asarray(c, dtype=np.float64) for c in curves]) if curves else np.zeros(0)
    ok = np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 2 or np.ptp(x) == 0:
        return None
    return float(np.polyfit(x, y, 1)[0])


def analyse_run(
    run: AttentionRun,
    *,
    conditions: Sequence[str] | None = None,
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
    entropy_over: str = "all",
    eps: float = 1e-6,
    segment_mode: str = "auto",
    k: int | None = None,
    max_select_steps: int | None = None,
    max_steps: int | None = None,
    n_sink: int = 1,
) -> AttentionResult:
    """Analyse every trace and aggregate per condition: reasoning-step and token curves with bands, slopes, and the
    layer × step image-share map (mean over prompts). Returns an :class:`~analyses.results.AttentionResult`."""
    conds = list(conditions) if conditions is not None else sorted({r.get("condition", "") for r in run.records})
    per_trace, agg = [], {}
    for cond in conds:
        idx = run.select(condition=cond)
        if not idx:
            raise AttentionAnalysisError(
                f"no traces with condition {cond!r} in {run.path} "
                f"(has {sorted({r.get('condition') for r in run.records})})"
            )
        res = []
        for i in idx:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                r = analyse_trace(
                    run.trace(i),
                    layers=layers,
                    heads=heads,
                    entropy_over=entropy_over,
                    eps=eps,
                    segment_mode=segment_mode,
                    k=k,
                    max_select_steps=max_select_steps,
                    n_sink=n_sink,
                )
            r["warnings"] = [str(w.message) for w in caught]
            res.append(r)
        per_trace += res
        cut = (lambda a: a[:max_steps]) if max_steps else (lambda a: a)
        a = {
            "n_traces": len(res),
            "n_steps": [r["n_steps"] for r in res],
            "n_tokens": [r["n_tokens"] for r in res],
            "step": {},
            "token": {},
            "slope_step": {},
            "slope_token": {},
        }
        for m in METRICS:
            sc = [cut(np.asarray(r["step"][m], dtype=np.float64)) for r in res]
            tc = [cut(np.asarray(r["token"][m], dtype=np.float64)) for r in res]
            a["step"][m], a["token"][m] = _band(sc), _band(tc)
            a["slope_step"][m], a["slope_token"][m] = pooled_slope(sc), pooled_slope(tc)
        L = len(res[0]["layer_step_share"])
        n = max((len(r["layer_step_share"][0]) for r in res if L), default=0)
        if max_steps:
            n = min(n, max_steps)
        stack = np.full((len(res), L, n), np.nan)
        for t, r in enumerate(res):
            ls = np.asarray(r["layer_step_share"], dtype=np.float64)
            w = min(n, ls.shape[1]) if ls.ndim == 2 else 0
            stack[t, :, :w] = ls[:, :w] if w else stack[t, :, :w]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            a["layer_step_share"] = np.nanmean(stack, 0).tolist() if len(res) and n else [[] for _ in range(L)]
        agg[cond] = a
    choice = per_trace[0]["choice"] if per_trace else {}
    return AttentionResult(
        conditions=conds,
        layers=choice.get("layers", run.layers),
        choice=choice,
        k=k,
        band="mean ± s.e.m. over prompts",
        max_steps=max_steps,
        aggregate=agg,
        traces=per_trace,
    )
