"""Latent intervention during generation (METHODS.md §4): ``h' = h + λ·v`` at decoder-block outputs.

Injection runs through nnsight inside ``generate`` with the KV cache on, at one or several decoder
layers, and — the point of this module — with a **different (layers, λ, vector) setting per batch row**,
so one ``generate`` call serves a whole layer × λ grid plus its controls for the same prompt.

* Norm preservation (default on): each steered token is rescaled to its original ``‖h‖``.
* Positions (``positions=`` a name or a tuple of names, combined by union; one vocabulary with
  :func:`probes.apply.apply`, see :class:`probes.positions.Positions`, which also reads ``"all"`` =
  prompt + generated and ``"last"`` = last_prompt + generated):

  ``first``        position 0 of every forward call — the released L2V-CoT behaviour. Under the KV
                   cache that is the first (real, i.e. after left padding) prompt token on the prompt
                   pass, then every generated token.
  ``last_prompt``  the last prompt token (prompt pass only).
  ``prompt``       every real prompt token (prompt pass only).
  ``generated``    every generated token (all calls after the prompt pass).

* Vectors come from a direction file, a :class:`~analyses.artifacts.DirectionSet` or arrays; they are
  Fourier-resampled to the target width when needed (:func:`prepare_vector`) and optionally low- or
  high-passed. :func:`build_controls` makes the controls that sit beside the real vector: ``unfiltered``,
  ``highpass``, ``random`` (seeded, equal norm), ``own_lowpass`` (a supplied direction of the target model,
  low-passed: the paper's ablation) and ``none``.
* Decoding is done by a logits processor (:class:`BudgetDecoder`) that picks every token itself (greedy or
  seeded per-row sampling), stops a row at EOS or after ``budget`` tokens and can then **teacher-force** an
  answer string and record its log-probabilities — the cheap score of :mod:`probes.evaluate`.
* With ``share_prefix`` (text prompts, positions that leave the prompt prefix untouched) the prompt minus
  its last token is run once per distinct prompt and its KV cache is copied to every row of that prompt.

All bad input is refused before any generation starts (:class:`InjectionError`).

>>> lm = load_model("embedded:smollm2")                                           # doctest: +SKIP
>>> iv = build_controls("runs/demo/directions/llm_mean_diff.safetensors", lm, layers=[12],
...                     filter="lowpass", cutoff=0.1)                              # doctest: +SKIP
>>> rows = [RowSteer.none(), RowSteer.at(iv.vectors["real"], [12], 0.5)]           # doctest: +SKIP
>>> out = generate_steered(lm, [prompt, prompt], rows, budget=32)                  # doctest: +SKIP
>>> out[1].text                                                                   # doctest: +SKIP
"""

from __future__ import annotations

import copy
import dataclasses
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cotscope.analyses import spectral
from cotscope.analyses.artifacts import DirectionFileError, DirectionSet
from cotscope.errors import CotscopeError
from cotscope.probes import traced
from cotscope.probes.evaluate import ForcedAnswer
from cotscope.probes.models.context import check_context
from cotscope.probes.models.loading import LoadedModel
from cotscope.probes.positions import STEER_ATOMS, Positions, PositionsError, PositionsLike
from cotscope.probes.remote import backend_for, resolve_remote
from cotscope.probes.traced import block_hidden, decode_step, steer

POSITIONS = STEER_ATOMS  # the position names; see probes.positions for shorthands ("all", "last")
FILTERS = ("none", "lowpass", "highpass")
CONTROLS = ("real", "unfiltered", "highpass", "random", "own_lowpass", "none")
LAYER_MAPS = ("auto", "same", "relative")
STRENGTH_REFERENCES = ("source", "target_direction", "hidden_norm")
# Positions whose prompt-prefix states do not depend on the steering (prefix KV cache can be shared).
_PREFIX_SAFE = frozenset({"last_prompt", "generated"})


class InjectionError(CotscopeError):
    """A bad injection request (strength, vector, layer, position, sizes); raised before generation."""


# ----------------------------------------------------------------------------------------- validation
def check_lam(lam: Any) -> float:
    """``lam`` as a finite float, else :class:`InjectionError`.

    >>> check_lam(0.5)
    0.5
    """
    try:
        val = float(lam)
    except (TypeError, ValueError):
        raise InjectionError(f"strength λ={lam!r} is not a number; pass a finite float such as 0.5") from None
    if not math.isfinite(val):
        raise InjectionError(f"strength λ={lam!r} is not finite; pass a finite float such as 0.5")
    return val


def check_vector(v: Any, what: str = "direction") -> np.ndarray:
    """A finite, non-zero 1-D float64 array, else :class:`InjectionError` naming the problem."""
    a = np.asarray(v, dtype=np.float64)
    if a.ndim != 1 or a.shape[0] < 2:
        raise InjectionError(f"{what} has shape {a.shape}; expected a 1-D vector [hidden_size]")
    if not np.all(np.isfinite(a)):
        raise InjectionError(
            f"{what} contains NaN or inf ({int((~np.isfinite(a)).sum())} entries); recompute or re-export the direction"
        )
    if not np.any(a):
        raise InjectionError(
            f"{what} is all zeros, so injecting it does nothing; check the direction file "
            "(or the filter cutoff, if it was filtered)"
        )
    return a


