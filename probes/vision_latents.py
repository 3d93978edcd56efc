"""Collect a VLM's connector outputs and its language model's hidden states, one image at a time.

Minimal by design (the general collection adapters live elsewhere): a plain HF forward under
``torch.no_grad()``, a forward hook on the connector module whose dotted path you pass
(``model.connector`` for Idefics2/3, ``model.multi_modal_projector`` for LLaVA), and forward hooks
on the decoder layers, so layer ``i`` is the raw output of block ``i`` (the project's
*block_output* convention; HF's last ``hidden_states`` entry is after the final norm, these are not).

>>> data = collect_vision_latents(vlm, proc, images, prompts, "model.connector")   # doctest: +SKIP
>>> data["connector"].shape, data["hidden"][0].shape                                # doctest: +SKIP
((64, 16, 576), (64, 576))
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cotscope.analyses.layers import LayerIndexError, normalize_layer
from cotscope.errors import CotscopeError
from cotscope.probes.positions import TokenRule, TokenRuleError

TOKEN_RULES = ("last", "mean", "image_mean")  # probes.positions.TokenRule values this collector reads


class VisionLatentsError(CotscopeError):
    """Bad input to the collector (module paths, images/prompts, token rule)."""


def _module(model: torch.nn.Module, path: str, what: str) -> torch.nn.Module:
    try:
        return model.get_submodule(path)
    except AttributeError:
        hints = [
            n
            for n, _ in model.named_modules()
            if n.count(".") <= 2 and any(w in n for w in ("connector", "projector", "layers"))
        ][:8]
        raise VisionLatentsError(
            f"{what} {path!r} is not a submodule of {type(model).__name__}; candidates: {hints}"
        ) from None


def find_decoder_layers(model: torch.nn.Module, layers_path: str | None = None) -> tuple[str, torch.nn.ModuleList]:
    """The language model's decoder layers: ``(path, blocks)`` from :meth:`ModelAdapter.find_layers`."""
    from cotscope.probes.models.registry import LayerPathError, ModelAdapter

    try:
        return ModelAdapter.find_layers(model, layers_path)
    except LayerPathError as e:
        raise VisionLatentsError(str(e)) from None


