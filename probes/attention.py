"""Capture the attention row of every generated step, for chosen layers and heads, split by key type.

How layers are switched (transformers 5.23): each attention module looks up its kernel at every forward from
``self.config._attn_implementation`` through ``ALL_ATTENTION_FUNCTIONS``. All layers of a language model share one
config object, so cotscope gives only the *chosen* layers' attention modules a shallow config copy whose
implementation is ``"cotscope_eager"``: a registered function that converts whatever mask the model built for its
own kernel (sdpa boolean / ``None`` = causal, eager additive, flash 2-D padding) into an additive mask, runs the
model file's own ``eager_attention_forward``, and keeps only the **query row** of the step (last query position)
for the chosen heads. The other layers keep their kernel (usually sdpa) and never materialise weights.

Step ``s`` is the forward pass that produces generated token ``s``: its query is the last prompt token
(``s = 0``) or generated token ``s-1``, and it sees ``prompt_len + s`` keys. Keys are typed as image tokens,
system/template text, question text, or previously generated text (:data:`KEY_TYPES`).

Switch modes: ``"layers"`` (default, only chosen layers eager), ``"rows"`` (chosen layers keep their own kernel for
their output and only the last query row is computed eagerly: no ``T × T`` matrix at all, and the generation is
exactly the uncaptured one), ``"model"`` (every layer eager, chosen layers recorded; the all-eager baseline),
``"none"`` (the model is already eager; weights are read from the attention modules' outputs with forward hooks),
``"traced"`` (as ``"rows"``, but computed inside an nnsight generation trace from each chosen layer's
attention-interface inputs, read through ``.source``: nothing is registered in this process, so it is the mode that
runs remotely on NDIF and the default there; it equals ``"rows"`` bit for bit).

>>> from cotscope.probes.models.loading import load_model                                  # doctest: +SKIP
>>> lm = load_model("embedded:smolvlm")                                           # doctest: +SKIP
>>> req = [CaptureRequest("a", "How many shapes?\\nLet's think step by step.", image=img)]   # doctest: +SKIP
>>> run = capture_run(lm, req, "runs/x/attention/store", layers=[10, 20], max_new_tokens=64)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cotscope.analyses.attention_store import (
    GENERATED,
    IMAGE,
    KEY_TYPES,
    QUESTION,
    TEMPLATE,
    AttentionRun,
    AttentionRunWriter,
)
from cotscope.errors import CotscopeError
from cotscope.probes.models.context import check_context
from cotscope.probes.models.loading import LoadedModel

IMPL_NAME = "cotscope_eager"
ROW_IMPL_NAME = "cotscope_row"
SWITCH_MODES = ("layers", "rows", "model", "none", "traced")


class AttentionCaptureError(CotscopeError):
    """A bad capture request (layers, heads, prompts, settings)."""


class EagerAttentionUnavailable(AttentionCaptureError):
    """The model cannot give eager attention weights for a requested layer."""


@dataclasses.dataclass
class CaptureRequest:
    """One prompt to generate from.

    Attributes:
        id: a name for this trace (unique within a run).
        prompt: the user text (without image placeholder; it is added when ``image`` is given).
        image: a PIL image or ``None``.
        question: the substring of ``prompt`` whose tokens count as *question* keys; ``None`` = the whole prompt.
            Everything else that is neither image nor generated counts as *template* (system prompt, chat
            markup, image-boundary tokens, and any cue outside ``question``).
        condition: a free label, e.g. ``"cot"`` / ``"direct"``.
        meta: extra JSON-able fields stored with the trace (item id, answer …).
    """

    id: str
    prompt: str
    image: Any = None
    question: str | None = None
    condition: str = ""
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    def plan_record(self) -> dict[str, Any]:
        from cotscope.probes.collect import image_sha256

        return {
            "id": self.id,
            "prompt": self.prompt,
            "question": self.question,
            "condition": self.condition,
            "image_sha256": image_sha256(self.image),
            "meta": self.meta,
        }


# ------------------------------------------------------------------------------------------- layer switching

_ACTIVE: dict[int, Callable[[Any], None]] = {}  # id(attention module) -> callback(weights)
_ORIGINAL: dict[int, Callable[..., Any]] = {}  # id(attention module) -> its kernel before the switch ("rows" mode)
_EAGER_FNS: dict[type, Callable[..., Any]] = {}


def _module_eager(module: Any) -> Callable[..., Any]:
    """The ``eager_attention_forward`` of the modeling file that defines ``module``'s class."""
    cls = type(module)
    if cls not in _EAGER_FNS:
        fn = getattr(sys.modules.get(cls.__module__), "eager_attention_forward", None)
        if fn is None:
            raise EagerAttentionUnavailable(
                f"{cls.__name__} ({cls.__module__}) has no eager_attention_forward, so cotscope cannot switch it to "
                "eager per layer. Fix: load the model with attn_implementation='eager' "
                "(load_model(spec, attn_implementation='eager')) and capture with switch='none'."
            )
        _EAGER_FNS[cls] = fn
    return _EAGER_FNS[cls]