def normalize_positions(positions: PositionsLike) -> tuple[str, ...]:
    """Validated, de-duplicated position names in canonical order (see :class:`probes.positions.Positions`).

    >>> normalize_positions(("generated", "last_prompt"))
    ('last_prompt', 'generated')
    >>> normalize_positions("last")                  # apply()'s spelling: the last token of every forward call
    ('last_prompt', 'generated')
    """
    try:
        return Positions.parse(positions, what="injection position").generation()
    except PositionsError as e:
        raise InjectionError(str(e)) from None


# ----------------------------------------------------------------------------------------- vectors
def prepare_vector(
    v: Any,
    hidden_size: int,
    *,
    resample: bool = True,
    filter: str = "none",
    cutoff: int | float | None = None,
    what: str = "direction",
) -> np.ndarray:
    """Fit ``v`` to a model of width ``hidden_size``: Fourier-resample if needed, then filter.

    Resampling (:func:`analyses.spectral.resample`, norm kept) happens only when the sizes differ; with
    ``resample=False`` a size mismatch is an error. ``filter`` is ``"none"``, ``"lowpass"`` or
    ``"highpass"`` at ``cutoff`` (a bin count or a fraction of the rfft bins of the *target* width).

    >>> v = np.random.default_rng(0).normal(size=64)
    >>> np.allclose(prepare_vector(v, 64, filter="lowpass", cutoff=1.0), v)
    True
    >>> prepare_vector(v, 96).shape
    (96,)
    """
    a = check_vector(v, what)
    if filter not in FILTERS:
        raise InjectionError(f"unknown filter {filter!r}; choose from {FILTERS}")
    if a.shape[0] != hidden_size:
        if not resample:
            raise DirectionFileError(
                f"hidden-size mismatch: the {what} has {a.shape[0]} dims, the target model has {hidden_size}. "
                "Fix: pass resample=True (Fourier resampling) or use a direction read from a model of that width."
            )
        a = spectral.resample(a, int(hidden_size))
    if filter != "none":
        if cutoff is None:
            raise InjectionError(f"filter={filter!r} needs a cutoff (bins as int, or a fraction in (0, 1])")
        before = float(np.linalg.norm(a))
        try:
            a = spectral.lowpass(a, cutoff) if filter == "lowpass" else spectral.highpass(a, cutoff)
        except spectral.CutoffError as e:
            raise InjectionError(str(e)) from None
        if float(np.linalg.norm(a)) <= 1e-9 * before:
            raise InjectionError(
                f"the {filter} part of the {what} at cutoff {cutoff} is all zeros; choose another "
                "cutoff or filter='none'"
            )
    return a.astype(np.float32)


def random_like(v: np.ndarray, seed: int, layer: int) -> np.ndarray:
    """A Gaussian direction with the norm of ``v``, deterministic for ``(seed, layer)``."""
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(layer) & 0xFFFFFFFF, 0x5EED])
    r = rng.standard_normal(v.shape[0])
    return (r * (np.linalg.norm(v) / np.linalg.norm(r))).astype(np.float32)


def as_direction_set(direction: Any, what: str = "direction") -> DirectionSet:
    """A :class:`DirectionSet` from a file path, a set, a 1-D array (layer-agnostic) or ``{layer: array}``.

    In ``{layer: array}`` a negative layer counts from the end (``-1`` is the last block), as everywhere.
    A bare 1-D array is layer-agnostic: a one-layer set (``meta.extra["layer_agnostic"]``) that feeds every
    target layer (see :func:`source_layer`).
    """
    if isinstance(direction, DirectionSet):
        return direction
    if isinstance(direction, (str, Path)):
        return DirectionSet.load(direction)
    from cotscope.analyses.artifacts import DirectionMeta

    if isinstance(direction, Mapping):
        vecs = {int(k): check_vector(v, f"{what} layer {k}") for k, v in direction.items()}
        return DirectionSet(vecs, DirectionMeta(model_id="array", method="array"))
    a = np.asarray(direction)
    if a.ndim == 1:
        return DirectionSet(
            {0: check_vector(a, what)}, DirectionMeta(model_id="array", method="array", extra={"layer_agnostic": True})
        )
    raise InjectionError(
        f"cannot use a {type(direction).__name__} of shape {getattr(a, 'shape', None)} as a "
        "direction; pass a direction file path, a DirectionSet, a 1-D array or {layer: array}"
    )


def source_layer(target: int, available: Sequence[int], n_src: int, n_tgt: int, mode: str = "auto") -> int:
    """Which layer of the direction set feeds target layer ``target``.

    A set with one layer (e.g. a bare 1-D vector) feeds every target layer. ``same`` uses
    the same block index; ``relative`` maps by relative depth ``round(t·(n_src−1)/(n_tgt−1))``; ``auto`` is
    ``same`` when the depths agree (or the source depth is unknown) and ``relative`` otherwise.

    >>> source_layer(10, [5, 20], n_src=31, n_tgt=16, mode="relative")
    20
    """
    if mode not in LAYER_MAPS:
        raise InjectionError(f"unknown layer_map {mode!r}; choose from {LAYER_MAPS}")
    available = sorted(available)
    if len(available) == 1:
        return available[0]
    if mode == "auto":
        mode = "same" if n_src in (0, n_tgt) else "relative"
    src = target if mode == "same" or n_tgt < 2 else int(round(target * (n_src - 1) / (n_tgt - 1)))
    if src not in available:
        raise InjectionError(
            f"the direction has no layer {src} for target layer {target} (layer_map={mode!r}); "
            f"it has layers {available}. Save directions for those layers, or inject at layers "
            "that map onto them"
        )
    return src