def _first_tensor(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    t = getattr(out, "last_hidden_state", None)
    if isinstance(t, torch.Tensor):
        return t
    raise VisionLatentsError(f"cannot find a tensor in the module output of type {type(out).__name__}")


def image_token_id(model: torch.nn.Module) -> int | None:
    cfg = model.config
    for k in ("image_token_id", "image_token_index"):
        v = getattr(cfg, k, None)
        if v is not None:
            return int(v)
    return None


@torch.no_grad()
def collect_vision_latents(
    model: torch.nn.Module,
    processor: Any,
    images: Sequence[Any],
    prompts: Sequence[str] | str,
    connector_path: str,
    *,
    layers: Sequence[int] | None = None,
    layers_path: str | None = None,
    token_rule: str = "last",
    progress: bool = True,
) -> dict[str, Any]:
    """Run the VLM on each ``(image, prompt)`` and return connector outputs and hidden states.

    Returns ``{"connector": [N, T, D] float32, "hidden": {layer: [N, D]}, "token_rule", "layers_path",
    "connector_path"}``. ``prompts`` is one string for all images or one per image; each must contain
    the processor's image placeholder. ``token_rule``: ``last`` (last position), ``mean`` (all
    positions) or ``image_mean`` (the image-token positions).
    """
    try:
        token_rule = TokenRule.parse(token_rule, allowed=TOKEN_RULES).value
    except TokenRuleError as e:
        raise VisionLatentsError(str(e)) from None
    if hasattr(model, "hf") and hasattr(model, "adapter"):  # a LoadedModel: its HF module (and processor)
        processor = processor if processor is not None else model.processor
        model = model.hf
    if isinstance(prompts, str):
        prompts = [prompts] * len(images)
    if len(prompts) != len(images) or not images:
        raise VisionLatentsError(
            f"got {len(images)} images and {len(prompts)} prompts; pass one prompt per image "
            "(or a single prompt string) and at least one image"
        )
    conn = _module(model, connector_path, "connector")
    lpath, mods = find_decoder_layers(model, layers_path)
    n_layers = len(mods)
    try:  # -1 is the last block, as everywhere
        want = list(range(n_layers)) if layers is None else [normalize_layer(l, n_layers) for l in layers]
    except LayerIndexError as e:
        raise VisionLatentsError(f"{e} (decoder blocks at {lpath})") from None
    img_id = image_token_id(model)
    if token_rule == "image_mean":
        from cotscope.probes.models.registry import _REGISTRY

        adapter = _REGISTRY.get(getattr(model.config, "model_type", None))
        if adapter is not None:  # cross-attention families (Mllama) hold one marker token, not image tokens
            adapter.require_image_tokens("token_rule='image_mean'")
    if token_rule == "image_mean" and img_id is None:
        raise VisionLatentsError("token_rule='image_mean' needs config.image_token_id; use 'last' or 'mean'")
    seen: dict[str, Any] = {}
    handles = [conn.register_forward_hook(lambda m, i, o: seen.__setitem__("connector", _first_tensor(o)))]
    for l in want:
        handles.append(mods[l].register_forward_hook(lambda m, i, o, l=l: seen.__setitem__(l, _first_tensor(o))))
    from cotscope.probes.models.placement import module_device

    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    device = (module_device(emb, (model,)) if emb is not None else module_device(model)) or torch.device("cpu")
    conns, hid = [], {l: [] for l in want}
    it = list(zip(images, prompts))
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="vision latents", unit="image")
    pixel_hw: tuple[int, int] | None = None
    was_training = model.training
    model.eval()
    try:
        for img, prompt in it:
            seen.clear()
            enc = processor(text=prompt, images=[img], return_tensors="pt")
            enc = {k: v.to(device) if hasattr(v, "to") else v for k, v in enc.items()}
            model(**enc)
            if pixel_hw is None and hasattr(enc.get("pixel_values"), "shape"):
                pixel_hw = (int(enc["pixel_values"].shape[-2]), int(enc["pixel_values"].shape[-1]))
            if "connector" not in seen:
                raise VisionLatentsError(
                    f"the connector {connector_path!r} did not run: the prompt has no image "
                    f"placeholder or the processor dropped the image (prompt: {prompt[:60]!r})"
                )
            c = seen["connector"].float()
            conns.append(c.reshape(-1, c.shape[-1]).cpu().numpy())
            ids = enc["input_ids"][0]
            for l in want:
                h = seen[l][0].float()  # [T, D], batch of one
                if token_rule == "last":
                    v = h[-1]
                elif token_rule == "mean":
                    v = h.mean(0)
                else:
                    mask = (ids == img_id).to(h.device)  # indexes layer l's output: on that layer's device
                    if not bool(mask.any()):
                        raise VisionLatentsError("no image tokens in the input ids; check the prompt's placeholder")
                    v = h[mask].mean(0)
                hid[l].append(v.cpu().numpy())
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    n_tok = {c.shape[0] for c in conns}
    if len(n_tok) != 1:
        raise VisionLatentsError(
            f"connector outputs have different token counts {sorted(n_tok)} across images; "
            "disable image splitting so every image gives the same number of tokens"
        )
    return {
        "connector": np.stack(conns).astype(np.float32),
        "hidden": {l: np.stack(v) for l, v in hid.items()},
        "token_rule": token_rule,
        "layers_path": lpath,
        "connector_path": connector_path,
        "pixel_hw": pixel_hw,
    }


def load_vlm(
    vlm_dir: str | Path, *, dtype: Any = "float32", device: str | None = "cpu", device_map: Any = None, **kw: Any
) -> tuple[torch.nn.Module, Any]:
    """``(model, processor)`` of a saved VLM through :func:`probes.models.loading.load_model` (dtype and
    ``device_map`` passed through; e.g. ``dtype="bfloat16", device_map="auto"`` on a GPU node).

    >>> model, processor = load_vlm("runs/vlm", dtype="bfloat16")      # doctest: +SKIP
    """
    from cotscope.probes.models.loading import load_model

    lm = load_model(vlm_dir, dtype=dtype, device=device, device_map=device_map, **kw)
    if not lm.is_vlm:
        raise VisionLatentsError(f"{vlm_dir} is a text-only model ({lm.model_type}); vision latents need a VLM")
    return lm.hf, lm.processor