def additive_mask(mask: Any, query: Any, key: Any, module: Any = None) -> Any:
    """Turn the mask a model built for its own kernel into the additive float mask eager attention expects.

    ``None`` (sdpa's "pure causal, no padding") becomes a bottom-right-aligned causal mask when there is more than
    one query (a single query sees every cached key); boolean masks become ``0 / finfo.min``; 2-D padding masks
    (flash style) are combined with causality; float masks pass through.
    """
    import torch

    q_len, kv_len = query.shape[-2], key.shape[-2]
    dtype = query.dtype
    neg = torch.finfo(dtype).min
    causal = bool(getattr(module, "is_causal", True))
    if mask is None:
        if q_len == 1 or not causal:
            return None
        i = torch.arange(q_len, device=query.device)[:, None]
        j = torch.arange(kv_len, device=query.device)[None, :]
        allowed = j <= i + (kv_len - q_len)
        return torch.where(allowed, 0.0, neg).to(dtype)[None, None]
    if not isinstance(mask, torch.Tensor):
        raise EagerAttentionUnavailable(
            f"the model passes a {type(mask).__name__} attention mask (flex attention?), which eager attention "
            "cannot use. Fix: load the model with attn_implementation='sdpa' or 'eager'."
        )
    if mask.dim() == 2:  # flash-style [B, kv] padding mask (1 = keep)
        keep = mask[:, None, None, -kv_len:].bool()
        if causal and q_len > 1:
            i = torch.arange(q_len, device=mask.device)[:, None]
            j = torch.arange(kv_len, device=mask.device)[None, :]
            keep = keep & (j <= i + (kv_len - q_len))[None, None]
        return torch.where(keep, 0.0, neg).to(dtype)
    if mask.dtype == torch.bool:
        return torch.where(mask, 0.0, neg).to(dtype)
    return mask


_MASK_CACHE: list[Any] = []  # [(mask object, q_len, kv_len, dtype, device, causal), converted] of the last call


def _cached_additive_mask(mask: Any, query: Any, key: Any, module: Any) -> Any:
    """:func:`additive_mask`, converted once per forward pass: all layers receive the same mask object.

    The cache holds a reference to the source mask, so its identity cannot be reused by another tensor while cached;
    it is cleared when :func:`eager_modules` exits.
    """
    k = (query.shape[-2], key.shape[-2], query.dtype, query.device, bool(getattr(module, "is_causal", True)))
    if _MASK_CACHE and _MASK_CACHE[0][0] is mask and _MASK_CACHE[0][1:] == k:
        return _MASK_CACHE[1]
    out = additive_mask(mask, query, key, module)
    _MASK_CACHE[:] = [(mask, *k), out]
    return out


def last_row_mask(mask: Any, query: Any, key: Any) -> Any:
    """The additive mask of the last query row only (:func:`probes.traced.last_row_mask`, shared with the traced
    capture); a non-tensor mask (flex attention) raises :class:`EagerAttentionUnavailable`."""
    from cotscope.probes import traced

    try:
        return traced.last_row_mask(mask, query, key)
    except TypeError as e:
        raise EagerAttentionUnavailable(str(e)) from None


def _recording_eager(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, **kwargs: Any):
    """``"cotscope_eager"``: eager attention on any incoming mask, recording the query row when active."""
    out, weights = _module_eager(module)(
        module, query, key, value, _cached_additive_mask(attention_mask, query, key, module), **kwargs
    )
    callback = _ACTIVE.get(id(module))
    if callback is not None:
        callback(weights)
    return out, weights


def _recording_row(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, **kwargs: Any):
    """``"cotscope_row"``: the layer output from the module's original kernel; eager weights for the last query row
    only (the model file's own eager function on ``query[..., -1:, :]``: rows of attention are independent)."""
    original = _ORIGINAL.get(id(module)) or _module_eager(module)
    out = original(module, query, key, value, attention_mask, **kwargs)
    callback = _ACTIVE.get(id(module))
    if callback is not None:
        _, weights = _module_eager(module)(
            module, query[:, :, -1:, :], key, value, last_row_mask(attention_mask, query, key), **kwargs
        )
        callback(weights)
    return out


def _register() -> None:
    from transformers import AttentionInterface

    if IMPL_NAME not in AttentionInterface._global_mapping:
        AttentionInterface.register(IMPL_NAME, _recording_eager)
    if ROW_IMPL_NAME not in AttentionInterface._global_mapping:
        AttentionInterface.register(ROW_IMPL_NAME, _recording_row)


class RowRecorder:
    """Collects, per captured layer, the last-query row ``[B, n_heads, K]`` (float32, CPU) of every forward."""

    def __init__(self, layers: Sequence[int], heads: Sequence[int]) -> None:
        self.layers = list(layers)
        self.heads = list(heads)
        self.rows: dict[int, list[Any]] = {l: [] for l in self.layers}
        self._head_idx = None

    def record(self, layer: int, weights: Any) -> None:
        import torch

        if weights is None:
            raise EagerAttentionUnavailable(
                f"layer {layer} returned no attention weights. Fix: capture with switch='layers' (default), or load "
                "the model with attn_implementation='eager' (load_model(spec, attn_implementation='eager'))."
            )
        if self._head_idx is None or self._head_idx.device != weights.device:
            self._head_idx = torch.tensor(self.heads, device=weights.device)
        row = weights[:, :, -1, :].index_select(1, self._head_idx)  # only the query row, only the chosen heads
        self.rows[layer].append(row.detach().to("cpu", torch.float32))

    @property
    def n_steps(self) -> int:
        counts = {len(v) for v in self.rows.values()}
        return counts.pop() if len(counts) == 1 else -1

    def held_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for v in self.rows.values() for t in v)