@dataclasses.dataclass
class InjectionVectors:
    """Prepared vectors per control kind and target layer, with where they came from.

    ``vectors[kind][layer]`` is float32 ``[hidden_size]``; ``src_layer[layer]`` is the direction-file layer
    it was made from; ``norms[kind][layer]`` its L2 norm; ``settings`` the preparation arguments.
    """

    vectors: dict[str, dict[int, np.ndarray]]
    src_layer: dict[int, int]
    norms: dict[str, dict[int, float]]
    settings: dict[str, Any]

    @property
    def kinds(self) -> list[str]:
        return list(self.vectors)


def build_controls(
    direction: Any,
    target: LoadedModel | tuple[int, int],
    layers: Sequence[int],
    *,
    controls: Sequence[str] = ("real", "unfiltered", "highpass", "random", "none"),
    filter: str = "lowpass",
    cutoff: int | float | None = 0.1,
    resample: bool = True,
    own: Any = None,
    seed: int = 0,
    layer_map: str = "auto",
    match_norm: bool = False,
    strength_reference: str = "source",
    reference: Any = None,
) -> InjectionVectors:
    """Prepare the real vector and its controls for ``target``'s ``layers``.

    * ``real``        — the direction, resampled to the target width and passed through ``filter``
      (the L2V-CoT setting is ``filter="lowpass"``);
    * ``unfiltered``  — resampled, not filtered;
    * ``highpass``    — the complement of the low-pass part at the same cutoff;
    * ``random``      — Gaussian, seeded by ``(seed, layer)``, with the norm of ``real``;
    * ``own_lowpass`` — ``own`` (the target model's own direction) low-passed at ``cutoff``;
    * ``none``        — no injection (no vectors).

    ``match_norm`` rescales every control to the norm of ``real`` (off: parts keep their natural size).
    ``target`` is a loaded model or ``(hidden_size, n_layers)``.

    ``strength_reference`` fixes what λ is measured against (the injection is renormalised, so only
    ``‖λv‖/‖h‖`` matters):

    * ``"source"`` — the vectors keep the norm they have after resampling and filtering (the source model's scale);
    * ``"target_direction"`` — every vector at layer ``l`` is rescaled by one factor so that ``real`` has the norm of
      the **target model's own direction** at ``l`` after the same filter (the released L2V-CoT setting, where the
      direction is read from the target itself). ``reference`` is that direction (file, set or arrays); default ``own``;
    * ``"hidden_norm"`` — ``real`` gets norm ``mean‖h_l‖`` of the target at layer ``l``, so λ is a fraction of the
      mean hidden-state norm. ``reference`` is ``{layer: mean norm}`` (see :func:`mean_hidden_norms`).

    One factor per layer scales every control at that layer, so the controls keep their size relative to ``real``.
    """
    if isinstance(target, LoadedModel):
        hidden, n_tgt = target.hidden_size, target.n_layers
        layers = target.check_layers(layers)
    else:
        hidden, n_tgt = int(target[0]), int(target[1])
        bad = [l for l in layers if not -n_tgt <= int(l) < n_tgt]
        if bad:
            raise InjectionError(
                f"layers {bad} are out of range for a model with {n_tgt} decoder blocks "
                f"(valid 0..{n_tgt - 1}, or -{n_tgt}..-1)"
            )
        layers = sorted({int(l) % n_tgt for l in layers})
    if not layers:
        raise InjectionError("no layers to inject at; pass at least one layer")
    unknown = [c for c in controls if c not in CONTROLS]
    if unknown:
        raise InjectionError(f"unknown controls {unknown}; choose from {CONTROLS}")
    if filter not in FILTERS:
        raise InjectionError(f"unknown filter {filter!r}; choose from {FILTERS}")
    needs_cut = filter != "none" or any(c in ("highpass", "own_lowpass") for c in controls)
    if needs_cut and cutoff is None:
        raise InjectionError("the filter/controls need a cutoff; pass cutoff= (bins or a fraction)")
    if needs_cut:
        try:
            spectral.cutoff_bins(hidden, cutoff)
        except spectral.CutoffError as e:
            raise InjectionError(str(e)) from None
    ds = as_direction_set(direction)
    n_src = int(ds.meta.n_layers or 0)
    ds = ds.resolved(n_src or n_tgt)  # {-1: v} is the last block (of the source, else of the target)
    own_ds = None
    if "own_lowpass" in controls:
        if own is None:
            raise InjectionError("control 'own_lowpass' needs own= (a direction read from the target model itself)")
        own_ds = as_direction_set(own, "own direction")
        own_ds = own_ds.resolved(int(own_ds.meta.n_layers or 0) or n_tgt)
    vecs: dict[str, dict[int, np.ndarray]] = {c: {} for c in controls if c != "none"}
    src_map = {}
    for l in layers:
        s = source_layer(l, [k for k in ds.layers], n_src, n_tgt, layer_map)
        src_map[l] = s
        base = ds.vectors[s]
        what = f"direction (layer {s})"
        real = prepare_vector(base, hidden, resample=resample, filter=filter, cutoff=cutoff, what=what)
        if "real" in vecs:
            vecs["real"][l] = real
        if "unfiltered" in vecs:
            vecs["unfiltered"][l] = prepare_vector(base, hidden, resample=resample, what=what)
        if "highpass" in vecs:
            vecs["highpass"][l] = prepare_vector(
                base, hidden, resample=resample, filter="highpass", cutoff=cutoff, what=what
            )
        if "random" in vecs:
            vecs["random"][l] = random_like(real, seed, l)
        if "own_lowpass" in vecs:
            so = source_layer(l, own_ds.layers, int(own_ds.meta.n_layers or 0), n_tgt, layer_map)
            vecs["own_lowpass"][l] = prepare_vector(
                own_ds.vectors[so],
                hidden,
                resample=resample,
                filter="lowpass",
                cutoff=cutoff,
                what=f"own direction (layer {so})",
            )
    if match_norm:
        for c, per in vecs.items():
            for l, v in per.items():
                ref = np.linalg.norm(
                    prepare_vector(ds.vectors[src_map[l]], hidden, resample=resample, filter=filter, cutoff=cutoff)
                )
                per[l] = (v * (ref / np.linalg.norm(v))).astype(np.float32)
    ref_norms, scales = _strength_scales(
        strength_reference,
        reference if reference is not None else own,
        layers,
        vecs,
        ds,
        src_map,
        hidden,
        n_tgt,
        filter,
        cutoff,
        resample,
        layer_map,
    )
    for per in vecs.values():
        for l in per:
            per[l] = (per[l] * np.float32(scales[l])).astype(np.float32)
    norms = {c: {l: float(np.linalg.norm(v)) for l, v in per.items()} for c, per in vecs.items()}
    settings = {
        "filter": filter,
        "cutoff": cutoff,
        "resample": resample,
        "seed": seed,
        "layer_map": layer_map,
        "match_norm": match_norm,
        "source_hidden_size": ds.hidden_size,
        "target_hidden_size": hidden,
        "source_model": ds.meta.model_id,
        "cutoff_bins": spectral.cutoff_bins(hidden, cutoff) if needs_cut else None,
        "strength_reference": strength_reference,
        "reference_norms": ref_norms,
        "scales": scales,
    }
    if "none" in controls:
        vecs["none"] = {}
        norms["none"] = {}
    return InjectionVectors(vectors=vecs, src_layer=src_map, norms=norms, settings=settings)