def patch_grid(n_tokens: int, pixel_hw: tuple[int, int] | None) -> tuple[int, int] | None:
    """``(h, w)`` with ``h·w = n_tokens`` and ``w/h`` equal to the image's aspect ratio, if one exists.

    >>> patch_grid(108, (48, 144)), patch_grid(20, (48, 144)), patch_grid(16, None)
    ((6, 18), None, None)
    """
    if not pixel_hw or not pixel_hw[0] or not pixel_hw[1]:
        return None
    H, W = pixel_hw
    h = round((n_tokens * H / W) ** 0.5)
    if h > 0 and n_tokens % h == 0 and (n_tokens // h) * H == h * W:
        return h, n_tokens // h
    return None


def run_reconstruction_analysis(
    model: torch.nn.Module,
    processor: Any,
    images: Sequence[Any],
    prompts: Sequence[str] | str,
    connector_path: str,
    out_dir: str | Path,
    *,
    n_tokens: int = 32,
    groups: Sequence[Any] | None = None,
    token_rule: str = "last",
    heatmap_layers: Sequence[int] | None = None,
    seed: int = 0,
) -> dict:
    """Collect, fit the per-layer probes, write ``reconstruction.json``; return summary numbers.

    ``cotscope figures RUN`` draws the probe and patch-similarity figures from ``reconstruction.json``.

    ``n_tokens`` is capped at the connector's token count (the paper's 256 → 32 needs ≥ 32 tokens).
    The heat map uses the first image and ``heatmap_layers`` (default: 4 evenly spaced layers).
    """
    from cotscope.analyses.atomic import write_json_atomic
    from cotscope.analyses.reconstruction import fit_reconstruction_probes, patch_similarity

    out_dir = Path(out_dir)
    data = collect_vision_latents(model, processor, images, prompts, connector_path, token_rule=token_rule)
    T = data["connector"].shape[1]
    k = min(n_tokens, T)
    res = fit_reconstruction_probes(data["hidden"], data["connector"], n_tokens=k, groups=groups, seed=seed)
    layers = sorted(data["hidden"])
    hl = (
        list(heatmap_layers)
        if heatmap_layers is not None
        else sorted({layers[int(round(i * (len(layers) - 1) / 3))] for i in range(4)})
    )
    heat = patch_similarity(
        np.stack([data["hidden"][l][0] for l in hl]), data["connector"][0], grid=patch_grid(T, data.get("pixel_hw"))
    )
    out = res.to_dict()
    out.update(
        token_rule=token_rule,
        connector_path=connector_path,
        layers_path=data["layers_path"],
        n_tokens_requested=n_tokens,
        patch_similarity={"layers": hl, "image_index": 0, "cos": heat.tolist()},
    )
    write_json_atomic(out_dir / "reconstruction.json", out)
    return {**res.summary(), "recon_token_rule": token_rule}


CONNECTOR_PATHS = ("model.connector", "model.multi_modal_projector", "multi_modal_projector", "model.visual.merger")


def find_connector(model: torch.nn.Module) -> str:
    """Dotted path of the first known connector module present in ``model``."""
    for p in CONNECTOR_PATHS:
        try:
            model.get_submodule(p)
            return p
        except AttributeError:
            continue
    raise VisionLatentsError(f"no connector at any of {CONNECTOR_PATHS} in {type(model).__name__}; pass connector_path")


def chat_prompt(processor: Any, question: str) -> str:
    """One user turn: the processor's image placeholder, a newline, then ``question`` (chat template applied)."""
    from cotscope.probes.models.processors import image_placeholder

    content = image_placeholder(processor) + "\n" + question
    tok = getattr(processor, "tokenizer", processor)
    if getattr(tok, "chat_template", None) or getattr(processor, "chat_template", None):
        return tok.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
        )
    return content


# Moved to the orchestration layer (cotscope.stages); the old names warn for one release.
from cotscope._compat import forward as _forward  # noqa: E402

__getattr__ = _forward(
    "probes.vision_latents",
    {
        "run_reconstruction_demo": "cotscope.stages.reconstruction",
        "reconstruction_stage": "cotscope.stages.reconstruction",
    },
)