def _attention_modules(loaded: LoadedModel, layers: Sequence[int]) -> list[Any]:
    mods = []
    for i in layers:
        attn = getattr(loaded.layers()[i], "self_attn", None)
        if attn is None:
            raise EagerAttentionUnavailable(
                f"decoder layer {i} of {loaded.model_id} has no .self_attn module, so cotscope cannot find its "
                "attention. Fix: capture from a model family with standard HF decoder layers."
            )
        mods.append(attn)
    return mods


def check_request(
    loaded: LoadedModel, layers: Sequence[int] | None, heads: Sequence[int] | None
) -> tuple[list[int], list[int]]:
    """Normalise ``layers`` / ``heads`` (``None`` = all); refuse out-of-range or empty selections."""
    n_layers = loaded.n_layers
    if layers is not None and len(list(layers)) == 0:
        raise AttentionCaptureError("layers is empty: pass layer indices, or None for every layer")
    try:
        layers_ = loaded.check_layers(range(n_layers) if layers is None else layers)
    except ValueError as e:
        raise AttentionCaptureError(str(e)) from None
    n_heads = int(loaded.text_config.num_attention_heads)
    if heads is None:
        heads_ = list(range(n_heads))
    else:
        heads_ = []
        for h in heads:
            hi = int(h) + n_heads if int(h) < 0 else int(h)
            if not 0 <= hi < n_heads:
                raise AttentionCaptureError(
                    f"head {h} is out of range for {loaded.model_id} with {n_heads} query heads "
                    f"per layer (valid 0..{n_heads - 1}, or -{n_heads}..-1)"
                )
            heads_.append(hi)
        heads_ = sorted(set(heads_))
        if not heads_:
            raise AttentionCaptureError("heads is empty: pass head indices, or None for every head")
    return layers_, heads_


@contextlib.contextmanager
def eager_modules(
    modules: Sequence[Any], callbacks: Sequence[Callable[[Any], None]], row_only: bool = False
) -> Iterator[None]:
    """Switch just ``modules`` (attention modules) to eager attention, calling ``callbacks[i]`` with the weights
    ``[B, heads, q, k]`` of every forward of ``modules[i]``; each module gets a shallow config copy whose
    implementation is ``"cotscope_eager"``; everything is restored on exit (also after an error).

    ``row_only``: keep each module's own kernel for its output and compute eager weights for the last query row
    only (``q = 1``): no ``T × T`` matrix, and the model computes exactly what it computes uncaptured.
    """
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    _register()
    for m in modules:
        if not hasattr(m, "config") or not hasattr(m.config, "_attn_implementation"):
            raise EagerAttentionUnavailable(
                f"{type(m).__name__} has no config with an attention implementation, so it cannot be switched per "
                "layer. Fix: load the model with attn_implementation='eager' and capture with switch='none'."
            )
        _module_eager(m)
    saved = []
    try:
        for m, cb in zip(modules, callbacks):
            saved.append((m, m.config))
            if row_only:
                impl = m.config._attn_implementation
                _ORIGINAL[id(m)] = (
                    _module_eager(m)
                    if impl in (None, "eager", IMPL_NAME, ROW_IMPL_NAME)
                    else ALL_ATTENTION_FUNCTIONS[impl]
                )
            new_cfg = copy.copy(m.config)
            new_cfg._attn_implementation_internal = ROW_IMPL_NAME if row_only else IMPL_NAME
            m.config = new_cfg
            _ACTIVE[id(m)] = cb
        yield
    finally:
        for m, cfg in reversed(saved):
            m.config = cfg
            _ACTIVE.pop(id(m), None)
            _ORIGINAL.pop(id(m), None)
        _MASK_CACHE.clear()


@contextlib.contextmanager
def recording(
    loaded: LoadedModel, layers: Sequence[int] | None = None, heads: Sequence[int] | None = None, switch: str = "layers"
) -> Iterator[RowRecorder]:
    """Context in which every forward of ``loaded.hf`` records the query rows of ``layers`` × ``heads``.

    >>> with recording(lm, layers=[3], heads=[0, 1]) as rec:     # doctest: +SKIP
    ...     lm.hf(**enc)
    >>> rec.rows[3][0].shape                                     # [B, 2, T]   # doctest: +SKIP
    """
    if switch not in SWITCH_MODES:
        raise AttentionCaptureError(f"unknown switch mode {switch!r}; choose from {SWITCH_MODES}")
    if switch == "traced":
        raise AttentionCaptureError(
            "switch='traced' records inside an nnsight generation, not around your own forward; use capture_batch "
            "or capture_run with switch='traced', or recording() with 'layers'/'rows'/'model'/'none'"
        )
    layers_, heads_ = check_request(loaded, layers, heads)
    rec = RowRecorder(layers_, heads_)
    mods = _attention_modules(loaded, layers_)
    restore: list[Callable[[], None]] = []
    try:
        if switch == "none":
            for i, m in zip(layers_, mods):

                def hook(_m, _a, out, _i=i):
                    w = out[1] if isinstance(out, tuple) and len(out) > 1 else None
                    if w is None:
                        impl = getattr(getattr(_m, "config", None), "_attn_implementation", "?")
                        raise EagerAttentionUnavailable(
                            f"layer {_i} runs attention {impl!r}, which returns no weights. Fix: capture with "
                            "switch='layers' (the default switches only the chosen layers to eager), or load the "
                            "model with attn_implementation='eager'."
                        )
                    rec.record(_i, w)

                h = m.register_forward_hook(hook)
                restore.append(h.remove)
        else:
            if switch == "model":
                text_cfgs = {id(m.config): m.config for m in _attention_modules(loaded, range(loaded.n_layers))}
                for cfg in text_cfgs.values():
                    old = cfg._attn_implementation_internal
                    cfg._attn_implementation_internal = "eager"
                    restore.append(lambda cfg=cfg, old=old: setattr(cfg, "_attn_implementation_internal", old))
            stack = contextlib.ExitStack()
            restore.append(stack.close)
            stack.enter_context(
                eager_modules(mods, [lambda w, i=i: rec.record(i, w) for i in layers_], row_only=switch == "rows")
            )
        yield rec
    finally:
        for fn in reversed(restore):
            fn()