def _strength_scales(
    mode: str,
    reference: Any,
    layers: Sequence[int],
    vecs: dict[str, dict[int, np.ndarray]],
    ds: DirectionSet,
    src_map: dict[int, int],
    hidden: int,
    n_tgt: int,
    filter: str,
    cutoff: int | float | None,
    resample: bool,
    layer_map: str,
) -> tuple[dict[int, float], dict[int, float]]:
    """``({layer: reference norm}, {layer: factor})`` for :func:`build_controls`' ``strength_reference``."""
    if mode not in STRENGTH_REFERENCES:
        raise InjectionError(f"unknown strength_reference {mode!r}; choose from {STRENGTH_REFERENCES}")
    base = {
        l: float(
            np.linalg.norm(
                prepare_vector(ds.vectors[src_map[l]], hidden, resample=resample, filter=filter, cutoff=cutoff)
            )
        )
        for l in layers
    }
    if mode == "source":
        return {l: base[l] for l in layers}, {l: 1.0 for l in layers}
    if reference is None:
        need = (
            "the target model's own direction (reference= or own=: a direction file read from the target)"
            if mode == "target_direction"
            else "{layer: mean ‖h‖} of the target (reference=mean_hidden_norms(model, prompts, layers))"
        )
        raise InjectionError(f"strength_reference={mode!r} needs {need}")
    if mode == "target_direction":
        tds = as_direction_set(reference, "target direction")
        if tds.hidden_size not in (None, 0, hidden):
            raise InjectionError(
                f"strength_reference='target_direction': the reference direction has "
                f"{tds.hidden_size} dims, the target {hidden}; pass a direction read from the target"
            )
        refs = {}
        for l in layers:
            so = source_layer(l, tds.layers, int(tds.meta.n_layers or 0), n_tgt, layer_map)
            refs[l] = float(
                np.linalg.norm(
                    prepare_vector(
                        tds.vectors[so],
                        hidden,
                        resample=False,
                        filter=filter,
                        cutoff=cutoff,
                        what=f"target direction (layer {so})",
                    )
                )
            )
    else:
        try:
            refs = {l: float(reference[l]) for l in layers}
        except (KeyError, TypeError, IndexError):
            have = sorted(reference) if isinstance(reference, Mapping) else type(reference).__name__
            raise InjectionError(
                f"strength_reference='hidden_norm' needs a mean hidden-state norm for every "
                f"injected layer {list(layers)}; got {have}"
            ) from None
        bad = {l: v for l, v in refs.items() if not (math.isfinite(v) and v > 0)}
        if bad:
            raise InjectionError(f"mean hidden norms must be finite and positive, got {bad}")
    return refs, {l: refs[l] / base[l] for l in layers}


def mean_hidden_norms(
    lm: LoadedModel,
    prompts: Sequence[str],
    layers: Sequence[int],
    *,
    images: Sequence[Any] | None = None,
    batch_size: int = 8,
    remote: bool | str | None = None,
) -> dict[int, float]:
    """Mean ``‖h_l‖`` over every real token of ``prompts`` (chat-templated strings) at each of ``layers``.

    The reference of ``strength_reference="hidden_norm"``: λ = 0.1 then adds a vector of 10% of a typical
    hidden state's norm at that layer. ``remote``: as for :func:`generate_steered`.
    """
    import nnsight
    import torch

    from cotscope.probes.collect import encode_batch

    layers = lm.check_layers(layers)
    if not prompts:
        raise InjectionError("mean_hidden_norms needs at least one prompt")
    mode = resolve_remote(lm, remote)
    envs = [lm.adapter.layers(lm.nnsight)[l] for l in layers]
    tot = {l: 0.0 for l in layers}
    count = 0
    for a in range(0, len(prompts), batch_size):
        enc = _move(
            encode_batch(
                lm, list(prompts[a : a + batch_size]), list(images[a : a + batch_size]) if images is not None else None
            ),
            "cpu" if mode else lm.device,
        )
        am = enc["attention_mask"].bool()
        with torch.no_grad():
            with lm.nnsight.trace({**enc, "use_cache": False}, backend=backend_for(lm.nnsight, mode)) as tracer:
                out = nnsight.save([])
                for env in envs:
                    out.append(torch.linalg.vector_norm(block_hidden(env.output).float(), dim=-1))
                tracer.stop()
        for l, n in zip(layers, out):
            tot[l] += float(n[am.to(n.device)].sum())  # each layer's norms live on that layer's device
        count += int(am.sum())
    return {l: tot[l] / count for l in layers}


