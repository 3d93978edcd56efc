"""Offline VLM processors (no torchvision, no hub) and checks of image+prompt inputs.

Three jobs:

* **Recipes** — ``<family>_processor(tokenizer, ...)`` assemble a stock HF processor from a PIL
  image-processor class and a tokenizer (the tokenizer gets the family's image tokens added, in place).
  Their geometry defaults fit the tiny test models; real checkpoints ship a processor: load it with
  :func:`load_processor`.
* **Image-only processors** — Qwen2-VL, Qwen2.5-VL, LLaVA-OneVision and InternVL processors insist
  on a video processor, whose module imports torchvision. The ``ImageOnly*`` subclasses drop that
  argument (``ProcessorMixin`` reads its attributes from the ``__init__`` signature).
* **Input checks** — :func:`check_prompts` and :func:`validate_batch` refuse a prompt without the
  image placeholder or with more placeholders than images, and convert or refuse bad images
  (:func:`probes.stimuli.visual.check_image`) before anything reaches a processor.

>>> from transformers import AutoTokenizer                               # doctest: +SKIP
>>> proc = llava_processor(AutoTokenizer.from_pretrained(d))              # doctest: +SKIP
>>> image_placeholder(proc)                                               # doctest: +SKIP
'<image>'
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cotscope.errors import CotscopeError
from cotscope.probes.stimuli.visual import ImageInputError, check_image, load_image

__all__ = [
    "ImageInputError",
    "PromptImageError",
    "add_image_tokens",
    "image_placeholder",
    "image_prompt",
    "check_images",
    "check_prompts",
    "validate_batch",
    "load_processor",
    "processor_builder",
    "dynamic_resolution_processor",
    "cosmos3_edge_processor",
    "video_llama_3_processor",
    "ernie4_5_vl_moe_processor",
    "glmga_processor",
    "qianfan_ocr_processor",
    "dots3_note_processor",
    "minicpmv_processor",
    "minicpmv4_7_processor",
    "qwen2_5_omni_processor",
    "qwen3_omni_moe_processor",
    "cohere_compass_processor",
    "deepseek_ocr2_processor",
    "granite4_vision_processor",
    "llava_processor",
    "llava_next_processor",
    "llava_onevision_processor",
    "qwen2_vl_processor",
    "qwen2_5_vl_processor",
    "idefics2_processor",
    "idefics3_processor",
    "gemma3_processor",
    "internvl_processor",
    "paligemma_processor",
    "pixtral_processor",
    "chameleon_processor",
    "mllama_processor",
    "deepseek_vl_processor",
    "lighton_ocr_processor",
    "aya_vision_processor",
    "qwen3_vl_processor",
    "glm4v_processor",
    "janus_processor",
    "ovis2_processor",
    "llava_next_video_processor",
    "glm46v_processor",
    "exaone4_5_processor",
    "hyperclovax_vision_v2_processor",
    "lfm3_vl_processor",
    "got_ocr2_processor",
    "pp_chart2table_processor",
    "gemma4_processor",
    "video_llava_processor",
    "idefics_processor",
    "blip2_processor",
    "instructblip_processor",
    "fuyu_processor",
    "aria_processor",
    "paddleocr_vl_processor",
    "granite_docling_processor",
    "deepseek_vl_hybrid_processor",
]


class PromptImageError(CotscopeError):
    """Prompts and images do not match (missing placeholder, more placeholders than images, …)."""


# --------------------------------------------------------------------------------------------- tokens


def add_image_tokens(tokenizer: Any, extra: Sequence[str] = (), named: dict[str, str] | None = None) -> Any:
    """Add special tokens to ``tokenizer`` in place (skipping ones it already has) and return it.

    ``named`` also exposes them as attributes (``tokenizer.image_token``, ``.boi_token_id`` …), which
    Gemma3, InternVL and LLaVA-OneVision processors read. Saved and reloaded tokenizers keep both.
    """
    named = dict(named or {})
    wanted = list(dict.fromkeys([*extra, *named.values()]))
    vocab = tokenizer.get_vocab()
    new = [t for t in wanted if t not in vocab]
    if new:
        tokenizer.add_special_tokens({"extra_special_tokens": list(tokenizer.extra_special_tokens) + new})
    if named:
        tokenizer._set_model_specific_special_tokens(named)  # the only public-equivalent route in transformers 5
    return tokenizer


# ----------------------------------------------------------------------------- image-only processors


def _stock(name: str) -> type:
    import transformers

    return getattr(transformers, name)


class _SavesAsStock:
    """Mixin: ``processor_class`` in saved configs names the stock class, so stock tooling can read them."""

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d["processor_class"] = type(self).__mro__[2].__name__
        return d


def _define_image_only() -> dict[str, type]:
    # Explicit __init__ signatures: ProcessorMixin reads sub-processors from the signature and saves/restores
    # only the arguments the signature names (from_args_and_dict uses __code__.co_varnames).
    from transformers import InternVLProcessor, LlavaOnevisionProcessor, Qwen2_5_VLProcessor, Qwen2VLProcessor

    class ImageOnlyQwen2VLProcessor(_SavesAsStock, Qwen2VLProcessor):
        """Qwen2VLProcessor without a video processor (no torchvision needed)."""

        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            Qwen2VLProcessor.__init__(self, image_processor, tokenizer, None, chat_template=chat_template, **kwargs)

    class ImageOnlyQwen2_5_VLProcessor(_SavesAsStock, Qwen2_5_VLProcessor):
        """Qwen2_5_VLProcessor without a video processor (no torchvision needed)."""

        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            Qwen2_5_VLProcessor.__init__(self, image_processor, tokenizer, None, chat_template=chat_template, **kwargs)

    class ImageOnlyLlavaOnevisionProcessor(_SavesAsStock, LlavaOnevisionProcessor):
        """LlavaOnevisionProcessor without a video processor (no torchvision needed)."""

        def __init__(
            self,
            image_processor=None,
            tokenizer=None,
            num_image_tokens=None,
            vision_feature_select_strategy=None,
            chat_template=None,
            image_token="<image>",
            video_token="<video>",
            vision_aspect_ratio="anyres_max_9",
            **kwargs,
        ):
            LlavaOnevisionProcessor.__init__(
                self,
                image_processor,
                tokenizer,
                None,
                num_image_tokens=num_image_tokens,
                vision_feature_select_strategy=vision_feature_select_strategy,
                chat_template=chat_template,
                image_token=image_token,
                video_token=video_token,
                vision_aspect_ratio=vision_aspect_ratio,
                **kwargs,
            )

    class ImageOnlyInternVLProcessor(_SavesAsStock, InternVLProcessor):
        """InternVLProcessor without a video processor (no torchvision needed)."""

        def __init__(
            self, image_processor=None, tokenizer=None, image_seq_length: int = 256, chat_template=None, **kwargs
        ):
            InternVLProcessor.__init__(
                self,
                image_processor,
                tokenizer,
                None,
                image_seq_length=image_seq_length,
                chat_template=chat_template,
                **kwargs,
            )

    out = {
        c.__mro__[2].__name__: c
        for c in (
            ImageOnlyQwen2VLProcessor,
            ImageOnlyQwen2_5_VLProcessor,
            ImageOnlyLlavaOnevisionProcessor,
            ImageOnlyInternVLProcessor,
        )
    }
    out["PixtralProcessor"] = _define_pixtral_layout()
    for name in (
        "Qwen3VLProcessor",
        "Glm4vProcessor",
        "Glm46VProcessor",
        "Exaone4_5_Processor",
        "HyperCLOVAXVisionV2Processor",
        "Lfm3VlProcessor",
        "Cosmos3EdgeProcessor",
        "Glm5NextProcessor",
        "HYV4VLProcessor",
        "VideoLlama3Processor",
        "Ernie4_5_VLMoeProcessor",
        "CohereCompassProcessor",
    ):
        out[name] = _simple_image_only(name)
    # its save_pretrained copies the video processor's font file; without a video processor there is none
    out["Ernie4_5_VLMoeProcessor"].save_pretrained = _mixin_save_pretrained
    out["LlavaNextVideoProcessor"] = _llava_next_video_image_only()
    out["Gemma4Processor"] = _gemma4_image_only()
    out["VideoLlavaProcessor"] = _video_llava_image_only()
    out["IdeficsProcessor"] = _define_idefics_layout()
    out["Blip2Processor"] = _define_query_first_layout("Blip2Processor")
    out["InstructBlipProcessor"] = _define_query_first_layout("InstructBlipProcessor")
    out["FuyuProcessor"] = _define_fuyu_layout()
    out["AriaProcessor"] = _define_sized_aria()
    out["Dots3NoteProcessor"] = _dots3_note_image_only()
    for name in ("MiniCPMV4_6Processor", "MiniCPMV4_7Processor"):
        out[name] = _minicpmv_image_only(name)
    for name in ("Qwen2_5OmniProcessor", "Qwen3OmniMoeProcessor"):
        out[name] = _omni_image_only(name)
    for name in ("GotOcr2Processor", "PPChart2TableProcessor"):
        out[name] = _define_got_ocr2_layout(name)
    return out


def _video_llava_image_only() -> type:
    from transformers import ProcessorMixin, VideoLlavaProcessor

    class ImageOnlyVideoLlavaProcessor(_SavesAsStock, VideoLlavaProcessor):
        """VideoLlavaProcessor without its (torchvision) video processor, its second argument."""

        def __init__(
            self,
            image_processor=None,
            tokenizer=None,
            patch_size=14,
            vision_feature_select_strategy="default",
            image_token="<image>",
            video_token="<video>",
            chat_template=None,
            num_additional_image_tokens=1,
            **kwargs,
        ):
            # the stock __init__ passes the video processor positionally; set its attributes here instead
            self.patch_size = patch_size
            self.num_additional_image_tokens = num_additional_image_tokens
            self.vision_feature_select_strategy = vision_feature_select_strategy
            self.image_token = getattr(tokenizer, "image_token", None) or image_token
            self.video_token = getattr(tokenizer, "video_token", None) or video_token
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
            self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    return ImageOnlyVideoLlavaProcessor


def _define_idefics_layout() -> type:
    # IdeficsProcessor takes (text, images) pairs as "text, then its images" and a list of plain strings as one
    # sample; cotscope's prompts say where each image goes with a placeholder, one prompt per row
    from transformers import IdeficsProcessor

    class IdeficsLayoutProcessor(_SavesAsStock, IdeficsProcessor):
        """IdeficsProcessor reading ``<image>`` placeholders: each prompt is split at them and handed to the stock
        processor as one interleaved sample (text, image, text, …), which inserts
        ``<fake_token_around_image><image><fake_token_around_image>`` and the image-attention mask."""

        image_token = "<image>"

        def __call__(self, images=None, text=None, **kwargs):
            texts = [text] if isinstance(text, str) else list(text or [])
            per = list(images) if images is not None else [[] for _ in texts]
            samples = []
            for t, ims in zip(texts, per, strict=True):
                ims = list(ims) if isinstance(ims, (list, tuple)) else [ims]
                parts = t.split(self.image_token)
                if len(parts) - 1 != len(ims):
                    raise PromptImageError(
                        f"a prompt holds {len(parts) - 1} {self.image_token} placeholder(s) for {len(ims)} image(s)"
                    )
                sample = [parts[0]]
                for im, part in zip(ims, parts[1:]):
                    sample += [im, part]
                samples.append([x for x in sample if not isinstance(x, str) or x])
            return IdeficsProcessor.__call__(self, text=samples, **kwargs)

    return IdeficsLayoutProcessor


def _define_query_first_layout(stock_name: str) -> type:
    # Blip2Processor tokenizes and pads the text first, then prepends the query tokens: a left-padded batch holds
    # [query tokens][pads][text]. This class builds the same [query tokens][text] per row and pads to the left of
    # the whole row, so a row's tokens are contiguous and the same at any batch size.
    stock = _stock(stock_name)

    class QueryFirstProcessor(_SavesAsStock, stock):
        """BLIP-2-layout processor: the prompt's ``<image>`` placeholder marks that the row has an image; the
        ``num_query_tokens`` query tokens go first in the row, as the stock processor puts them, wherever the
        placeholder was. Padding goes to the left of the whole row."""

        def __call__(self, images=None, text=None, return_tensors=None, padding=True, **kwargs):
            import torch
            from transformers import BatchFeature

            texts = [text] if isinstance(text, str) else list(text or [])
            per = list(images) if images is not None else [[] for _ in texts]
            ph = str(self.image_token)
            ph_id = self.tokenizer.convert_tokens_to_ids(ph)
            rows, flat = [], []
            for t, ims in zip(texts, per, strict=True):
                ims = [x for x in (ims if isinstance(ims, (list, tuple)) else [ims]) if x is not None]
                if t.count(ph) != len(ims) or len(ims) > 1:
                    raise PromptImageError(
                        f"{stock_name}: each prompt takes at most one image and one {ph} placeholder; got "
                        f"{t.count(ph)} placeholder(s) and {len(ims)} image(s)"
                    )
                ids = self.tokenizer(t.replace(ph, ""), **kwargs.get("text_kwargs", {}))["input_ids"]
                rows.append([ph_id] * self.num_query_tokens * len(ims) + list(ids))
                flat += ims
            width = max(len(r) for r in rows)
            pad = self.tokenizer.pad_token_id
            left = self.tokenizer.padding_side == "left"
            out = {"input_ids": [], "attention_mask": []}
            for r in rows:
                n = width - len(r) if padding else 0
                out["input_ids"].append([pad] * n + r if left else r + [pad] * n)
                out["attention_mask"].append([0] * n + [1] * len(r) if left else [1] * len(r) + [0] * n)
            if return_tensors == "pt":
                out = {k: torch.tensor(v) for k, v in out.items()}
            if hasattr(self, "qformer_tokenizer"):  # InstructBLIP: the Q-Former reads the text too (right-padded:
                # its absolute positions then do not depend on the batch)
                qt = self.qformer_tokenizer
                side, qt.padding_side = qt.padding_side, "right"
                try:
                    q = qt([t.replace(ph, "") for t in texts], padding=padding, return_tensors=return_tensors)
                finally:
                    qt.padding_side = side
                out["qformer_input_ids"], out["qformer_attention_mask"] = q["input_ids"], q["attention_mask"]
            if flat:
                out.update(self.image_processor(flat, return_tensors=return_tensors))
            return BatchFeature(out)

    QueryFirstProcessor.__name__ = QueryFirstProcessor.__qualname__ = f"QueryFirst{stock_name}"
    return QueryFirstProcessor


def _define_fuyu_layout() -> type:
    # FuyuProcessor puts the image first (it prepends its own placeholder to every prompt, so a prompt holding one
    # gets two) and strips a SentencePiece "▁" by dropping the first token of the image part, which deletes an image
    # token under a tokenizer that adds none. This class builds the same layout from token ids directly.
    import math

    import numpy as np
    from transformers import FuyuProcessor

    class FuyuLayoutProcessor(_SavesAsStock, FuyuProcessor):
        """Fuyu-layout processor: per row, the image's ``|SPEAKER|`` rows each closed by ``|NEWLINE|``, then BOS,
        then the text (its ``|SPEAKER|`` placeholder removed) and ``<0x04>`` (beginning of answer); rows padded on
        the left. Only ``|SPEAKER|`` positions hold image features (linear patch embeddings)."""

        def __call__(self, images=None, text=None, return_tensors=None, padding=True, **kwargs):
            import torch
            from transformers import BatchFeature

            texts = [text] if isinstance(text, str) else list(text or [])
            per = list(images) if images is not None else [[] for _ in texts]
            flat = []
            for t, ims in zip(texts, per, strict=True):
                ims = [x for x in (ims if isinstance(ims, (list, tuple)) else [ims]) if x is not None]
                if t.count(self.image_token) != len(ims) or len(ims) > 1:
                    raise PromptImageError(
                        f"Fuyu: each prompt takes at most one image and one {self.image_token} placeholder; got "
                        f"{t.count(self.image_token)} placeholder(s) and {len(ims)} image(s)"
                    )
                flat.append(ims[0] if ims else None)
            out: dict[str, Any] = {}
            patches, image_rows = self._patches([im for im in flat if im is not None])
            if patches:
                out["pixel_values"] = torch.from_numpy(np.concatenate(patches))
            reps = iter(image_rows)
            tok = self.tokenizer
            rows = []
            for t, im in zip(texts, flat):
                if im is None:
                    rows.append(tok(t)["input_ids"])
                    continue
                image_ids = next(reps)
                body = t.replace(self.image_token, "") + "<0x04>"  # the stock processor's beginning-of-answer
                rows.append(list(image_ids) + tok(body, add_special_tokens=False)["input_ids"])
            width = max(map(len, rows)) if padding else 0
            pad = tok.pad_token_id
            out["input_ids"] = [[pad] * (width - len(r)) + r for r in rows]
            out["attention_mask"] = [[0] * (width - len(r)) + [1] * len(r) for r in rows]
            if return_tensors == "pt":
                out["input_ids"] = torch.tensor(out["input_ids"])
                out["attention_mask"] = torch.tensor(out["attention_mask"])
            return BatchFeature(out)

        def _patches(self, images: list) -> tuple[list, list[list[int]]]:
            """Per image: its flattened patches (cropped to the patches that hold image content, as the stock
            processor does) and its token ids. The PIL image processor patchifies numpy arrays only, so this stays
            in numpy (the stock processor hands it torch tensors and fails in transformers 5.24)."""
            if not images:
                return [], []
            ip = self.image_processor
            got = ip(images)
            ps = ip.patch_size
            ph, pw = int(ps["height"]), int(ps["width"])
            speaker, newline, bos = self.tokenizer.convert_tokens_to_ids([self.image_token, "|NEWLINE|", "<s>"])
            patches, ids = [], []
            for i in range(len(images)):
                arr = np.asarray(got["images"][i][0])
                h = min(arr.shape[-2], math.ceil(got["image_unpadded_heights"][i][0] / ph) * ph)
                w = min(arr.shape[-1], math.ceil(got["image_unpadded_widths"][i][0] / pw) * pw)
                patches.append(ip.patchify_image(arr[..., :h, :w], patch_size=ps))
                ids.append(([speaker] * (w // pw) + [newline]) * (h // ph) + [bos])
            return patches, ids

    return FuyuLayoutProcessor


def _define_sized_aria() -> type:
    # AriaProcessor's class-level call defaults (max_image_size 980) win over its image processor's settings and are
    # not saved; this subclass saves the size, so a saved processor keeps its geometry
    from transformers import AriaProcessor

    class SizedAriaProcessor(_SavesAsStock, AriaProcessor):
        """AriaProcessor whose ``max_image_size`` call default is an argument (saved with the processor)."""

        def __init__(
            self, image_processor=None, tokenizer=None, chat_template=None, size_conversion=None, max_image_size=980
        ):
            AriaProcessor.__init__(self, image_processor, tokenizer, chat_template, size_conversion)
            self.max_image_size = int(max_image_size)
            self.images_kwargs = {**AriaProcessor.images_kwargs, "max_image_size": self.max_image_size}

    return SizedAriaProcessor


def _dots3_note_image_only() -> type:
    from transformers import Dots3NoteProcessor, ProcessorMixin

    class ImageOnlyDots3NoteProcessor(_SavesAsStock, Dots3NoteProcessor):
        """Dots3NoteProcessor without its (torchvision) video processor and audio feature extractor."""

        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            self.image_token, self.video_token, self.audio_token = "<|imgpad|>", "<|video_pad|>", "<|audio_comp_pad|>"
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
            self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
            self.audio_token_id = tokenizer.convert_tokens_to_ids(self.audio_token)
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template, **kwargs)

    return ImageOnlyDots3NoteProcessor


def _minicpmv_image_only(name: str) -> type:
    from transformers import ProcessorMixin

    stock = _stock(name)

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        # the stock __init__ reads the video processor's settings; set the image ones here and no video ones
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template, **kwargs)
        self.slice_mode = image_processor.slice_mode
        self.video_slice_mode = False
        self.default_use_image_id = image_processor.use_image_id
        self.image_token_divisor = 4 if image_processor.downsample_mode == "4x" else 16
        self.video_token_divisor = self.image_token_divisor
        for attr in MINICPMV_TOKENS:
            setattr(self, attr, getattr(tokenizer, attr))
        self.image_token_id, self.video_token_id = tokenizer.image_token_id, tokenizer.video_token_id

    doc = f"{name} without its (torchvision) video processor."
    return type(f"ImageOnly{name}", (_SavesAsStock, stock), {"__init__": __init__, "__doc__": doc})


def _omni_image_only(name: str) -> type:
    from transformers import ProcessorMixin

    stock = _stock(name)

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        # the stock __init__ hands ProcessorMixin a (torchvision) video processor and an audio feature extractor
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template, **kwargs)
        for attr in OMNI_TOKENS:
            setattr(self, attr, getattr(tokenizer, attr))
        for attr in ("image_token_id", "audio_token_id", "video_token_id"):
            setattr(self, attr, getattr(tokenizer, attr))

    doc = f"{name} without its video processor and audio feature extractor (image and text only)."
    return type(f"ImageOnly{name}", (_SavesAsStock, stock), {"__init__": __init__, "__doc__": doc})


def _gemma4_image_only() -> type:
    from transformers import Gemma4Processor

    class ImageOnlyGemma4Processor(_SavesAsStock, Gemma4Processor):
        """Gemma4Processor without its audio feature extractor and (torchvision) video processor."""

        def __init__(
            self,
            image_processor=None,
            tokenizer=None,
            chat_template=None,
            image_seq_length: int = 280,
            audio_seq_length: int = 750,
            audio_ms_per_token: int = 40,
            **kwargs,
        ):
            # the stock __init__ hands ProcessorMixin a feature extractor and a video processor, which this
            # signature does not name; set the same attributes here and hand ProcessorMixin only what exists
            from transformers import ProcessorMixin

            self.image_seq_length = image_seq_length
            self.image_token_id = tokenizer.image_token_id
            self.boi_token, self.eoi_token, self.image_token = (
                tokenizer.boi_token,
                tokenizer.eoi_token,
                tokenizer.image_token,
            )
            add_image_tokens(tokenizer, ["<|video|>"])
            self.video_token = "<|video|>"
            self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
            self.audio_seq_length, self.audio_ms_per_token = audio_seq_length, audio_ms_per_token
            for name in ("audio_token", "audio_token_id", "boa_token", "eoa_token"):
                setattr(self, name, getattr(tokenizer, name, None))
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template, **kwargs)

    return ImageOnlyGemma4Processor


def _define_got_ocr2_layout(stock_name: str) -> type:
    # GOT-OCR2's processor takes the per-image token count only as a call argument (default 256) and PP-Chart2Table's
    # expands nothing (its checkpoint's prompts hold the 256 <imgpad> tokens already); this class expands the
    # <imgpad> placeholder itself and saves the count, so a saved processor reproduces the same layout.
    from transformers import ProcessorMixin

    class GotOcr2LayoutProcessor(ProcessorMixin):
        """GOT-OCR2-layout processor: each ``<imgpad>`` placeholder (prompts write ``<img><imgpad></img>``) becomes
        ``num_image_tokens`` copies of itself per image tile."""

        def __init__(self, image_processor=None, tokenizer=None, num_image_tokens: int = 256, chat_template=None, **kw):
            super().__init__(image_processor, tokenizer, chat_template=chat_template)
            self.num_image_tokens = int(num_image_tokens)
            self.image_token = "<imgpad>"
            self.prompt_placeholder = "<img><imgpad></img>"
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)

        def replace_image_token(self, image_inputs: dict, image_idx: int, **kwargs) -> str:
            tiles = image_inputs.get("num_patches")
            n = int(tiles[image_idx]) if tiles is not None else 1
            return self.image_token * (self.num_image_tokens * n)

        @property
        def unused_input_names(self) -> list[str]:
            return ["num_patches"]

        def to_dict(self) -> dict[str, Any]:
            d = super().to_dict()
            d["processor_class"] = stock_name
            return d

    GotOcr2LayoutProcessor.__name__ = GotOcr2LayoutProcessor.__qualname__ = f"Layout{stock_name}"
    return GotOcr2LayoutProcessor


def _llava_next_video_image_only() -> type:
    from transformers import LlavaNextVideoProcessor

    class ImageOnlyLlavaNextVideoProcessor(_SavesAsStock, LlavaNextVideoProcessor):
        """LlavaNextVideoProcessor without a video processor (its first argument; no torchvision needed)."""

        def __init__(
            self,
            image_processor=None,
            tokenizer=None,
            chat_template=None,
            patch_size=None,
            vision_feature_select_strategy=None,
            video_token="<video>",
            image_token="<image>",
            num_additional_image_tokens=0,
            **kwargs,
        ):
            # the stock __init__ passes the video processor first, which ProcessorMixin would map onto this
            # signature's image_processor; set the same attributes here and hand ProcessorMixin only what exists
            from transformers import ProcessorMixin

            self.patch_size = patch_size
            self.num_additional_image_tokens = num_additional_image_tokens
            self.vision_feature_select_strategy = vision_feature_select_strategy
            self.image_token = getattr(tokenizer, "image_token", None) or image_token
            self.video_token = getattr(tokenizer, "video_token", None) or video_token
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
            self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    return ImageOnlyLlavaNextVideoProcessor


def _simple_image_only(name: str) -> type:
    """``ImageOnly<name>``: a stock processor whose ``__init__`` is ``(image_processor, tokenizer, video_processor,
    chat_template, **kw)``, built without its (torchvision) video processor."""
    stock = _stock(name)

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        stock.__init__(self, image_processor, tokenizer, None, chat_template=chat_template, **kwargs)

    doc = f"{name} without a video processor (no torchvision needed)."
    return type(f"ImageOnly{name}", (_SavesAsStock, stock), {"__init__": __init__, "__doc__": doc})


def _mixin_save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs):
    from transformers import ProcessorMixin

    return ProcessorMixin.save_pretrained(self, save_directory, push_to_hub, **kwargs)


_IMAGE_ONLY: dict[str, type] = {}
_LAYOUT_CLASSES = (
    "PixtralProcessor",
    "GotOcr2Processor",
    "PPChart2TableProcessor",
    "IdeficsProcessor",
    "Blip2Processor",
    "InstructBlipProcessor",
    "FuyuProcessor",
    "AriaProcessor",
)
"""Stock processors cotscope replaces by its own class when loading a saved one: it produces the same token layout,
and saves what the stock class does not (see each class)."""


def image_only_variants() -> list[str]:
    """Names of the stock processors cotscope has a torchvision-free variant of."""
    if not _IMAGE_ONLY:
        _IMAGE_ONLY.update(_define_image_only())
    return sorted(_IMAGE_ONLY)


def image_only_class(name: str) -> type:
    """The image-only subclass of the stock processor ``name`` (e.g. ``"Qwen2VLProcessor"``)."""
    if not _IMAGE_ONLY:
        _IMAGE_ONLY.update(_define_image_only())
    if name not in _IMAGE_ONLY:
        raise KeyError(f"no image-only variant of {name}; variants exist for {sorted(_IMAGE_ONLY)}")
    return _IMAGE_ONLY[name]


# ------------------------------------------------------------------------------------------- recipes


def _pil(module: str, name: str) -> type:
    import importlib

    return getattr(importlib.import_module(f"transformers.models.{module}.image_processing_pil_{module}"), name)


def _chat_template(tokenizer: Any, chat_template: str | None) -> str | None:
    return chat_template if chat_template is not None else getattr(tokenizer, "chat_template", None)


def llava_processor(
    tokenizer: Any,
    *,
    image_size: int = 32,
    patch_size: int = 8,
    image_token: str = "<image>",
    vision_feature_select_strategy: str = "default",
    num_additional_image_tokens: int = 1,
    chat_template: str | None = None,
) -> Any:
    """LLaVA-1.5 style: CLIP preprocessing, one token per patch (``(image_size/patch_size)^2``)."""
    from transformers import LlavaProcessor

    add_image_tokens(tokenizer, [image_token])
    ip = _pil("clip", "CLIPImageProcessorPil")(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    return LlavaProcessor(
        image_processor=ip,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy=vision_feature_select_strategy,
        num_additional_image_tokens=num_additional_image_tokens,
        image_token=image_token,
        chat_template=_chat_template(tokenizer, chat_template),
    )


def llava_next_processor(
    tokenizer: Any,
    *,
    image_size: int = 32,
    patch_size: int = 8,
    grid_pinpoints: Sequence[Sequence[int]] = ((32, 32), (32, 64), (64, 32), (64, 64)),
    image_token: str = "<image>",
    vision_feature_select_strategy: str = "default",
    num_additional_image_tokens: int = 1,
    chat_template: str | None = None,
) -> Any:
    """LLaVA-NeXT: anyres tiling over ``grid_pinpoints`` plus a base image and row newlines."""
    from transformers import LlavaNextProcessor

    add_image_tokens(tokenizer, [image_token])
    ip = _pil("llava_next", "LlavaNextImageProcessorPil")(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        image_grid_pinpoints=[list(p) for p in grid_pinpoints],
    )
    return LlavaNextProcessor(
        image_processor=ip,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy=vision_feature_select_strategy,
        num_additional_image_tokens=num_additional_image_tokens,
        image_token=image_token,
        chat_template=_chat_template(tokenizer, chat_template),
    )


def llava_onevision_processor(
    tokenizer: Any,
    *,
    image_size: int = 32,
    patch_size: int = 8,
    grid_pinpoints: Sequence[Sequence[int]] = ((32, 32), (32, 64), (64, 32), (64, 64)),
    vision_feature_select_strategy: str = "full",
    chat_template: str | None = None,
) -> Any:
    """LLaVA-OneVision (image-only): SigLIP-style anyres tiles, ``<image>`` placeholder."""
    add_image_tokens(tokenizer, named={"image_token": "<image>", "video_token": "<video>"})
    ip = _pil("llava_onevision", "LlavaOnevisionImageProcessorPil")(
        size={"height": image_size, "width": image_size}, image_grid_pinpoints=[list(p) for p in grid_pinpoints]
    )
    cls = image_only_class("LlavaOnevisionProcessor")
    return cls(
        image_processor=ip,
        tokenizer=tokenizer,
        num_image_tokens=(image_size // patch_size) ** 2,
        vision_feature_select_strategy=vision_feature_select_strategy,
        chat_template=_chat_template(tokenizer, chat_template),
    )


QWEN_VL_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")


def _qwen_vl(
    name: str,
    tokenizer: Any,
    min_pixels: int,
    max_pixels: int,
    patch_size: int,
    merge_size: int,
    chat_template: str | None,
) -> Any:
    proc = dynamic_resolution_processor(
        tokenizer,
        name,
        min_pixels=min_pixels,
        max_pixels=max_pixels,
        patch_size=patch_size,
        merge_size=merge_size,
        temporal_patch_size=2,
    )
    if chat_template is not None:
        proc.chat_template = chat_template
    return proc


def qwen2_vl_processor(
    tokenizer: Any,
    *,
    min_pixels: int = 56 * 56,
    max_pixels: int = 112 * 112,
    patch_size: int = 14,
    merge_size: int = 2,
    chat_template: str | None = None,
) -> Any:
    """Qwen2-VL (image-only): dynamic resolution, ``<|vision_start|><|image_pad|><|vision_end|>``."""
    return _qwen_vl("Qwen2VLProcessor", tokenizer, min_pixels, max_pixels, patch_size, merge_size, chat_template)


def qwen2_5_vl_processor(
    tokenizer: Any,
    *,
    min_pixels: int = 56 * 56,
    max_pixels: int = 112 * 112,
    patch_size: int = 14,
    merge_size: int = 2,
    chat_template: str | None = None,
) -> Any:
    """Qwen2.5-VL (image-only); same preprocessing as Qwen2-VL."""
    return _qwen_vl("Qwen2_5_VLProcessor", tokenizer, min_pixels, max_pixels, patch_size, merge_size, chat_template)


def idefics2_processor(
    tokenizer: Any,
    *,
    image_size: int = 32,
    image_seq_len: int = 4,
    image_token: str | None = None,
    boundary_token: str | None = None,
    chat_template: str | None = None,
    image_processor: Any = None,
) -> Any:
    """Idefics2: each image becomes ``<fake_token_around_image><image>×image_seq_len<fake_token_around_image>``.

    ``image_token``/``boundary_token`` reuse existing tokens (e.g. an unused SmolLM2 special token) instead of
    adding ``<image>``/``<fake_token_around_image>``, so the vocabulary stays unchanged. ``image_processor``
    replaces the default ``Idefics2ImageProcessorPil`` (``image_size`` square, no splitting).
    """
    from transformers import Idefics2Processor

    if image_token is not None:
        boundary = boundary_token or image_token
        missing = [t for t in {image_token, boundary} if t not in tokenizer.get_vocab()]
        if missing:
            raise ValueError(
                f"tokens {missing} are not in the tokenizer's vocabulary; pick existing tokens or "
                "leave image_token=None to add <image>/<fake_token_around_image>."
            )
        add_image_tokens(tokenizer, named={"image_token": image_token, "image_boundary_token": boundary})
    ip = image_processor or _pil("idefics2", "Idefics2ImageProcessorPil")(
        size={"shortest_edge": image_size, "longest_edge": image_size}, do_image_splitting=False
    )
    return Idefics2Processor(
        image_processor=ip,
        tokenizer=tokenizer,
        image_seq_len=image_seq_len,
        chat_template=_chat_template(tokenizer, chat_template),
    )


IDEFICS3_TOKENS = ("<global-img>", *(f"<row_{i + 1}_col_{j + 1}>" for i in range(6) for j in range(6)))


def idefics3_processor(
    tokenizer: Any,
    *,
    image_size: int = 32,
    image_seq_len: int = 4,
    do_image_splitting: bool = False,
    chat_template: str | None = None,
) -> Any:
    """Idefics3 / SmolVLM (``Idefics3Processor`` serves both; ``SmolVLMProcessor`` needs num2words).

    ``image_seq_len = (image_size/patch_size)^2 / scale_factor^2``. The processor adds
    ``<fake_token_around_image>``, ``<image>`` and ``<end_of_utterance>`` to the tokenizer.
    """
    from transformers import Idefics3Processor

    add_image_tokens(tokenizer, IDEFICS3_TOKENS)
    ip = _pil("idefics3", "Idefics3ImageProcessorPil")(
        size={"longest_edge": image_size},
        max_image_size={"longest_edge": image_size},
        do_image_splitting=do_image_splitting,
    )
    return Idefics3Processor(
        image_processor=ip,
        tokenizer=tokenizer,
        image_seq_len=image_seq_len,
        chat_template=_chat_template(tokenizer, chat_template),
    )


def gemma3_processor(
    tokenizer: Any, *, image_size: int = 32, image_seq_length: int = 4, chat_template: str | None = None
) -> Any:
    """Gemma 3: the prompt holds ``<start_of_image>``; it expands to ``<image_soft_token>×image_seq_length``."""
    from transformers import Gemma3Processor

    add_image_tokens(
        tokenizer,
        named={"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"},
    )
    ip = _pil("gemma3", "Gemma3ImageProcessorPil")(
        size={"height": image_size, "width": image_size}, do_pan_and_scan=False
    )
    return Gemma3Processor(
        image_processor=ip,
        tokenizer=tokenizer,
        image_seq_length=image_seq_length,
        chat_template=_chat_template(tokenizer, chat_template),
    )


def internvl_processor(
    tokenizer: Any, *, image_size: int = 32, image_seq_length: int = 4, chat_template: str | None = None
) -> Any:
    """InternVL (transformers-native, image-only): ``<img><IMG_CONTEXT>×image_seq_length</img>``.

    Call it with ``crop_to_patches=False`` (the adapter's ``processor_kwargs``) for one tile per image.
    """
    add_image_tokens(
        tokenizer,
        named={
            "start_image_token": "<img>",
            "end_image_token": "</img>",
            "context_image_token": "<IMG_CONTEXT>",
            "video_token": "<video>",
        },
    )
    ip = _pil("got_ocr2", "GotOcr2ImageProcessorPil")(
        size={"height": image_size, "width": image_size}, crop_to_patches=False
    )
    return image_only_class("InternVLProcessor")(
        image_processor=ip,
        tokenizer=tokenizer,
        image_seq_length=image_seq_length,
        chat_template=_chat_template(tokenizer, chat_template),
    )


def paligemma_processor(tokenizer: Any, *, image_size: int = 32, image_seq_length: int = 16) -> Any:
    """PaliGemma: ``<image>`` expands to ``image_seq_length`` tokens, then BOS; the processor appends ``"\\n"``.

    The processor returns ``token_type_ids`` (0 = prefix, attended bidirectionally; 1 = suffix). Without a
    ``suffix`` every prompt token is prefix: image and text attend to each other in both directions.
    """
    from transformers import PaliGemmaProcessor

    add_image_tokens(tokenizer, named={"image_token": "<image>"})
    ip = _pil("siglip", "SiglipImageProcessorPil")(size={"height": image_size, "width": image_size})
    ip.image_seq_length = image_seq_length
    return PaliGemmaProcessor(image_processor=ip, tokenizer=tokenizer, chat_template=_chat_template(tokenizer, None))


def _define_pixtral_layout() -> type:
    # transformers' PixtralProcessor is gated on torchvision (its module imports the torchvision image processor for
    # one token-count helper); this class produces the same token layout from the PIL image processor.
    from transformers import ProcessorMixin

    class ImageOnlyPixtralProcessor(ProcessorMixin):
        """Pixtral-layout processor (Mistral3) on the PIL image processor: one row of ``[IMG]`` per merged patch row,
        each row closed by ``[IMG_BREAK]``, the last one by ``[IMG_END]`` (no torchvision needed)."""

        def __init__(
            self,
            image_processor=None,
            tokenizer=None,
            patch_size: int = 16,
            spatial_merge_size: int = 1,
            chat_template=None,
            image_token: str = "[IMG]",
            image_break_token: str = "[IMG_BREAK]",
            image_end_token: str = "[IMG_END]",
            **kwargs,
        ):
            super().__init__(image_processor, tokenizer, chat_template=chat_template)
            self.patch_size, self.spatial_merge_size = int(patch_size), int(spatial_merge_size)
            self.image_token, self.image_break_token, self.image_end_token = (
                image_token,
                image_break_token,
                image_end_token,
            )
            self.image_token_id = tokenizer.convert_tokens_to_ids(image_token)

        def _process_images(self, images, **images_kwargs):
            images_kwargs["patch_size"] = self.patch_size * self.spatial_merge_size  # images snap to merged patches
            return super()._process_images(images, **images_kwargs)

        def replace_image_token(self, image_inputs: dict, image_idx: int, **kwargs) -> str:
            step = self.patch_size * self.spatial_merge_size
            h, w = (int(x) for x in image_inputs["image_sizes"][image_idx])
            row = self.image_token * (w // step)
            return self.image_break_token.join([row] * (h // step)) + self.image_end_token

        @property
        def model_input_names(self) -> list[str]:
            return [*self.tokenizer.model_input_names, "pixel_values", "image_sizes"]

        def to_dict(self) -> dict[str, Any]:
            d = super().to_dict()
            d["processor_class"] = "PixtralProcessor"
            return d

    return ImageOnlyPixtralProcessor


def pixtral_processor(
    tokenizer: Any, *, longest_edge: int = 48, patch_size: int = 8, spatial_merge_size: int = 2
) -> Any:
    """Mistral3 / Pixtral: variable resolution; each image becomes rows of ``[IMG]`` ending in ``[IMG_BREAK]``,
    the last row in ``[IMG_END]``. Only ``[IMG]`` positions receive image features."""
    add_image_tokens(tokenizer, ["[IMG]", "[IMG_BREAK]", "[IMG_END]"])
    ip = _pil("pixtral", "PixtralImageProcessorPil")(
        size={"longest_edge": longest_edge}, patch_size={"height": patch_size, "width": patch_size}
    )
    return image_only_class("PixtralProcessor")(
        image_processor=ip,
        tokenizer=tokenizer,
        patch_size=patch_size,
        spatial_merge_size=spatial_merge_size,
        chat_template=_chat_template(tokenizer, None),
    )


def chameleon_processor(tokenizer: Any, *, image_size: int = 32, image_seq_length: int = 16) -> Any:
    """Chameleon (early fusion): ``<image>`` expands to ``<racm3:break>`` + ``<image>``×n + ``<eoss>``; the model
    replaces the ``<image>`` tokens by VQ codebook tokens of its own vocabulary."""
    from transformers import ChameleonProcessor

    add_image_tokens(tokenizer, named={"image_token": "<image>", "boi_token": "<racm3:break>", "eoi_token": "<eoss>"})
    ip = _pil("chameleon", "ChameleonImageProcessorPil")(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    proc = ChameleonProcessor(image_processor=ip, tokenizer=tokenizer, image_seq_length=image_seq_length)
    proc.chat_template = _chat_template(tokenizer, None)
    return proc


def mllama_processor(tokenizer: Any, *, image_size: int = 32, max_image_tiles: int = 2) -> Any:
    """Mllama (Llama 3.2 Vision): one ``<|image|>`` marker per image; images enter through cross-attention layers."""
    from transformers import MllamaProcessor

    add_image_tokens(tokenizer, ["<|python_tag|>"], named={"image_token": "<|image|>"})
    ip = _pil("mllama", "MllamaImageProcessorPil")(
        size={"height": image_size, "width": image_size}, max_image_tiles=max_image_tiles
    )
    return MllamaProcessor(image_processor=ip, tokenizer=tokenizer, chat_template=_chat_template(tokenizer, None))


def deepseek_vl_processor(tokenizer: Any, *, image_size: int = 32, num_image_tokens: int = 16) -> Any:
    """DeepSeek-VL: ``<image_placeholder>`` expands to ``num_image_tokens`` copies of itself (SigLIP patches)."""
    from transformers import DeepseekVLProcessor

    add_image_tokens(tokenizer, named={"image_token": "<image_placeholder>"})
    ip = _pil("deepseek_vl", "DeepseekVLImageProcessorPil")(size={"height": image_size, "width": image_size})
    return DeepseekVLProcessor(
        image_processor=ip,
        tokenizer=tokenizer,
        num_image_tokens=num_image_tokens,
        chat_template=_chat_template(tokenizer, None),
    )


def lighton_ocr_processor(
    tokenizer: Any, *, longest_edge: int = 48, patch_size: int = 8, spatial_merge_size: int = 2
) -> Any:
    """LightOnOCR: Pixtral vision at native resolution, but the image becomes plain ``<|image_pad|>`` tokens (no
    break tokens)."""
    from transformers import LightOnOcrProcessor

    add_image_tokens(
        tokenizer,
        named={
            "image_token": "<|image_pad|>",
            "image_break_token": "<|vision_pad|>",
            "image_end_token": "<|vision_end|>",
        },
    )
    ip = _pil("pixtral", "PixtralImageProcessorPil")(
        size={"longest_edge": longest_edge}, patch_size={"height": patch_size, "width": patch_size}
    )
    return LightOnOcrProcessor(
        image_processor=ip,
        tokenizer=tokenizer,
        patch_size=patch_size,
        spatial_merge_size=spatial_merge_size,
        chat_template=_chat_template(tokenizer, None),
    )


AYA_TOKENS = ("<|START_OF_IMG|>", "<|END_OF_IMG|>", "<|IMG_PATCH|>", "<|IMG_LINE_BREAK|>", "TILE", "TILE_GLOBAL")


def aya_vision_processor(
    tokenizer: Any, *, image_size: int = 32, patch_size: int = 8, downsample_factor: int = 2
) -> Any:
    """Aya Vision: ``<image>`` expands to ``<|START_OF_IMG|>`` TILE_GLOBAL ``<|IMG_PATCH|>``×n ``<|END_OF_IMG|>``
    (one tile here); only ``<|IMG_PATCH|>`` positions hold image features."""
    from transformers import AyaVisionProcessor

    add_image_tokens(tokenizer, ["<image>", *AYA_TOKENS])
    ip = _pil("got_ocr2", "GotOcr2ImageProcessorPil")(
        size={"height": image_size, "width": image_size}, crop_to_patches=False
    )
    return AyaVisionProcessor(
        image_processor=ip,
        tokenizer=tokenizer,
        patch_size=patch_size,
        img_size=image_size,
        downsample_factor=downsample_factor,
        chat_template=_chat_template(tokenizer, None),
    )


def qwen3_vl_processor(tokenizer: Any, **kw: Any) -> Any:
    """Qwen3-VL (image-only): as Qwen2-VL with 16-px patches; its vision tower also feeds DeepStack features into the
    first language-model layers at the image positions."""
    return dynamic_resolution_processor(tokenizer, "Qwen3VLProcessor", **{**QWEN3_GEOMETRY, **kw})


GLM4V_TOKENS = ("<|begin_of_image|>", "<|end_of_image|>", "<|begin_of_video|>", "<|end_of_video|>")


def glm4v_processor(
    tokenizer: Any,
    *,
    min_pixels: int = 56 * 56,
    max_pixels: int = 112 * 112,
    patch_size: int = 14,
    merge_size: int = 2,
    _variant: str = "glm4v",
) -> Any:
    """GLM-4V (image-only): Qwen2-VL-style dynamic resolution; ``<|image|>`` expands to one token per merged patch
    (prompts wrap it in ``<|begin_of_image|>`` / ``<|end_of_image|>``)."""
    add_image_tokens(tokenizer, GLM4V_TOKENS, named={"image_token": "<|image|>", "video_token": "<|video|>"})
    pil = {
        "glm4v": ("glm4v", "Glm4vImageProcessorPil"),
        "glm46v": ("glm46v", "Glm46VImageProcessorPil"),
        "glmga": ("glmga", "GlmgaImageProcessorPil"),
    }[_variant]
    ip = _pil(*pil)(
        size={"shortest_edge": min_pixels, "longest_edge": max_pixels},
        patch_size=patch_size,
        merge_size=merge_size,
        temporal_patch_size=2,
    )
    name = {"glm4v": "Glm4vProcessor", "glm46v": "Glm46VProcessor", "glmga": "Glm46VProcessor"}[_variant]
    return image_only_class(name)(
        image_processor=ip, tokenizer=tokenizer, chat_template=_chat_template(tokenizer, None)
    )


def glm46v_processor(tokenizer: Any, **kw: Any) -> Any:
    """GLM-4.6V (image-only): the GLM-4V layout with its own processor classes."""
    return glm4v_processor(tokenizer, _variant="glm46v", **kw)


def dynamic_resolution_processor(
    tokenizer: Any,
    processor_class: str,
    *,
    pil: tuple[str, str] = ("qwen2_vl", "Qwen2VLImageProcessorPil"),
    tokens: Sequence[str] = QWEN_VL_TOKENS,
    named: dict[str, str] | None = None,
    **image_kw: Any,
) -> Any:
    """A Qwen2-VL-style processor (image-only variant when the stock one wants a video processor): ``tokens`` added
    to ``tokenizer``, the PIL image processor ``pil`` (module, class) built with ``image_kw``."""
    add_image_tokens(tokenizer, tokens, named=named)
    ip = _pil(*pil)(**image_kw)
    cls = image_only_class(processor_class) if processor_class in image_only_variants() else _stock(processor_class)
    return cls(image_processor=ip, tokenizer=tokenizer, chat_template=_chat_template(tokenizer, None))


QWEN2_GEOMETRY = dict(min_pixels=56 * 56, max_pixels=112 * 112, patch_size=14, merge_size=2, temporal_patch_size=2)
"""Tiny-model geometry of the Qwen2-VL image processor: 14-px patches, 2x2 merge, 4-9 image tokens."""
QWEN3_GEOMETRY = dict(QWEN2_GEOMETRY, min_pixels=64 * 64, max_pixels=128 * 128, patch_size=16)


def glmga_processor(tokenizer: Any, **kw: Any) -> Any:
    """GLM-GA (image-only): transformers registers no processor for it; its model is GLM-4.6V's, so this is the
    GLM-4.6V processor on GLM-GA's own image processor (patch_expand_factor 1: the GLM-4.6V token count)."""
    return glm4v_processor(tokenizer, _variant="glmga", **kw)


def exaone4_5_processor(tokenizer: Any, **kw: Any) -> Any:
    """EXAONE 4.5 (image-only): Qwen2-VL image processing; ``<|image_pad|>`` tokens."""
    return dynamic_resolution_processor(tokenizer, "Exaone4_5_Processor", **{**QWEN2_GEOMETRY, **kw})


def lfm3_vl_processor(tokenizer: Any, **kw: Any) -> Any:
    """LFM3-VL (image-only): Qwen2-VL image processing with 16-px patches; ``<|image_pad|>`` tokens."""
    return dynamic_resolution_processor(tokenizer, "Lfm3VlProcessor", **{**QWEN3_GEOMETRY, **kw})


def hyperclovax_vision_v2_processor(tokenizer: Any, **kw: Any) -> Any:
    """HyperCLOVA X Vision v2 (image-only): Qwen2-VL image processing; ``<|image_pad|>`` tokens."""
    return dynamic_resolution_processor(tokenizer, "HyperCLOVAXVisionV2Processor", **{**QWEN2_GEOMETRY, **kw})


def cosmos3_edge_processor(tokenizer: Any, **kw: Any) -> Any:
    """Cosmos3 Edge (image-only): dynamic resolution with 16-px patches and 2x2 merging, one frame per image;
    ``<|vision_start|><|image_pad|><|vision_end|>``."""
    geometry = dict(size={"shortest_edge": 64 * 64, "longest_edge": 128 * 128}, patch_size=16, merge_size=2)
    return dynamic_resolution_processor(
        tokenizer, "Cosmos3EdgeProcessor", pil=("cosmos3_edge", "Cosmos3EdgeImageProcessorPil"), **{**geometry, **kw}
    )


def video_llama_3_processor(tokenizer: Any, **kw: Any) -> Any:
    """VideoLLaMA 3, image path (image-only): dynamic resolution with 14-px patches, no merging for images;
    ``<|image_pad|>`` tokens."""
    geometry = dict(size={"shortest_edge": 28 * 28, "longest_edge": 56 * 56}, patch_size=14, merge_size=1)
    return dynamic_resolution_processor(
        tokenizer, "VideoLlama3Processor", pil=("video_llama_3", "VideoLlama3ImageProcessorPil"), **{**geometry, **kw}
    )


ERNIE_VL_TOKENS = {
    "image_token": "<|IMAGE_PLACEHOLDER|>",
    "image_start_token": "<|IMAGE_START|>",
    "image_end_token": "<|IMAGE_END|>",
    "video_token": "<|VIDEO_PLACEHOLDER|>",
    "video_start_token": "<|VIDEO_START|>",
    "video_end_token": "<|VIDEO_END|>",
}


def ernie4_5_vl_moe_processor(tokenizer: Any, **kw: Any) -> Any:
    """ERNIE-4.5-VL (image-only): dynamic resolution, 14-px patches, 2x2 merge;
    ``<|IMAGE_START|><|IMAGE_PLACEHOLDER|><|IMAGE_END|>``. The processor also returns ``moe_mm_token_type_ids``
    (image tokens and their start/end go to the vision experts)."""
    geometry = dict(size={"shortest_edge": 56 * 56, "longest_edge": 112 * 112}, patch_size=14, merge_size=2)
    return dynamic_resolution_processor(
        tokenizer,
        "Ernie4_5_VLMoeProcessor",
        pil=("ernie4_5_vl_moe", "Ernie4_5_VLMoeImageProcessorPil"),
        tokens=(),
        named=ERNIE_VL_TOKENS,
        **{**geometry, **kw},
    )


def qianfan_ocr_processor(tokenizer: Any, *, image_size: int = 32, image_seq_length: int = 4) -> Any:
    """Qianfan-OCR: the prompt's ``<image>`` becomes ``<img>`` + ``<IMG_CONTEXT>`` x ``image_seq_length`` +
    ``</img>`` (InternVL layout); one tile per image (``crop_to_patches=False``, the adapter's processor kwargs)."""
    from transformers import QianfanOCRProcessor

    add_image_tokens(
        tokenizer,
        ["<image>"],
        named={"start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>"},
    )
    ip = _pil("got_ocr2", "GotOcr2ImageProcessorPil")(
        size={"height": image_size, "width": image_size}, crop_to_patches=False
    )
    return QianfanOCRProcessor(
        image_processor=ip,
        tokenizer=tokenizer,
        image_seq_length=image_seq_length,
        chat_template=_chat_template(tokenizer, None),
    )


def dots3_note_processor(tokenizer: Any, **kw: Any) -> Any:
    """dots3-note (image-only): Qwen2-VL image processing (one frame per image); ``<|imgpad|>`` tokens between
    ``<|img|>`` / ``<|endofimg|>``."""
    geometry = dict(QWEN2_GEOMETRY, temporal_patch_size=1)
    return dynamic_resolution_processor(
        tokenizer,
        "Dots3NoteProcessor",
        tokens=("<|img|>", "<|imgpad|>", "<|endofimg|>", "<|video_pad|>", "<|audio_comp_pad|>"),
        **{**geometry, **kw},
    )


MINICPMV_TOKENS = {
    "image_token": "<|image_pad|>",
    "video_token": "<|video_pad|>",
    "image_start_token": "<image>",
    "image_end_token": "</image>",
    "slice_start_token": "<slice>",
    "slice_end_token": "</slice>",
    "image_id_start_token": "<image_id>",
    "image_id_end_token": "</image_id>",
}


def minicpmv_processor(
    tokenizer: Any, *, scale_resolution: int = 112, patch_size: int = 14, _name: str = "MiniCPMV4_6Processor"
) -> Any:
    """MiniCPM-V 4.6 / 4.7 (image-only): the image resized to about ``scale_resolution``; each image becomes
    ``<image_id>i</image_id><image>`` + ``<|image_pad|>`` x (patches / 16) + ``</image>`` (no slices here)."""
    add_image_tokens(tokenizer, named=MINICPMV_TOKENS)
    ip = _pil("minicpmv4_6", "MiniCPMV4_6ImageProcessorPil")(
        scale_resolution=scale_resolution, patch_size=patch_size, slice_mode=False
    )
    return image_only_class(_name)(
        image_processor=ip, tokenizer=tokenizer, chat_template=_chat_template(tokenizer, None)
    )


def minicpmv4_7_processor(tokenizer: Any, **kw: Any) -> Any:
    """MiniCPM-V 4.7 (image-only): the MiniCPM-V 4.6 image processing and layout."""
    return minicpmv_processor(tokenizer, _name="MiniCPMV4_7Processor", **kw)


OMNI_TOKENS = {
    "image_token": "<|IMAGE|>",
    "audio_token": "<|AUDIO|>",
    "video_token": "<|VIDEO|>",
    "vision_bos_token": "<|vision_bos|>",
    "vision_eos_token": "<|vision_eos|>",
    "audio_bos_token": "<|audio_bos|>",
    "audio_eos_token": "<|audio_eos|>",
}


def qwen2_5_omni_processor(tokenizer: Any, **kw: Any) -> Any:
    """Qwen2.5-Omni thinker (image and text only): Qwen2-VL image processing;
    ``<|vision_bos|><|IMAGE|><|vision_eos|>``, the image token expanded to one token per merged patch."""
    return dynamic_resolution_processor(
        tokenizer, "Qwen2_5OmniProcessor", tokens=(), named=OMNI_TOKENS, **{**QWEN2_GEOMETRY, **kw}
    )


def qwen3_omni_moe_processor(tokenizer: Any, **kw: Any) -> Any:
    """Qwen3-Omni-MoE thinker (image and text only): as Qwen2.5-Omni with 16-px patches."""
    return dynamic_resolution_processor(
        tokenizer, "Qwen3OmniMoeProcessor", tokens=(), named=OMNI_TOKENS, **{**QWEN3_GEOMETRY, **kw}
    )


def cohere_compass_processor(tokenizer: Any, **kw: Any) -> Any:
    """Cohere Compass (image-only): dynamic resolution, 16-px patches, 2x2 merge;
    ``<|VISION_START|><|IMAGE_PAD|><|VISION_END|>``."""
    geometry = dict(size={"shortest_edge": 64 * 64, "longest_edge": 128 * 128}, patch_size=16, merge_size=2)
    return dynamic_resolution_processor(
        tokenizer,
        "CohereCompassProcessor",
        pil=("cohere_compass", "CohereCompassImageProcessorPil"),
        tokens=("<|IMAGE_PAD|>", "<|VIDEO_PAD|>", "<|VISION_START|>", "<|VISION_END|>"),
        **{**geometry, **kw},
    )


def deepseek_ocr2_processor(tokenizer: Any, *, image_size: int = 192, patch_size: int = 4) -> Any:
    """DeepSeek-OCR-2: ``<image>`` becomes one token per learned query of the view (144 for up to 12x12 SAM
    patches) plus a view separator; call with ``crop_to_patches=False`` for the global view only (the adapter's
    processor kwargs). ``patch_size`` is the processor's token-count geometry: ``(image_size / patch_size / 4)^2``
    must equal the query count."""
    from transformers import DeepseekOcr2Processor

    add_image_tokens(tokenizer, named={"image_token": "<image>"})
    ip = _pil("deepseek_ocr2", "DeepseekOcr2ImageProcessorPil")(
        size={"height": image_size, "width": image_size}, tile_size=image_size, crop_to_patches=False
    )
    return DeepseekOcr2Processor(
        ip, tokenizer, patch_size=patch_size, downsample_ratio=4, chat_template=_chat_template(tokenizer, None)
    )


def granite4_vision_processor(
    tokenizer: Any,
    *,
    image_size: int = 64,
    patch_size: int = 8,
    grid_pinpoints: Sequence[Sequence[int]] = ((64, 64), (64, 128), (128, 64)),
    downsample_rate: str = "2/4",
) -> Any:
    """Granite 4 Vision: LLaVA-NeXT anyres tiles; ``<image>`` expands to the tiles' tokens after the windowed
    Q-Former downsampling (``downsample_rate`` queries per window side)."""
    from transformers import Granite4VisionProcessor

    add_image_tokens(tokenizer, named={"image_token": "<image>"})
    ip = _pil("llava_next", "LlavaNextImageProcessorPil")(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        image_grid_pinpoints=[list(p) for p in grid_pinpoints],
    )
    return Granite4VisionProcessor(
        ip,
        tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        downsample_rate=downsample_rate,
        chat_template=_chat_template(tokenizer, None),
    )


def janus_processor(tokenizer: Any, *, image_size: int = 32, num_image_tokens: int = 16) -> Any:
    """Janus: ``<image_placeholder>`` expands to ``<begin_of_image>`` + n placeholders + ``<end_of_image>``."""
    from transformers import JanusProcessor

    add_image_tokens(
        tokenizer,
        named={"image_token": "<image_placeholder>", "boi_token": "<begin_of_image>", "eoi_token": "<end_of_image>"},
    )
    ip = _pil("janus", "JanusImageProcessorPil")(size={"height": image_size, "width": image_size})
    return JanusProcessor(
        image_processor=ip,
        tokenizer=tokenizer,
        num_image_tokens=num_image_tokens,
        chat_template=_chat_template(tokenizer, None),
    )


OVIS2_TOKENS = ("<image>", "<IMG_START>", "<IMG_ATOM>", "<IMG_GRID>", "<IMG_COL>", "<IMG_ROW>", "<IMG_END>")


def ovis2_processor(tokenizer: Any, *, image_size: int = 32, image_seq_length: int = 16) -> Any:
    """Ovis2: ``<image>`` expands to ``<IMG_START>`` ``<IMG_ATOM>``×n ``<IMG_GRID>`` … ``<IMG_END>``; the model
    embeds each image position as a probability-weighted mix over a visual vocabulary."""
    from transformers import Ovis2Processor

    add_image_tokens(tokenizer, OVIS2_TOKENS)
    ip = _pil("ovis2", "Ovis2ImageProcessorPil")(
        size={"height": image_size, "width": image_size}, crop_to_patches=False
    )
    return Ovis2Processor(
        image_processor=ip,
        tokenizer=tokenizer,
        image_seq_length=image_seq_length,
        chat_template=_chat_template(tokenizer, None),
    )


def llava_next_video_processor(
    tokenizer: Any,
    *,
    image_size: int = 32,
    patch_size: int = 8,
    grid_pinpoints: Sequence[Sequence[int]] = ((32, 32), (32, 64), (64, 32), (64, 64)),
) -> Any:
    """LLaVA-NeXT-Video, image path (image-only): LLaVA-NeXT anyres tiling; ``<video>`` exists but is unused."""
    add_image_tokens(tokenizer, named={"image_token": "<image>", "video_token": "<video>"})
    ip = _pil("llava_next", "LlavaNextImageProcessorPil")(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        image_grid_pinpoints=[list(p) for p in grid_pinpoints],
    )
    return image_only_class("LlavaNextVideoProcessor")(
        image_processor=ip,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=_chat_template(tokenizer, None),
    )


def got_ocr2_processor(
    tokenizer: Any, *, image_size: int = 32, num_image_tokens: int = 4, _name: str = "GotOcr2Processor"
) -> Any:
    """GOT-OCR2: the prompt holds ``<img><imgpad></img>``; ``<imgpad>`` becomes ``num_image_tokens`` tokens (256 in
    the released checkpoints: a 1024-px image, 16-px patches, two stride-2 convolutions)."""
    add_image_tokens(tokenizer, ["<img>", "</img>", "<imgpad>"])
    if _name == "PPChart2TableProcessor":
        ip = _pil("pp_chart2table", "PPChart2TableImageProcessorPil")(size={"height": image_size, "width": image_size})
    else:
        ip = _pil("got_ocr2", "GotOcr2ImageProcessorPil")(
            size={"height": image_size, "width": image_size}, crop_to_patches=False
        )
    return image_only_class(_name)(
        image_processor=ip,
        tokenizer=tokenizer,
        num_image_tokens=num_image_tokens,
        chat_template=_chat_template(tokenizer, None),
    )


GEMMA4_TOKENS = {
    "boi_token": "<|image>",
    "eoi_token": "<image|>",
    "image_token": "<|image|>",
    "boa_token": "<|audio>",
    "eoa_token": "<audio|>",
    "audio_token": "<|audio|>",
}


def gemma4_processor(
    tokenizer: Any, *, patch_size: int = 4, pooling_kernel_size: int = 2, max_soft_tokens: int = 70
) -> Any:
    """Gemma 4 (image-only): aspect-preserving resize to at most ``max_soft_tokens`` pooled patches (70 is the
    smallest budget the image processor accepts); the prompt's ``<|image|>`` becomes ``<|image>`` + one
    ``<|image|>`` per soft token + ``<image|>``. The audio tokens exist because the stock processor checks them."""
    add_image_tokens(tokenizer, named=GEMMA4_TOKENS)
    ip = _pil("gemma4", "Gemma4ImageProcessorPil")(
        patch_size=patch_size, pooling_kernel_size=pooling_kernel_size, max_soft_tokens=max_soft_tokens
    )
    return image_only_class("Gemma4Processor")(
        image_processor=ip,
        tokenizer=tokenizer,
        image_seq_length=max_soft_tokens,
        chat_template=_chat_template(tokenizer, None),
    )


def pp_chart2table_processor(tokenizer: Any, **kw: Any) -> Any:
    """PP-Chart2Table: the GOT-OCR2 layout with its own (plain resize) image processor."""
    return got_ocr2_processor(tokenizer, _name="PPChart2TableProcessor", **kw)


def video_llava_processor(tokenizer: Any, *, image_size: int = 32, patch_size: int = 8) -> Any:
    """Video-LLaVA, image path (image-only): CLIP-style preprocessing, one ``<image>`` per patch."""
    from transformers import VideoLlavaImageProcessor

    add_image_tokens(tokenizer, named={"image_token": "<image>", "video_token": "<video>"})
    ip = VideoLlavaImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    return image_only_class("VideoLlavaProcessor")(
        image_processor=ip,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=_chat_template(tokenizer, None),
    )


def idefics_processor(tokenizer: Any, *, image_size: int = 32) -> Any:
    """IDEFICS (v1, cross-attention): ``<image>`` in the prompt marks where an image goes; the processor wraps it in
    ``<fake_token_around_image>`` and builds the per-token image-attention mask the cross-attention layers read."""
    add_image_tokens(tokenizer, ["<fake_token_around_image>", "<image>", "<end_of_utterance>"])
    ip = _pil("idefics", "IdeficsImageProcessorPil")(size={"height": image_size, "width": image_size})
    ip.image_size, ip.image_num_channels = image_size, 3  # read by the stock processor for image-less rows
    proc = image_only_class("IdeficsProcessor")(image_processor=ip, tokenizer=tokenizer)
    proc.chat_template = _chat_template(tokenizer, None)  # the stock __init__ takes no chat template
    return proc


def blip2_processor(tokenizer: Any, *, image_size: int = 32, num_query_tokens: int = 4) -> Any:
    """BLIP-2: ``num_query_tokens`` Q-Former outputs sit on ``<image>`` tokens at the start of the row (see
    :func:`_define_query_first_layout`); the prompt holds one ``<image>`` to say the row has an image."""
    add_image_tokens(tokenizer, named={"image_token": "<image>"})
    ip = _pil("blip", "BlipImageProcessorPil")(size={"height": image_size, "width": image_size})
    proc = image_only_class("Blip2Processor")(
        image_processor=ip, tokenizer=tokenizer, num_query_tokens=num_query_tokens
    )
    proc.chat_template = _chat_template(tokenizer, None)  # the stock __init__ takes no chat template
    proc.image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    return proc


def instructblip_processor(
    tokenizer: Any, *, qformer_tokenizer: Any = None, image_size: int = 32, num_query_tokens: int = 4
) -> Any:
    """InstructBLIP: BLIP-2's query-first layout, and the Q-Former also reads the prompt text (tokenized by
    ``qformer_tokenizer``; a copy of ``tokenizer`` when not given)."""
    import copy

    add_image_tokens(tokenizer, named={"image_token": "<image>"})
    ip = _pil("blip", "BlipImageProcessorPil")(size={"height": image_size, "width": image_size})
    qt = qformer_tokenizer if qformer_tokenizer is not None else copy.deepcopy(tokenizer)
    proc = image_only_class("InstructBlipProcessor")(
        image_processor=ip, tokenizer=tokenizer, qformer_tokenizer=qt, num_query_tokens=num_query_tokens
    )
    proc.chat_template = _chat_template(tokenizer, None)  # the stock __init__ takes no chat template
    proc.image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    return proc


def fuyu_processor(tokenizer: Any, *, image_size: int = 32, patch_size: int = 8) -> Any:
    """Fuyu: no vision tower; each ``patch_size`` patch of the (padded) image is linearly embedded on a
    ``|SPEAKER|`` token, rows closed by ``|NEWLINE|``; ``<0x04>`` marks the beginning of the answer."""
    add_image_tokens(tokenizer, ["|SPEAKER|", "|NEWLINE|", "<s>", "<0x04>"])
    ip = _pil("fuyu", "FuyuImageProcessorPil")(
        size={"height": image_size, "width": image_size}, patch_size={"height": patch_size, "width": patch_size}
    )
    proc = image_only_class("FuyuProcessor")(image_processor=ip, tokenizer=tokenizer)
    proc.chat_template = _chat_template(tokenizer, None)  # the stock __init__ takes no chat template
    return proc


def aria_processor(tokenizer: Any, *, image_size: int = 490, image_seq_length: int = 4) -> Any:
    """Aria: each image is resized (longest edge) and padded to ``image_size`` square (490 or 980, the only sizes
    the image processor accepts); ``<|img|>`` expands to the projector's query count for that size
    (``size_conversion``)."""
    add_image_tokens(tokenizer, named={"image_token": "<|img|>"})
    ip = _pil("aria", "AriaImageProcessorPil")(max_image_size=image_size, min_image_size=image_size // 2)
    return image_only_class("AriaProcessor")(
        image_processor=ip,
        tokenizer=tokenizer,
        size_conversion={image_size: image_seq_length},
        max_image_size=image_size,
        chat_template=_chat_template(tokenizer, None),
    )


PADDLEOCR_TOKENS = ("<|IMAGE_START|>", "<|IMAGE_END|>", "<|video_pad|>")


def paddleocr_vl_processor(
    tokenizer: Any, *, min_pixels: int = 56 * 56, max_pixels: int = 112 * 112, patch_size: int = 14, merge_size: int = 2
) -> Any:
    """PaddleOCR-VL: Qwen2-VL-style dynamic resolution (one frame, no temporal patches);
    ``<|IMAGE_START|><|IMAGE_PLACEHOLDER|><|IMAGE_END|>``, the placeholder expanded to one token per merged patch."""
    from transformers import PaddleOCRVLProcessor

    add_image_tokens(tokenizer, PADDLEOCR_TOKENS, named={"image_token": "<|IMAGE_PLACEHOLDER|>"})
    ip = _pil("paddleocr_vl", "PaddleOCRVLImageProcessorPil")(
        min_pixels=min_pixels, max_pixels=max_pixels, patch_size=patch_size, merge_size=merge_size
    )
    return PaddleOCRVLProcessor(image_processor=ip, tokenizer=tokenizer, chat_template=_chat_template(tokenizer, None))


def granite_docling_processor(tokenizer: Any, *, image_size: int = 32, image_seq_len: int = 4) -> Any:
    """Granite-Docling: Idefics3's layout (``<fake_token_around_image><row_i_col_j>`` + ``<image>`` tokens per
    tile); one tile per image here (``crop_to_patches=False``), the coarse connector path only."""
    from transformers import GraniteDoclingProcessor

    add_image_tokens(tokenizer, ["<fake_token_around_image>", *IDEFICS3_TOKENS], named={"image_token": "<image>"})
    ip = _pil("granite_docling", "GraniteDoclingImageProcessorPil")(
        size={"height": image_size, "width": image_size}, crop_to_patches=False
    )
    return GraniteDoclingProcessor(
        image_processor=ip,
        tokenizer=tokenizer,
        image_seq_len=image_seq_len,
        chat_template=_chat_template(tokenizer, None),
    )


def deepseek_vl_hybrid_processor(
    tokenizer: Any, *, image_size: int = 32, high_res_size: int = 64, num_image_tokens: int = 16
) -> Any:
    """DeepSeek-VL hybrid: as DeepSeek-VL, but every image is also given at ``high_res_size`` to a SAM tower."""
    from transformers import DeepseekVLHybridProcessor

    add_image_tokens(tokenizer, named={"image_token": "<image_placeholder>"})
    ip = _pil("deepseek_vl_hybrid", "DeepseekVLHybridImageProcessorPil")(
        size={"height": image_size, "width": image_size},
        high_res_size={"height": high_res_size, "width": high_res_size},
    )
    return DeepseekVLHybridProcessor(
        image_processor=ip,
        tokenizer=tokenizer,
        num_image_tokens=num_image_tokens,
        chat_template=_chat_template(tokenizer, None),
    )


# ------------------------------------------------------------------------------------ saved processors


def load_processor(model_dir: str | Path, processor_class: str) -> Any:
    """Load a saved processor (a directory, or a hub name already in the local cache) as ``processor_class``.

    Classes that want a torchvision video processor are replaced by their ``ImageOnly`` subclass.
    """
    cls = _stock(processor_class)
    if processor_class in _LAYOUT_CLASSES or "video_processor" in inspect.signature(cls.__init__).parameters:
        cls = image_only_class(processor_class)
    try:
        return cls.from_pretrained(str(model_dir))
    except (OSError, ValueError, TypeError, AttributeError) as e:
        raise ValueError(
            f"could not load a {processor_class} from {model_dir}: {e}. A model directory needs "
            "preprocessor_config.json / processor_config.json and tokenizer files "
            "(save them with processor.save_pretrained(dir))."
        ) from e


def processor_builder(recipe: Callable[..., Any], processor_class: str) -> Callable[..., Any]:
    """An adapter's ``build_processor``: a model directory → :func:`load_processor`; a tokenizer → ``recipe``."""

    def build(source: Any, **kwargs: Any) -> Any:
        if isinstance(source, (str, Path)):
            if kwargs:
                raise TypeError(
                    f"options {sorted(kwargs)} only apply when building from a tokenizer, "
                    "not when loading a saved processor"
                )
            return load_processor(source, processor_class)
        return recipe(source, **kwargs)

    build.__name__ = f"build_{recipe.__name__}"
    build.__doc__ = f"Load a saved {processor_class} from a directory, or build one with {recipe.__name__}()."
    return build


# ------------------------------------------------------------------------------------- input checks


def prompt_image_token(processor: Any) -> str:
    """The token a prompt holds once per image, which the processor expands: its ``image_token``, unless the
    processor names a separate prompt token (Qianfan-OCR's ``image_placeholder_token`` ``<image>`` expands to
    ``<img>`` + ``<IMG_CONTEXT>`` x n + ``</img>``, and its ``image_token`` is ``<IMG_CONTEXT>``)."""
    return str(getattr(processor, "image_placeholder_token", None) or processor.image_token)


def image_placeholder(processor: Any) -> str:
    """What a prompt must contain once per image (before the processor expands it)."""
    tok = prompt_image_token(processor)
    wrapped = getattr(processor, "prompt_placeholder", None)  # cotscope's layout classes declare it
    if wrapped:
        return str(wrapped)
    name = type(processor).__name__.removeprefix("ImageOnly")
    for prefixes, fmt in WRAPPED_PLACEHOLDERS:
        if name.startswith(prefixes):
            return fmt.format(tok)
    return str(tok)


WRAPPED_PLACEHOLDERS = (
    (("Qwen2VL", "Qwen2_5_VL", "Qwen3VL", "Cosmos3Edge"), "<|vision_start|>{}<|vision_end|>"),
    (("Glm4v", "Glm46V"), "<|begin_of_image|>{}<|end_of_image|>"),
    (("PaddleOCRVL", "Ernie4_5_VLMoe"), "<|IMAGE_START|>{}<|IMAGE_END|>"),
    (("Dots3Note",), "<|img|>{}<|endofimg|>"),
    (("Qwen2_5Omni", "Qwen3OmniMoe"), "<|vision_bos|>{}<|vision_eos|>"),
    (("CohereCompass",), "<|VISION_START|>{}<|VISION_END|>"),
)
"""(processor class-name prefixes, prompt placeholder around the image token) for families whose prompts wrap it."""


def image_prompt(processor: Any, text: str, n_images: int = 1, generic: str = "<image>") -> str:
    """``text`` with the family's placeholder: replaces ``generic`` markers, or prepends one per image."""
    ph = image_placeholder(processor)
    if generic and generic != ph and generic in text:
        return text.replace(generic, ph)
    if prompt_image_token(processor) in text:
        return text
    return ph * n_images + "\n" + text


def check_images(images: Sequence[Any], what: str = "image") -> list[Any]:
    """Every image opened (paths), validated and converted to RGB; :class:`ImageInputError` if unusable."""
    out = []
    for i, im in enumerate(images):
        name = f"{what} {i}"
        if isinstance(im, (str, Path)):
            out.append(load_image(im))
        elif im is None:
            raise ImageInputError(f"{name} is None. Fix: pass a PIL image or an image path.")
        else:
            out.append(check_image(im, name=name))
    return out


def _per_prompt(images: Sequence[Any] | None, n: int) -> list[list[Any]]:
    if images is None:
        return [[] for _ in range(n)]
    if len(images) != n:
        raise PromptImageError(
            f"{n} prompts but {len(images)} image entries; pass one image (or one list of images, or None) per prompt."
        )
    return [[] if im is None else list(im) if isinstance(im, (list, tuple)) else [im] for im in images]


def check_prompts(
    texts: Sequence[str], images: Sequence[Any] | None, placeholder: str, shown: str | None = None
) -> list[list[Any]]:
    """Check that prompt ``i`` holds exactly one ``placeholder`` per image of item ``i``.

    ``images``: one entry per prompt (an image, a list of images, or ``None``), or ``None`` for text only.
    ``shown`` is the placeholder as the user should write it (Qwen2-VL wraps ``<|image_pad|>`` in
    vision start/end tokens). Returns the images as a checked, RGB-converted list per prompt.
    """
    shown = shown or placeholder
    if isinstance(texts, str):
        texts = [texts]
    per = _per_prompt(images, len(texts))
    out = []
    for i, (text, ims) in enumerate(zip(texts, per)):
        if not isinstance(text, str):
            raise PromptImageError(f"prompt {i} is a {type(text).__name__}, not a string")
        n_ph = text.count(placeholder)
        if n_ph == 0 and ims:
            raise PromptImageError(
                f"prompt {i} has {len(ims)} image(s) but no image placeholder {shown!r}. Fix: put "
                f"{shown!r} where each image goes (probes.models.processors.image_prompt(processor, text) "
                "does it), or drop the image for a text-only prompt."
            )
        if n_ph > len(ims):
            raise PromptImageError(
                f"prompt {i} has {n_ph} image placeholders {placeholder!r} but only {len(ims)} image(s). Fix: pass "
                "one image per placeholder, or remove the extra placeholders (pass prompts before the processor "
                "expands them)."
            )
        if n_ph < len(ims):
            raise PromptImageError(
                f"prompt {i} has {len(ims)} images but only {n_ph} placeholder(s) "
                f"{placeholder!r}. Fix: add one {shown!r} per image."
            )
        out.append(check_images(ims, what=f"prompt {i} image") if ims else [])
    return out


def validate_batch(loaded: Any, texts: Sequence[str], images: Sequence[Any] | None) -> list[Any] | None:
    """Collector hook: check prompts against images for ``loaded``'s processor and fix images up.

    Converted images replace the entries of ``images`` in place (when it is a list) and are returned.
    """
    proc = getattr(loaded, "processor", None)
    if images is None or all(im is None for im in images):
        if proc is not None and getattr(proc, "image_token", None):
            check_prompts(texts, None, prompt_image_token(proc), image_placeholder(proc))  # no stray placeholders
        return None
    if proc is None or not hasattr(proc, "image_token"):
        raise PromptImageError(
            f"{getattr(loaded, 'model_id', 'this model')} has no image processor; "
            "load a VLM (its directory needs a processor) to pass images."
        )
    per = check_prompts(texts, images, prompt_image_token(proc), image_placeholder(proc))
    fixed = [None if im is None else p if isinstance(im, (list, tuple)) else p[0] for im, p in zip(images, per)]
    if isinstance(images, list):
        images[:] = fixed
    return fixed