# ------------------------------------------------------------------------------------------- prompts and key types


def render_prompt(loaded: LoadedModel, prompt: str, has_image: bool) -> str:
    """The chat-templated text (with the family's image placeholder when ``has_image``) ending in the generation prompt."""
    content = prompt
    if has_image:
        from cotscope.probes.models.processors import image_prompt

        if loaded.processor is None:
            raise AttentionCaptureError(
                f"{loaded.model_id} has no processor, so it cannot take images; load a VLM or drop the image"
            )
        content = image_prompt(loaded.processor, prompt)
    owner = (
        loaded.processor
        if (loaded.processor is not None and getattr(loaded.processor, "chat_template", None))
        else loaded.tokenizer
    )
    if getattr(owner, "chat_template", None) is None:
        return content
    return owner.apply_chat_template([{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True)


def classify_prompt_tokens(
    tokenizer: Any, ids: Sequence[int], text: str, question: str | None, image_mask: np.ndarray
) -> tuple[np.ndarray, bool]:
    """Key type of every prompt token: image (from ``image_mask``), question (tokens of ``question``'s span in
    ``text``), template (the rest). Returns ``(codes int8, question_found)``.

    ``ids`` are the model-input ids of ``text`` after the processor expanded the image placeholder; the question's
    tokens are located by tokenizing ``text`` with character offsets and aligning its common prefix and suffix with
    ``ids`` (the expansion sits in between). Pass ``text`` as the processor sees it, including any text it appends
    (the adapter's ``processor_suffix``).
    """
    ids = [int(i) for i in ids]
    types = np.full(len(ids), TEMPLATE, dtype=np.int8)
    types[np.asarray(image_mask, dtype=bool)] = IMAGE
    if not question:
        return types, False
    q0 = text.rfind(question)
    if q0 < 0:
        return types, False
    q1 = q0 + len(question)
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    except (NotImplementedError, ValueError, TypeError):
        return types, False
    t_ids, offs = list(enc["input_ids"]), list(enc["offset_mapping"])
    in_q = [s < q1 and e > q0 for s, e in offs]
    suf = 0
    while suf < min(len(ids), len(t_ids)) and ids[-1 - suf] == t_ids[-1 - suf]:
        suf += 1
    first_suf = len(t_ids) - suf  # text tokens >= first_suf map to ids from the end
    pre, shift = 0, None  # text tokens < pre map to ids[shift + j] (shift skips e.g. a BOS the processor added)
    for sh in range(4):
        k = 0
        while sh + k < len(ids) - suf and k < first_suf and ids[sh + k] == t_ids[k]:
            k += 1
        if k > pre:
            pre, shift = k, sh
    mapped = 0
    for j, flag in enumerate(in_q):
        if not flag:
            continue
        if j >= first_suf:
            pos = len(ids) - (len(t_ids) - j)
        elif j < pre and shift is not None:
            pos = shift + j
        else:
            continue
        if types[pos] != IMAGE:
            types[pos] = QUESTION
            mapped += 1
    return types, mapped == sum(in_q) and mapped > 0


def _field(d: Any, key: str) -> Any:
    if d is None:
        return None
    try:
        return d[key]
    except (KeyError, TypeError, IndexError):
        return getattr(d, key, None)


def image_region(processor: Any, image: Any) -> list[float]:
    """The box ``[x0, y0, x1, y1]`` (original pixels) that the image tokens cover: the centre crop for processors
    that resize-then-crop (CLIP-style LLaVA), else the whole image."""
    W, H = image.size
    ip = getattr(processor, "image_processor", None)
    crop = _field(ip, "crop_size") if getattr(ip, "do_center_crop", False) else None
    size = _field(ip, "size")
    if crop is None or _field(crop, "height") is None:
        return [0.0, 0.0, float(W), float(H)]
    if _field(size, "shortest_edge"):
        sx = sy = _field(size, "shortest_edge") / min(W, H)
    elif _field(size, "height"):
        sx, sy = _field(size, "width") / W, _field(size, "height") / H
    else:
        return [0.0, 0.0, float(W), float(H)]
    cw, ch = min(W, _field(crop, "width") / sx), min(H, _field(crop, "height") / sy)
    return [(W - cw) / 2, (H - ch) / 2, (W + cw) / 2, (H + ch) / 2]


def image_layout(loaded: LoadedModel, enc: Any, row: int, n_image: int, image: Any = None) -> dict[str, Any]:
    """How the image tokens of batch row ``row`` tile the image.

    ``kind`` is ``"grid"`` (row-major ``shape`` over ``region`` of the image), ``"latent"`` (resampler queries: no
    spatial position) or ``"sequence"`` (tiles/anyres layouts cotscope does not map back to pixels).
    """
    fam = loaded.adapter.family
    region = image_region(loaded.processor, image) if image is not None else None
    if n_image == 0:
        return {"kind": "none", "shape": [0, 0], "region": region}
    if fam == "idefics2":
        return {"kind": "latent", "shape": [1, n_image], "region": region}
    if fam in ("qwen2_vl", "qwen2_5_vl") and "image_grid_thw" in enc:
        t, h, w = (int(x) for x in enc["image_grid_thw"][row])
        merge = int(getattr(loaded.config.vision_config, "spatial_merge_size", 2))
        if t == 1 and (h // merge) * (w // merge) == n_image:
            return {"kind": "grid", "shape": [h // merge, w // merge], "region": region}
    if fam not in ("llava_next", "llava_onevision"):
        s = math.isqrt(n_image)
        if s * s == n_image:
            return {"kind": "grid", "shape": [s, s], "region": region}
    return {"kind": "sequence", "shape": [1, n_image], "region": region}


def latent_patch_map(loaded: LoadedModel, image: Any) -> np.ndarray | None:
    """For resampler connectors (Idefics2's perceiver): how much each image token (latent) reads each vision patch,
    ``[n_latents, grid_h, grid_w]``, or ``None`` for other families / tiled images.

    The perceiver's attention (mean over heads) is rolled out over its layers: ``M_d = C_d + S_d @ M_{d-1}``, with
    ``C_d`` the latent→patch and ``S_d`` the latent→latent part of layer ``d`` and ``M_0 = 0`` (the learned initial
    latents carry no image content). With one resampler layer this is exactly the attention on the patches;
    residual paths are ignored, so deeper resamplers get an approximation.
    """
    import torch

    if loaded.adapter.family != "idefics2" or image is None:
        return None
    resampler = getattr(getattr(loaded.adapter.projector(loaded.hf), "perceiver_resampler", None), "layers", None)
    if resampler is None:
        return None
    mods = [layer.self_attn for layer in resampler]
    px = loaded.processor.image_processor(images=[[image]], return_tensors="pt")
    from cotscope.probes.models.placement import ancestors_of, module_device, module_dtype

    vision = loaded.adapter.vision(loaded.hf)
    vdev = module_device(vision, ancestors_of(loaded.hf, loaded.adapter.vision_path)) or loaded.device
    pv = px["pixel_values"].to(vdev, module_dtype(vision))
    if pv.shape[1] != 1:  # split into tiles: patches do not map to one grid
        return None
    pam = px.get("pixel_attention_mask")
    got: list[Any] = []
    with torch.no_grad(), eager_modules(mods, [got.append] * len(mods)):
        loaded.hf.model.get_image_features(pixel_values=pv, pixel_attention_mask=None if pam is None else pam.to(vdev))
    patch = int(loaded.config.vision_config.patch_size)
    gh, gw = pv.shape[-2] // patch, pv.shape[-1] // patch
    n_lat = got[0].shape[-2]
    n_ctx = got[0].shape[-1] - n_lat
    if n_ctx != gh * gw:
        return None
    M = torch.zeros(n_lat, n_ctx, dtype=torch.float64)
    for w in got:
        a = w[0].to("cpu", torch.float64).mean(0)
        M = a[:, :n_ctx] + a[:, n_ctx:] @ M
    return M.reshape(n_lat, gh, gw).numpy().astype(np.float32)


def encode(loaded: LoadedModel, texts: list[str], images: list[Any] | None) -> Any:
    """Left-padded model inputs (the collector's batching rules)."""
    from cotscope.probes.collect import encode_batch

    return encode_batch(loaded, texts, images)


def _eos_ids(loaded: LoadedModel) -> set[int]:
    gc = getattr(loaded.hf, "generation_config", None)
    eos = getattr(gc, "eos_token_id", None) if gc is not None else None
    if eos is None:
        eos = loaded.tokenizer.eos_token_id
    return set([eos] if isinstance(eos, int) else list(eos or []))


# ------------------------------------------------------------------------------------------- capture


def resolve_switch(loaded: LoadedModel, switch: str | None, remote: Any) -> tuple[str, bool | str]:
    """The switch mode and remote mode of one capture: ``switch=None`` is ``"layers"`` here and ``"traced"`` remotely.

    Remote execution (``remote=True``/``"local"``, or a model loaded with ``remote=``) runs only the ``"traced"``
    capture: the other switches replace attention kernels in this process, which a server does not run.
    """
    from cotscope.probes.remote import resolve_remote

    mode = resolve_remote(loaded, remote)
    if switch is None:
        switch = "traced" if mode else "layers"
    if switch not in SWITCH_MODES:
        raise AttentionCaptureError(f"unknown switch mode {switch!r}; choose from {SWITCH_MODES}")
    if mode and switch != "traced":
        from cotscope.probes.remote import RemoteExecutionError

        raise RemoteExecutionError(
            f"switch={switch!r} swaps attention kernels in this process, which a remote (NDIF) server does not run. "
            "Fix: capture remotely with switch='traced' (or switch=None): the trace reads each chosen layer's "
            "attention inputs (query, keys, mask) and computes the query row there with the model's own eager "
            "attention function."
        )
    return switch, mode


def _interface_op(attn_env: Any, layer: int, model_id: str) -> str:
    """The nnsight ``.source`` name of the attention-interface call in one attention module's ``forward``."""
    src = attn_env.source
    text = src.compiled.source.splitlines()
    for name in src.names:
        line = src.compiled.lines.get(name)
        if name.startswith("attention_interface_") and line and "attention_interface(" in text[line - 1]:
            return name
    raise EagerAttentionUnavailable(
        f"the attention forward of layer {layer} of {model_id} has no transformers attention_interface(...) call, "
        "so the traced capture cannot read its query and keys. Fix: capture locally with switch='layers'."
    )


def _generate_traced(
    loaded: LoadedModel,
    preps: Sequence[dict[str, Any]],
    layers: Sequence[int],
    heads: Sequence[int],
    mode: bool | str,
) -> list[tuple[Any, dict[int, list[Any]]]]:
    """Greedy generation of each prepared batch inside nnsight traces that record, at every forward, the last query
    row of ``layers`` × ``heads`` (:func:`probes.traced.attention_row` on the attention-interface inputs).

    The model keeps its own kernels (as ``switch="rows"``), and everything inside the trace is torch plus the model
    file's eager function, so the same code runs here (``mode=False``), in nnsight's remote simulation and on NDIF.
    Several batches travel as one request (an nnsight session). Returns, per batch, the generated ids
    ``[B, T + S]`` and ``{layer: [rows of each step]}``.
    """
    import nnsight
    import torch

    from cotscope.probes.remote import backend_for
    from cotscope.probes.traced import attention_row

    nm = loaded.nnsight
    envs = [loaded.adapter.layers(nm)[l].self_attn for l in layers]
    ops = [_interface_op(e, l, loaded.model_id) for e, l in zip(envs, layers)]
    head_idx = torch.tensor(list(heads), dtype=torch.long)
    batches = [(p["inputs"], p["gen_kwargs"]) for p in preps]
    backend = backend_for(nm, mode, "attention")
    with warnings.catch_warnings():
        # an open-ended tracer.iter[:] ends by parking one request past the last step: expected, not a problem
        warnings.filterwarnings("ignore", message=".*was never reached.*")
        with torch.no_grad():
            with nm.session(backend=backend):
                got = nnsight.save([])
                for inputs, gen_kwargs in batches:
                    with nm.generate(**gen_kwargs) as tracer:
                        steps = []
                        with tracer.invoke(inputs):
                            for _ in tracer.iter[:]:
                                steps.append(
                                    [attention_row(*getattr(e.source, o).inputs, head_idx) for e, o in zip(envs, ops)]
                                )
                        with tracer.invoke():
                            got.append((tracer.result, steps))
    return [(seq, {l: [st[j] for st in steps] for j, l in enumerate(layers)}) for seq, steps in got]


def _prepare_batch(
    loaded: LoadedModel, requests: Sequence[CaptureRequest], max_new_tokens: int, min_new_tokens: int, mode: Any
) -> dict[str, Any]:
    """Everything one batch needs before generation: prompts, encoding, image mask, generation arguments."""
    if max_new_tokens < 1:
        raise AttentionCaptureError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    has_img = [r.image is not None for r in requests]
    if any(has_img) and not all(has_img):
        raise AttentionCaptureError("some requests have images and some do not; capture them in separate batches")
    if any(has_img) and not loaded.is_vlm:
        raise AttentionCaptureError(f"{loaded.model_id} is a text-only model but requests carry images")
    if any(has_img):
        loaded.adapter.require_image_tokens("attention capture with images (attention shift R/F onto image tokens)")
    texts = [render_prompt(loaded, r.prompt, r.image is not None) for r in requests]
    images = [r.image for r in requests] if all(has_img) else None
    enc = encode(loaded, texts, images)
    ids = enc["input_ids"]
    B, T = ids.shape
    lens = enc["attention_mask"].sum(1).tolist()
    check_context(
        loaded,
        lens,
        new_tokens=max_new_tokens,
        name=lambda i: f"capture request {requests[i].id!r}",
        fix=f"shorten the prompt, or lower max_new_tokens (now {max_new_tokens})",
    )
    dev = "cpu" if mode else loaded.device
    tok = loaded.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    return {
        "requests": list(requests),
        "texts": texts,
        "images": images,
        "enc": enc,
        "inputs": {k: (v.to(dev) if hasattr(v, "to") else v) for k, v in dict(enc).items()},
        "lens": lens,
        "img_mask": loaded.adapter.image_token_mask(ids, loaded.config).cpu().numpy()
        if images
        else np.zeros((B, T), bool),
        "gen_kwargs": {
            "max_new_tokens": max_new_tokens,
            "min_new_tokens": min_new_tokens,
            "do_sample": False,
            "pad_token_id": pad,
        },
    }


def capture_batch(
    loaded: LoadedModel,
    requests: Sequence[CaptureRequest],
    *,
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
    max_new_tokens: int = 64,
    min_new_tokens: int = 0,
    switch: str | None = None,
    remote: Any = None,
) -> list[dict[str, Any]]:
    """Generate greedily from ``requests`` (one left-padded batch) and return one trace per request.

    Each trace: ``record`` (JSON-able) and ``tensors`` (numpy, the :mod:`analyses.attention_store` layout).
    ``switch``/``remote``: see :func:`capture_run`.
    """
    import torch

    switch, mode = resolve_switch(loaded, switch, remote)
    prep = _prepare_batch(loaded, requests, max_new_tokens, min_new_tokens, mode)
    if switch == "traced":
        layers_, heads_ = check_request(loaded, layers, heads)
        ((seq, rows),) = _generate_traced(loaded, [prep], layers_, heads_, mode)
        return _assemble(loaded, prep, seq, rows)
    with torch.no_grad(), recording(loaded, layers, heads, switch) as rec:
        seq = loaded.hf.generate(**prep["inputs"], **prep["gen_kwargs"])
    return _assemble(loaded, prep, seq, rec.rows)


def _assemble(loaded: LoadedModel, prep: dict[str, Any], seq: Any, rows_by_layer: dict[int, list[Any]]) -> list[dict]:
    """One trace per request of a generated batch: records and arrays (:mod:`analyses.attention_store` layout)."""
    import torch

    requests, texts, images, lens = prep["requests"], prep["texts"], prep["images"], prep["lens"]
    enc = prep["enc"]
    ids, img_mask = enc["input_ids"], prep["img_mask"]
    T = ids.shape[1]
    sfx = loaded.adapter.processor_suffix if images else ""  # text the processor appends (PaliGemma's newline)
    tok = loaded.tokenizer
    for l, v in rows_by_layer.items():
        if not v:
            raise EagerAttentionUnavailable(
                f"layer {l} of {loaded.model_id} never called transformers' attention interface, so its weights "
                "cannot be captured per layer. Fix: load the model with attn_implementation='eager' and capture with "
                "switch='none'."
            )
    seq = seq.cpu()
    S = seq.shape[1] - T
    n_steps = {len(v) for v in rows_by_layer.values()}
    if n_steps != {S}:
        raise AttentionCaptureError(
            f"recorded {sorted(n_steps)} forward passes for {S} generated tokens; use plain "
            "greedy generation (no assisted/speculative decoding)"
        )
    cap_layers = list(rows_by_layer)
    eos = _eos_ids(loaded)
    special = set(getattr(tok, "all_special_ids", []))
    out = []
    for r, req in enumerate(requests):
        p = T - int(lens[r])
        gen = seq[r, T:].tolist()
        n = next((k + 1 for k, t in enumerate(gen) if t in eos), len(gen))
        gen = gen[:n]
        P = int(lens[r])
        prompt_ids = ids[r, p:].tolist()
        q_text = req.question if req.question is not None else req.prompt
        ktypes, q_found = classify_prompt_tokens(tok, prompt_ids, texts[r] + sfx, q_text, img_mask[r, p:])
        if q_text and not q_found:
            warnings.warn(
                f"trace {req.id!r}: could not locate the question text among the prompt tokens; its keys "
                "count as template text",
                stacklevel=2,
            )
        key_types = np.concatenate([ktypes, np.full(n, GENERATED, np.int8)])
        rows, offsets, mass = [], [0], []
        for s in range(n):
            K = P + s
            per_layer = []
            for l in cap_layers:
                full = rows_by_layer[l][s][r]  # [h, T + s] (or fewer keys with a sliding-window cache)
                kv = full.shape[-1]
                if kv < T + s:
                    full = torch.nn.functional.pad(full, (T + s - kv, 0))
                per_layer.append(full[:, p : T + s].numpy())
            row = np.stack(per_layer)  # [L, h, K]
            assert row.shape[-1] == K
            rows.append(row)
            offsets.append(offsets[-1] + K)
            kt = key_types[:K]
            mass.append(np.stack([row[..., kt == c].sum(-1) for c in range(len(KEY_TYPES))], -1))
        L, h = len(cap_layers), next(iter(rows_by_layer.values()))[0].shape[1]
        tensors = {
            "rows": np.concatenate(rows, -1).astype(np.float32) if rows else np.zeros((L, h, 0), np.float32),
            "row_offsets": np.asarray(offsets, np.int64),
            "mass": np.stack(mass).astype(np.float32) if mass else np.zeros((0, L, h, len(KEY_TYPES)), np.float32),
            "key_types": key_types,
            "token_ids": np.asarray(prompt_ids + gen, np.int64),
        }
        n_img = int((ktypes == IMAGE).sum())
        record = {
            "id": req.id,
            "condition": req.condition,
            "prompt": req.prompt,
            "question": q_text,
            "question_found": bool(q_found),
            "meta": req.meta,
            "prompt_text": texts[r],
            "prompt_len": P,
            "n_steps": n,
            "finished": bool(n and gen[-1] in eos),
            "gen_text": tok.decode(gen, skip_special_tokens=True),
            "gen_tokens": ["" if t in special else tok.decode([t], skip_special_tokens=False) for t in gen],
            "n_keys_by_type": {k: int((ktypes == c).sum()) for c, k in enumerate(KEY_TYPES)},
            "image_layout": image_layout(loaded, enc, r, n_img, req.image)
            if images
            else {"kind": "none", "shape": [0, 0]},
        }
        if images and record["image_layout"]["kind"] == "latent" and not loaded.is_remote:
            lmap = latent_patch_map(loaded, req.image)
            if lmap is not None and lmap.shape[0] == n_img:
                tensors["latent_map"] = lmap
                record["image_layout"]["patch_grid"] = list(lmap.shape[1:])
        out.append({"record": record, "tensors": tensors, "image": req.image})
    return out


def capture_run(
    loaded: LoadedModel,
    requests: Sequence[CaptureRequest],
    out_dir: str | Path,
    *,
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
    max_new_tokens: int = 64,
    min_new_tokens: int = 0,
    switch: str | None = None,
    batch_size: int = 1,
    store_dtype: str = "float32",
    overwrite: bool = False,
    progress: bool = True,
    remote: Any = None,
    batches_per_request: int = 4,
) -> AttentionRun:
    """Capture every request into an attention run at ``out_dir`` (resumable; see :mod:`analyses.attention_store`).

    Args:
        layers / heads: which decoder blocks and query heads to record (``None`` = all).
        max_new_tokens / min_new_tokens: greedy generation length limits.
        switch: ``"layers"`` (only chosen layers run eager), ``"rows"`` (chosen layers keep their kernel; only the
            query row is computed eagerly: least memory, generation unchanged), ``"model"`` (all layers eager),
            ``"none"`` (model already eager; read weights from module outputs) or ``"traced"`` (as ``"rows"``, computed
            inside an nnsight trace from each layer's attention inputs: the one that runs remotely). ``None`` =
            ``"layers"`` here, ``"traced"`` remotely.
        batch_size: requests generated together (left-padded); 1 keeps each generation exactly unbatched.
        store_dtype: ``"float32"`` (exact) or ``"float16"`` (half the disk; ~3 significant digits) for the rows.
        remote: ``False`` (here), ``True`` (NDIF through nnsight) or ``"local"`` (nnsight's local simulation of the
            remote path); ``None`` = the model's default. Remotely each batch is one request (a traced generation),
            and only ``switch="traced"`` runs (:func:`resolve_switch`).
        batches_per_request: remotely, this many batches travel as one request (an nnsight session), saving round
            trips; the run is the same either way (a request's traces are written when it returns).
    """
    from tqdm.auto import tqdm

    from cotscope.analyses.artifacts import library_versions

    switch, mode = resolve_switch(loaded, switch, remote)
    if not requests:
        raise AttentionCaptureError("no requests: pass at least one CaptureRequest")
    ids = [r.id for r in requests]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise AttentionCaptureError(f"request ids must be unique within a run; duplicated: {dup}")
    empty = [r.id for r in requests if not str(r.prompt).strip()]
    if empty:
        raise AttentionCaptureError(
            f"requests {empty[:5]} have an empty prompt; there is nothing to attend to but the "
            "chat template. Fix: give each CaptureRequest its question text"
        )
    if batch_size < 1:
        raise AttentionCaptureError(f"batch_size must be >= 1, got {batch_size}")
    if store_dtype not in ("float32", "float16"):
        raise AttentionCaptureError(f"store_dtype must be 'float32' or 'float16', got {store_dtype!r}")
    layers_, heads_ = check_request(loaded, layers, heads)
    config = {
        "model": loaded.provenance(),
        "layers": layers_,
        "heads": heads_,
        "switch": switch,
        "max_new_tokens": int(max_new_tokens),
        "min_new_tokens": int(min_new_tokens),
        "batch_size": batch_size,
        "store_dtype": store_dtype,
        "decoding": "greedy",
        "step_convention": "step s = forward producing generated token s; query = last "
        "prompt token (s=0) or generated token s-1",
    }
    plan = [r.plan_record() for r in requests]
    writer = AttentionRunWriter(out_dir, config, plan, overwrite=overwrite, extra={"library": library_versions()})
    done = writer.done()
    todo = [i for i in range(len(requests)) if i not in done]
    bar = tqdm(
        total=len(requests),
        initial=len(requests) - len(todo),
        desc=f"attention {loaded.model_id[:28]}",
        unit="trace",
        disable=not progress,
    )
    if batches_per_request < 1:
        raise AttentionCaptureError(f"batches_per_request must be >= 1, got {batches_per_request}")
    batches = [todo[b : b + batch_size] for b in range(0, len(todo), batch_size)]
    group = batches_per_request if mode else 1
    for g in range(0, len(batches), group):
        chunk = batches[g : g + group]
        if switch == "traced":
            preps = [
                _prepare_batch(loaded, [requests[i] for i in idx], max_new_tokens, min_new_tokens, mode)
                for idx in chunk
            ]
            got = _generate_traced(loaded, preps, layers_, heads_, mode)
            traces = [_assemble(loaded, p, seq, rows) for p, (seq, rows) in zip(preps, got)]
        else:
            traces = [
                capture_batch(
                    loaded,
                    [requests[i] for i in idx],
                    layers=layers_,
                    heads=heads_,
                    max_new_tokens=max_new_tokens,
                    min_new_tokens=min_new_tokens,
                    switch=switch,
                    remote=mode,
                )
                for idx in chunk
            ]
        for idx, batch_traces in zip(chunk, traces):
            for i, tr in zip(idx, batch_traces):
                tensors = dict(tr["tensors"], rows=tr["tensors"]["rows"].astype(store_dtype))
                writer.write(i, tr["record"], tensors, image=tr["image"])
                bar.update(1)
    bar.close()
    return writer.finish()
