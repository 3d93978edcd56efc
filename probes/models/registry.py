"""Per-family model adapters: a small declarative record of where things live in a model.

Every supported architecture (plain LLMs and VLM families) registers one :class:`ModelAdapter`.
Collection, injection and attention capture only talk to models through it.

>>> from transformers import LlamaConfig
>>> adapter_for(LlamaConfig()).layers_path
'model.layers'
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from cotscope.errors import CotscopeError

_REGISTRY: dict[str, ModelAdapter] = {}


class UnsupportedModelError(CotscopeError):
    """No adapter is registered for this model family."""


class NoImageTokensError(UnsupportedModelError):
    """The family feeds images in without image tokens in the sequence (cross-attention), so per-image-token
    measures (``image_mean``, attention shift R/F, image masks) do not exist for it."""


class LayerPathError(UnsupportedModelError):
    """The decoder blocks of a model cannot be found (no adapter path, no known layout, bad ``layers_path``)."""


# Layouts tried, in order, for models without a registered adapter (LLMs, then VLM language models, then GPT-2/NeoX).
FALLBACK_LAYER_PATHS = (
    "model.layers",
    "model.language_model.layers",
    "model.text_model.layers",
    "language_model.model.layers",
    "transformer.h",
    "gpt_neox.layers",
)


def _resolve(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
    return obj


@dataclasses.dataclass(frozen=True)
class ModelAdapter:
    """Where the language-model layers, vision tower and projector live, and how image tokens are found.

    Attributes:
        family: short name shown to users ("llama", "llava", "qwen2_vl", …).
        model_types: HF ``config.model_type`` values this adapter serves.
        layers_path: dotted path from the top-level HF model to the decoder ``ModuleList``.
        final_norm_path: dotted path to the final norm of the language model.
        vision_path / projector_path: vision tower and connector (``None`` for text-only models).
        image_token_attrs: config attributes holding the image placeholder token id (first found wins).
        processor_kwargs: extra keyword arguments every processor call needs (e.g. InternVL's
            ``crop_to_patches=False``).
        text_config_attr: where the language-model config sits inside a VLM config.
        build_processor: optional callable ``(model_dir_or_tokenizer, **kw) -> processor`` assembling a
            processor offline without torchvision.
        image_tokens_in_sequence: ``False`` for cross-attention families (Mllama): the one marker token per image
            carries no image features, so :meth:`image_token_mask` raises :class:`NoImageTokensError`.
        processor_suffix: text the processor appends after every image prompt (PaliGemma's ``"\\n"``); the collector
            counts its tokens as a suffix after the answer so ``last_prompt``/``answer_mean`` stay put.
        image_token_value: a fixed image token id (user-declared adapters); wins over ``image_token_attrs``.
        auto_class: the transformers auto class ``load_model`` builds the model with (default: the
            image-text-to-text or causal-LM auto class); remote-code models often register ``AutoModel``.
        generator_path: the submodule whose forward produces the logits during ``generate`` (BLIP-2 computes the
            image once, then its ``language_model`` generates from embeddings); ``None`` = the top-level model.
        unwrap: attribute of the loaded ``auto_class`` object that is the generating model (ShieldGemma 2 checkpoints
            load correctly only through their classifier wrapper, whose ``.model`` is the Gemma 3 generator).
    """

    family: str
    model_types: tuple[str, ...]
    layers_path: str
    final_norm_path: str
    vision_path: str | None = None
    projector_path: str | None = None
    image_token_attrs: tuple[str, ...] = ("image_token_id", "image_token_index")
    processor_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    text_config_attr: str | None = None
    build_processor: Callable[..., Any] | None = None
    notes: str = ""
    image_tokens_in_sequence: bool = True
    processor_suffix: str = ""
    image_token_value: int | None = None
    auto_class: str | None = None
    unwrap: str | None = None
    generator_path: str | None = None

    @property
    def is_vlm(self) -> bool:
        return self.vision_path is not None

    def layers(self, model: Any) -> Any:
        """The decoder ModuleList (works on HF modules and on nnsight envoys alike)."""
        return _resolve(model, self.layers_path)

    @staticmethod
    def find_layers(model: Any, layers_path: str | None = None) -> tuple[str, Any]:
        """``(dotted path, decoder-block list)`` of any model: the one layer resolver of cotscope.

        ``layers_path`` if given; else the registered adapter's path (by ``config.model_type``); else the first
        of :data:`FALLBACK_LAYER_PATHS` present. Works on HF modules and nnsight envoys. Raises
        :class:`LayerPathError` naming what was tried and the fix.

        >>> from transformers import LlamaConfig, LlamaForCausalLM
        >>> cfg = LlamaConfig(hidden_size=8, intermediate_size=16, num_hidden_layers=2, num_attention_heads=2,
        ...                   num_key_value_heads=2, vocab_size=32)
        >>> path, blocks = ModelAdapter.find_layers(LlamaForCausalLM(cfg))
        >>> path, len(blocks)
        ('model.layers', 2)
        """
        if layers_path:
            try:
                found = _resolve(model, layers_path)
                len(found)
            except (AttributeError, TypeError, IndexError):
                raise LayerPathError(
                    f"layers_path {layers_path!r} does not name a list of decoder blocks in {type(model).__name__}"
                ) from None
            return layers_path, found
        config = getattr(model, "config", None)
        mt = getattr(config, "model_type", None)
        paths = ([_REGISTRY[mt].layers_path] if mt in _REGISTRY else []) + list(FALLBACK_LAYER_PATHS)
        for path in dict.fromkeys(paths):
            try:
                found = _resolve(model, path)
                len(found)
                return path, found
            except (AttributeError, TypeError, IndexError):
                continue
        raise LayerPathError(
            f"could not find the decoder blocks of {type(model).__name__} (tried "
            f"{', '.join(dict.fromkeys(paths))}); pass layers_path='dotted.path.to.layers', or "
            "register a ModelAdapter for its model_type"
        )

    def generator(self, model: Any) -> Any:
        """The module whose output holds the logits of each generation step (HF module or nnsight envoy)."""
        return _resolve(model, self.generator_path) if self.generator_path else model

    def final_norm(self, model: Any) -> Any:
        return _resolve(model, self.final_norm_path)

    def vision(self, model: Any) -> Any:
        if self.vision_path is None:
            raise UnsupportedModelError(f"{self.family} models have no vision tower")
        return _resolve(model, self.vision_path)

    def projector(self, model: Any) -> Any:
        if self.projector_path is None:
            raise UnsupportedModelError(f"{self.family} models have no projector")
        return _resolve(model, self.projector_path)

    def text_config(self, config: Any) -> Any:
        if self.text_config_attr and hasattr(config, self.text_config_attr):
            return getattr(config, self.text_config_attr)
        return config

    def image_token_id(self, config: Any) -> int | None:
        if self.image_token_value is not None:
            return int(self.image_token_value)
        for attr in self.image_token_attrs:
            val = getattr(config, attr, None)
            if val is not None:
                return int(val)
        return None

    def require_image_tokens(self, what: str) -> None:
        """Raise :class:`NoImageTokensError` naming ``what`` if this family has no image tokens in the sequence."""
        if not self.image_tokens_in_sequence:
            raise NoImageTokensError(
                f"{what} is not defined for {self.family} models: images enter through cross-attention layers, and "
                "the sequence holds one marker token per image, not image tokens. Use instead: text positions "
                "('last_prompt', 'answer_mean', 'eot') for residuals and injection; for how much the model reads "
                "the image, compare runs with and without the image (or ablate the cross-attention layers) rather "
                "than an attention shift onto image tokens."
            )

    def image_token_mask(self, input_ids: Any, config: Any) -> Any:
        """Boolean mask of image-placeholder positions in ``input_ids`` (same shape).

        Raises :class:`NoImageTokensError` for cross-attention families (see :meth:`require_image_tokens`).
        """
        self.require_image_tokens("an image-token mask")
        tid = self.image_token_id(config)
        if tid is None:
            return input_ids != input_ids  # all False
        return input_ids == tid


def register(adapter: ModelAdapter) -> ModelAdapter:
    for mt in adapter.model_types:
        _REGISTRY[mt] = adapter
    return adapter


def registered_families() -> list[str]:
    return sorted({a.family for a in _REGISTRY.values()})


def adapter_for(model_or_config: Any) -> ModelAdapter:
    """Find the adapter for an HF model or config by ``config.model_type``."""
    config = getattr(model_or_config, "config", model_or_config)
    mt = getattr(config, "model_type", None)
    if mt in _REGISTRY:
        return _REGISTRY[mt]
    raise UnsupportedModelError(
        f"no cotscope adapter for model_type={mt!r} ({type(model_or_config).__name__}). "
        f"Supported families: {', '.join(registered_families())}. To add one, register a "
        "probes.models.registry.ModelAdapter(family=..., model_types=(...,), layers_path='model.layers', "
        "final_norm_path='model.norm', ...) — see probes/models/llm_adapters.py for examples — or declare one in a "
        "TOML/JSON spec (layer path, image token, processor kwargs) and load it with "
        "probes.models.adapter_spec.load_adapter_spec(path)."
    )


def supported_model_types() -> Sequence[str]:
    return sorted(_REGISTRY)