# ----------------------------------------------------------------------------------------- per-row settings
@dataclasses.dataclass(frozen=True)
class RowSteer:
    """One batch row's injection: ``h' = h + lam·vectors[layer]`` at each of ``vectors``' layers."""

    vectors: Mapping[int, np.ndarray]
    lam: float = 0.0

    @classmethod
    def none(cls) -> RowSteer:
        """No injection."""
        return cls({}, 0.0)

    @classmethod
    def at(cls, per_layer: Mapping[int, np.ndarray], layers: Sequence[int], lam: float) -> RowSteer:
        """Inject ``per_layer[l]`` at every ``l`` in ``layers`` with strength ``lam``."""
        missing = [l for l in layers if l not in per_layer]
        if missing:
            raise InjectionError(f"no prepared vector for layers {missing} (have {sorted(per_layer)})")
        return cls({int(l): per_layer[l] for l in layers}, lam)

    @property
    def active(self) -> bool:
        return bool(self.vectors)


@dataclasses.dataclass
class RowResult:
    """What one row produced. Log-probabilities are natural logs under the (steered) model."""

    text: str
    token_ids: list[int]
    n_tokens: int
    stopped: bool  # the model ended with EOS within the budget
    logprob: float  # sum of log p of the free (non-forced) tokens
    forced_logprobs: list[float] | None = None
    gold_logprob: float | None = None  # sum over the tokens that spell the gold value
    answer_logprob: float | None = None  # sum over the whole forced answer string
    gold_argmax: bool | None = None  # every gold token was the model's top choice


def _validate_rows(lm: LoadedModel, steers: Sequence[RowSteer | None]) -> list[RowSteer]:
    out = []
    d, n = lm.hidden_size, lm.n_layers
    for r, s in enumerate(steers):
        s = RowSteer.none() if s is None else s
        if not isinstance(s, RowSteer):
            raise InjectionError(f"row {r}: expected a RowSteer or None, got {type(s).__name__}")
        check_lam(s.lam)
        for l, v in s.vectors.items():
            lm.check_layers([l])
            a = check_vector(v, f"row {r} vector at layer {l}")
            if a.shape[0] != d:
                raise DirectionFileError(
                    f"hidden-size mismatch: row {r}'s vector at layer {l} has {a.shape[0]} dims, {lm.model_id} has "
                    f"{d}. Fix: prepare it with prepare_vector(v, {d}) (Fourier resampling)."
                )
        out.append(RowSteer({int(l) % n: v for l, v in s.vectors.items()}, float(s.lam)))
    return out


# ----------------------------------------------------------------------------------------- decoding
class BudgetDecoder:
    """Budgeted decoding with teacher-forced answers, as a local logits processor.

    Per row: pick the next token (greedy, or sampling with the row's own seeded generator); stop at EOS or
    after ``budget`` free tokens; then, if the row has a forced answer, emit its tokens one by one (teacher
    forcing under the KV cache) while recording their log-probabilities; finally emit EOS. The returned
    scores are ``0`` for the chosen token and ``-inf`` elsewhere, so HF's greedy step follows the choice.

    The logic is :func:`probes.traced.decode_step` on plain tensors: :func:`generate_steered` runs that function
    *inside* its nnsight trace (so it also runs on a remote server) and hands the state back to
    :meth:`results`; this class is the same decoding as an HF ``LogitsProcessor`` for plain ``generate`` calls.
    """

    def __init__(
        self,
        n_rows: int,
        budget: int,
        eos_ids: Sequence[int],
        forced: Sequence[ForcedAnswer | None] | None,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seeds: Sequence[int] | None = None,
        stop_at_eos: bool = True,
    ) -> None:
        self.B, self.budget = n_rows, int(budget)
        self.forced = list(forced) if forced is not None else [None] * n_rows
        self.params = traced.decode_params(
            n_rows,
            budget,
            eos_ids,
            [None if f is None else f.ids for f in self.forced],
            temperature=temperature,
            top_p=top_p,
            seeds=seeds,
            stop_at_eos=stop_at_eos,
        )
        self.state: dict[str, Any] = {}

    def __call__(self, input_ids, scores):
        return traced.decode_step(self.state, scores, self.params)

    def results(self, tokenizer: Any) -> list[RowResult]:
        """One :class:`RowResult` per row from the decoding state (after generation)."""
        import torch

        st = {k: (v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in self.state.items()}
        if not st:
            st = traced.decode_init(self.params, "cpu")
        out = []
        for r in range(self.B):
            n = int(st["nfree"][r])
            ids = st["free"][r, :n].tolist()
            res = RowResult(
                text=tokenizer.decode(ids, skip_special_tokens=True),
                token_ids=ids,
                n_tokens=n,
                stopped=bool(st["stopped"][r]),
                logprob=float(st["free_lp"][r]),
            )
            fa = self.forced[r]
            if fa is not None:
                k = int(st["fidx"][r])
                if k != len(fa.ids):
                    raise RuntimeError(
                        f"row {r}: forced answer was cut after {k} of {len(fa.ids)} tokens; raise max_new_tokens"
                    )
                lps = [float(x) for x in st["forced_lp"][r, :k]]
                top = [bool(x) for x in st["forced_top"][r, :k]]
                res.forced_logprobs = lps
                res.answer_logprob = float(sum(lps))
                res.gold_logprob = float(sum(lp for lp, g in zip(lps, fa.gold_mask) if g))
                res.gold_argmax = all(t for t, g in zip(top, fa.gold_mask) if g)
            out.append(res)
        return out


def eos_token_ids(lm: LoadedModel) -> list[int]:
    """EOS ids from the generation config and the tokenizer (first = the one emitted to stop)."""
    ids: list[int] = []
    gc = getattr(lm.hf, "generation_config", None)
    e = getattr(gc, "eos_token_id", None) if gc is not None else None
    for x in ([e] if isinstance(e, int) else list(e or [])) + [lm.tokenizer.eos_token_id]:
        if x is not None and int(x) not in ids:
            ids.append(int(x))
    if not ids:
        raise InjectionError(f"{lm.model_id} has no EOS token id (generation config and tokenizer); set one")
    return ids


_NEUTRAL = dict(
    do_sample=False,
    num_beams=1,
    temperature=None,
    top_k=None,
    top_p=None,
    min_p=None,
    typical_p=None,
    epsilon_cutoff=None,
    eta_cutoff=None,
    repetition_penalty=None,
    encoder_repetition_penalty=None,
    no_repeat_ngram_size=None,
    encoder_no_repeat_ngram_size=None,
    bad_words_ids=None,
    min_length=None,
    min_new_tokens=None,
    suppress_tokens=None,
    begin_suppress_tokens=None,
    forced_bos_token_id=None,
    forced_eos_token_id=None,
    sequence_bias=None,
    exponential_decay_length_penalty=None,
    renormalize_logits=False,
    length_penalty=None,
    diversity_penalty=None,
    num_beam_groups=None,
    guidance_scale=None,
    watermarking_config=None,
    max_length=None,
    stop_strings=None,
    num_return_sequences=1,
    output_scores=False,
    return_dict_in_generate=False,
)


def _generation_config(lm: LoadedModel, max_new_tokens: int, eos: list[int] | None, pad: int):
    from transformers import GenerationConfig

    gc = copy.deepcopy(getattr(lm.hf, "generation_config", None) or GenerationConfig())
    for k, v in _NEUTRAL.items():
        try:
            setattr(gc, k, v)
        except Exception:  # attribute not settable in this transformers version
            pass
    gc.max_new_tokens = int(max_new_tokens)
    gc.eos_token_id = eos
    gc.pad_token_id = pad
    return gc


# ----------------------------------------------------------------------------------------- the injector
class _Injector:
    """Per-layer additive tensors and per-step position masks for one batch, each on its layer's device and dtype.

    ``placement[l]`` is ``(device, dtype)`` of decoder block ``l`` (``device`` ``None`` = unknown here, e.g. a
    remote model: the tensors stay on the CPU in float32 and :func:`probes.traced.steer` moves and casts them).
    """

    def __init__(
        self,
        steers: Sequence[RowSteer],
        attention_mask,
        prompt_width: int,
        positions: tuple[str, ...],
        renorm: bool,
        placement: Mapping[int, tuple[Any, Any]],
    ) -> None:
        import torch

        B = len(steers)
        self.renorm = renorm
        self.layers = sorted({l for s in steers for l in s.vectors})
        am_cpu = attention_mask.cpu().bool()
        T_full = am_cpu.shape[1]
        T0 = prompt_width  # width of the prompt pass (1 when the prefix is shared)
        lens = am_cpu.sum(1)
        m0 = torch.zeros(B, T0, dtype=torch.bool)
        if "first" in positions:
            idx = (T0 - lens).clamp(min=0)
            m0[torch.arange(B), idx] = True
        if "last_prompt" in positions:
            m0[:, -1] = True
        if "prompt" in positions:
            m0 |= am_cpu[:, T_full - T0 :]
        gen = ("first" in positions) or ("generated" in positions)
        mask_gen = torch.full((B, 1), gen, dtype=torch.bool)
        self.steps_needed = None if gen else 1  # prompt-only positions: only step 0 is touched
        self.add, self.masks, self.any = {}, {}, {}
        for l in self.layers:
            dev, dtype = placement.get(l, (None, None))
            if dev is None:
                dev, dtype = torch.device("cpu"), torch.float32
            d = next(len(s.vectors[l]) for s in steers if l in s.vectors)
            add = np.zeros((B, d), dtype=np.float32)
            on = np.zeros(B, dtype=bool)
            for r, s in enumerate(steers):
                if l in s.vectors:
                    add[r] = np.float32(s.lam) * np.asarray(s.vectors[l], dtype=np.float32)
                    on[r] = True
            on_t = torch.from_numpy(on)
            self.add[l] = torch.from_numpy(add).to(device=dev, dtype=dtype)
            first, later = m0 & on_t[:, None], mask_gen & on_t[:, None]
            self.masks[l] = (first.to(dev), later.to(dev))
            self.any[l] = (bool(first.any()), bool(later.any()))

    def plan(self) -> tuple[list[int], list[Any], list[Any], list[Any], list[bool], list[bool]]:
        """Plain lists for the trace: layers, additive tensors, prompt-pass masks, later-step masks, and whether
        each layer is touched at all on the prompt pass / later steps."""
        ls = list(self.layers)
        return (
            ls,
            [self.add[l] for l in ls],
            [self.masks[l][0] for l in ls],
            [self.masks[l][1] for l in ls],
            [self.any[l][0] for l in ls],
            [self.any[l][1] for l in ls],
        )


def steer_hidden(h, add, mask, renorm: bool = True):
    """The injection formula on one tensor (exposed for hooks and tests): :func:`probes.traced.steer`.

    ``h`` ``[B, T, d]``, ``add`` ``[B, d]`` (= ``λ·v`` per row), ``mask`` ``[B, T]`` bool.
    """
    return traced.steer(h, add, mask, renorm)


def _groups(texts: Sequence[str], images: Sequence[Any] | None) -> list[tuple[int, int]]:
    """Runs of consecutive identical prompts (same text and same image object): ``[(start, stop)]``."""
    out, start = [], 0
    for i in range(1, len(texts) + 1):
        if i == len(texts) or texts[i] != texts[start] or (images is not None and images[i] is not images[start]):
            out.append((start, i))
            start = i
    return out


def _move(enc: Mapping[str, Any], device: Any) -> dict[str, Any]:
    return {k: (v.to(device) if hasattr(v, "to") else v) for k, v in dict(enc).items()}


def generate_steered(
    lm: LoadedModel,
    prompts: Sequence[str],
    steers: Sequence[RowSteer | None],
    *,
    images: Sequence[Any] | None = None,
    positions: PositionsLike = "first",
    renorm: bool = True,
    budget: int = 64,
    forced: Sequence[ForcedAnswer | None] | None = None,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seeds: Sequence[int] | None = None,
    share_prefix: bool | str = "auto",
    stop_at_eos: bool = True,
    remote: bool | str | None = None,
) -> list[RowResult]:
    """Generate for every row (one ``generate`` call), each row with its own injection.

    Args:
        prompts: one chat-templated prompt per row (repeat a prompt for several settings; consecutive
            repeats share the prefix when allowed).
        steers: one :class:`RowSteer` (or ``None`` = no injection) per row.
        images: one PIL image per row for VLMs (``None`` for text-only).
        positions: see the module docstring; a tuple combines positions.
        renorm: rescale each steered token to its original norm.
        budget: at most this many free tokens per row (the reasoning budget).
        forced: per row, a :class:`~probes.evaluate.ForcedAnswer` to teacher-force after the free tokens
            (``None`` = no scoring for that row).
        temperature, top_p, seeds: ``temperature=0`` is greedy; otherwise per-row seeded sampling.
        share_prefix: ``"auto"`` shares when possible (text-only LLMs; positions ``last_prompt``/``generated``);
            ``True`` demands it (text prompts; error if impossible); ``False`` never.
        stop_at_eos: ``False`` keeps generating through EOS (every row gets exactly ``budget`` free tokens).
        remote: ``False`` (here), ``True`` (NDIF through nnsight) or ``"local"`` (nnsight's local simulation of the
            remote path); ``None`` = the model's default (``load_model(..., remote=)``). The whole grid of rows is
            one request. Prefix sharing is local-only (``"auto"`` turns it off remotely).
    """
    import torch

    from cotscope.probes.collect import encode_batch

    n = len(prompts)
    if n == 0:
        raise InjectionError("no prompts given; pass at least one prompt")
    if len(steers) != n:
        raise InjectionError(f"{n} prompts but {len(steers)} row settings; pass one RowSteer (or None) per row")
    if images is not None and len(images) != n:
        raise InjectionError(f"{n} prompts but {len(images)} images; pass one image per row (or images=None)")
    if forced is not None and len(forced) != n:
        raise InjectionError(f"{n} prompts but {len(forced)} forced answers; pass one per row (or None)")
    if seeds is not None and len(seeds) != n:
        raise InjectionError(f"{n} prompts but {len(seeds)} seeds; pass one seed per row")
    if int(budget) < 0:
        raise InjectionError(f"budget must be >= 0 tokens, got {budget}")
    if not (math.isfinite(float(temperature)) and temperature >= 0):
        raise InjectionError(f"temperature must be finite and >= 0, got {temperature}")
    if not 0 < float(top_p) <= 1:
        raise InjectionError(f"top_p must be in (0, 1], got {top_p}")
    pos = normalize_positions(positions)
    rows = _validate_rows(lm, steers)
    has_img = images is not None and any(im is not None for im in images)
    if has_img and not lm.is_vlm:
        raise InjectionError(f"{lm.model_id} is a text-only model but images were given")
    can_share = (not has_img) and set(pos) <= _PREFIX_SAFE
    if share_prefix == "auto" and lm.is_vlm:
        can_share = False  # VLM families keep per-call state (e.g. M-RoPE deltas); share only when asked
    if share_prefix is True and not can_share:
        raise InjectionError(
            f"share_prefix=True needs text-only prompts and positions within "
            f"{sorted(_PREFIX_SAFE)} (got {pos}, images={'yes' if has_img else 'no'})"
        )
    share = can_share and share_prefix in (True, "auto")
    max_forced = max((len(f.ids) for f in (forced or []) if f is not None), default=0)
    max_new = int(budget) + max_forced
    if max_new < 1:
        raise InjectionError("nothing to generate: budget is 0 and no answer is forced")

    mode = resolve_remote(lm, remote)
    if mode and share:
        if share_prefix is True:
            raise InjectionError(
                "share_prefix=True runs the shared prompt prefix as a separate local forward; it "
                "is not available with remote execution. Pass share_prefix=False (or 'auto')."
            )
        share = False
    eos = eos_token_ids(lm)
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else eos[0]
    dev = lm.device
    enc = _move(encode_batch(lm, list(prompts), list(images) if has_img else None), dev)
    am = enc["attention_mask"]
    check_context(
        lm,
        am.sum(1).tolist(),
        new_tokens=max_new,
        name=lambda i: f"prompt row {i}",
        fix=f"shorten the prompt, or lower budget (now {int(budget)} free tokens"
        + (f" + {max_forced} forced answer tokens)" if max_forced else ")"),
    )
    T_full = am.shape[1]
    gen_kwargs: dict[str, Any] = {}
    prompt_width = T_full
    if share:
        groups = _groups(prompts, None)
        firsts = torch.tensor([a for a, _ in groups], device=dev)
        reps = torch.tensor([b - a for a, b in groups], device=dev)
        with torch.no_grad():
            pre_am = am[firsts, :-1]
            pos_ids = (pre_am.long().cumsum(-1) - 1).masked_fill(pre_am == 0, 0)
            out = lm.hf(
                input_ids=enc["input_ids"][firsts, :-1], attention_mask=pre_am, position_ids=pos_ids, use_cache=True
            )
        cache = out.past_key_values
        cache.reorder_cache(torch.repeat_interleave(torch.arange(len(groups), device=dev), reps))
        gen_kwargs["past_key_values"] = cache
        prompt_width = 1
    touched = sorted({l for s in rows for l in s.vectors})
    placement = {} if mode else {l: (lm.layer_device(l), lm.layer_dtype(l)) for l in touched}
    inj = _Injector(rows, am, prompt_width, pos, renorm, placement)
    dec = BudgetDecoder(
        n, budget, eos, forced, temperature=temperature, top_p=top_p, seeds=seeds, stop_at_eos=stop_at_eos
    )
    gc = _generation_config(lm, max_new, eos if stop_at_eos else None, pad)
    dec.state = _traced_generate(lm, enc, inj, gc, dec.params, gen_kwargs, mode)
    return dec.results(lm.tokenizer)


def _traced_generate(
    lm: LoadedModel, enc: dict, inj: _Injector, gc: Any, params: dict, gen_kwargs: dict, remote: bool | str
) -> dict:
    """The traced ``generate``: at every forward of the decode loop the chosen layers are steered
    (:func:`probes.traced.steer`) and the next token is chosen by :func:`probes.traced.decode_step` on the logits.
    Everything inside the trace is torch on tensors (no local objects), so it also runs remotely.
    Returns the decoding state (CPU tensors)."""
    import nnsight
    import torch

    nm = lm.nnsight
    layers, adds, m0s, mgs, any0, anyg = inj.plan()
    envs = [lm.adapter.layers(nm)[l] for l in layers]
    renorm, prompt_only = inj.renorm, inj.steps_needed == 1
    gen_env = lm.adapter.generator(
        nm
    )  # the module whose output holds the logits (outside the trace: no cotscope inside)
    backend = backend_for(nm, remote, "generate")
    with warnings.catch_warnings():
        # an open-ended tracer.iter[:] ends by parking one request past the last step: expected, not a problem
        warnings.filterwarnings("ignore", message=".*was never reached.*")
        with torch.no_grad():
            with nm.generate(enc, generation_config=gc, backend=backend, **gen_kwargs) as tracer:
                state = nnsight.save({})
                for step in tracer.iter[:]:
                    if step == 0 or not prompt_only:
                        for env, add, m0, mg, a0, ag in zip(envs, adds, m0s, mgs, any0, anyg):
                            if a0 if step == 0 else ag:
                                env.output = steer(env.output, add, m0 if step == 0 else mg, renorm)
                    out = gen_env.output
                    out["logits"] = decode_step(state, out["logits"][:, -1], params)[:, None, :]
    return {k: (v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in state.items()}


def inject_generate(
    lm: LoadedModel,
    prompts: Sequence[str],
    direction: Any,
    layers: Sequence[int],
    lam: float,
    *,
    images: Sequence[Any] | None = None,
    positions: PositionsLike = "first",
    renorm: bool = True,
    resample: bool = True,
    filter: str = "none",
    cutoff: int | float | None = None,
    layer_map: str = "auto",
    budget: int = 64,
    strength_reference: str = "source",
    reference: Any = None,
    **kw: Any,
) -> list[RowResult]:
    """One setting for every prompt: inject ``direction`` at ``layers`` with strength ``lam``.

    ``strength_reference``/``reference``: what λ is relative to (see :func:`build_controls`); with
    ``"hidden_norm"`` and no ``reference`` the mean hidden norms are measured on ``prompts``.

    >>> out = inject_generate(lm, [prompt], "dir.safetensors", [12], 0.5, budget=24)   # doctest: +SKIP
    """
    check_lam(lam)
    if strength_reference == "hidden_norm" and reference is None:
        reference = mean_hidden_norms(lm, prompts, layers, images=images)
    iv = build_controls(
        direction,
        lm,
        layers,
        controls=("real",),
        filter=filter,
        cutoff=cutoff,
        resample=resample,
        layer_map=layer_map,
        strength_reference=strength_reference,
        reference=reference,
    )
    steer = RowSteer.at(iv.vectors["real"], lm.check_layers(layers), lam)
    return generate_steered(
        lm, prompts, [steer] * len(prompts), images=images, positions=positions, renorm=renorm, budget=budget, **kw
    )
