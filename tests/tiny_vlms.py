"""Tiny random-initialised VLMs of every supported family, built offline from configs.

Each model: eager attention, 4 text layers of width 64, a 2-layer vision tower at 32 px, the SmolLM2
tokenizer with the family's image tokens, and a processor assembled by :mod:`probes.models.processors`.
Models are deterministic for a seed and cached per test session (:func:`tiny_vlm`).

>>> vlm = tiny_vlm("llava")                            # doctest: +SKIP
>>> enc = vlm.encode(["<image>\\nWhat is this?"], [img]) # doctest: +SKIP
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from PIL import Image, ImageDraw

from cotscope.probes.models import processors as P

TEXT = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=2,
)
VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
IMG, PATCH = 32, 8
PINPOINTS = [[32, 32], [32, 64], [64, 32], [64, 64]]
MODEL_CLASS = {
    "llava": "LlavaForConditionalGeneration",
    "llava_next": "LlavaNextForConditionalGeneration",
    "llava_onevision": "LlavaOnevisionForConditionalGeneration",
    "qwen2_vl": "Qwen2VLForConditionalGeneration",
    "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
    "idefics2": "Idefics2ForConditionalGeneration",
    "idefics3": "Idefics3ForConditionalGeneration",
    "smolvlm": "SmolVLMForConditionalGeneration",
    "gemma3": "Gemma3ForConditionalGeneration",
    "internvl": "InternVLForConditionalGeneration",
}
FAMILIES = tuple(MODEL_CLASS)
"""Families whose image features sit on image-token positions of the sequence (the original ten)."""
EXTRA_CLASS = {
    "paligemma": "PaliGemmaForConditionalGeneration",
    "mistral3": "Mistral3ForConditionalGeneration",
    "chameleon": "ChameleonForConditionalGeneration",
    "mllama": "MllamaForConditionalGeneration",
    "vipllava": "VipLlavaForConditionalGeneration",
    "deepseek_vl": "DeepseekVLForConditionalGeneration",
    "lighton_ocr": "LightOnOcrForConditionalGeneration",
    "aya_vision": "AyaVisionForConditionalGeneration",
    "qwen3_vl": "Qwen3VLForConditionalGeneration",
    "glm4v": "Glm4vForConditionalGeneration",
    "janus": "JanusForConditionalGeneration",
    "ovis2": "Ovis2ForConditionalGeneration",
    "llava_next_video": "LlavaNextVideoForConditionalGeneration",
    "qwen3_5": "Qwen3_5ForConditionalGeneration",
    "glm46v": "Glm46VForConditionalGeneration",
    "exaone4_5": "Exaone4_5_ForConditionalGeneration",
    "hyperclovax_vision_v2": "HyperCLOVAXVisionV2ForConditionalGeneration",
    "lfm3_vl": "Lfm3VlForConditionalGeneration",
    "shieldgemma2": "Gemma3ForConditionalGeneration",
    "got_ocr2": "GotOcr2ForConditionalGeneration",
    "pp_chart2table": "GotOcr2ForConditionalGeneration",
    "gemma4": "Gemma4ForConditionalGeneration",
    "qwen3_5_moe": "Qwen3_5MoeForConditionalGeneration",
    "video_llava": "VideoLlavaForConditionalGeneration",
    "idefics": "IdeficsForVisionText2Text",
    "blip-2": "Blip2ForConditionalGeneration",
    "instructblip": "InstructBlipForConditionalGeneration",
    "fuyu": "FuyuForCausalLM",
    "aria": "AriaForConditionalGeneration",
    "paddleocr_vl": "PaddleOCRVLForConditionalGeneration",
    "granite_docling": "GraniteDoclingForConditionalGeneration",
    "deepseek_vl_hybrid": "DeepseekVLHybridForConditionalGeneration",
    "cosmos3_edge": "Cosmos3EdgeForConditionalGeneration",
    "video_llama_3": "VideoLlama3ForConditionalGeneration",
    "ernie4_5_vl_moe": "Ernie4_5_VLMoeForConditionalGeneration",
    "glmga": "Glm46VForConditionalGeneration",
    "glm_ocr": "GlmOcrForConditionalGeneration",
    "mistral_large4": "MistralLarge4ForConditionalGeneration",
    "qianfan_ocr": "QianfanOCRForConditionalGeneration",
    "dots3_note": "Dots3NoteForConditionalGeneration",
    "minicpmv4_6": "MiniCPMV4_6ForConditionalGeneration",
    "minicpmv4_7": "MiniCPMV4_7ForConditionalGeneration",
    "qwen2_5_omni_thinker": "Qwen2_5OmniThinkerForConditionalGeneration",
    "qwen3_omni_moe_thinker": "Qwen3OmniMoeThinkerForConditionalGeneration",
    "cosmos3_omni": "Cosmos3OmniForConditionalGeneration",
    "qwen3_vl_moe": "Qwen3VLMoeForConditionalGeneration",
    "glm4v_moe": "Glm4vMoeForConditionalGeneration",
    "cohere_compass": "CohereCompassForConditionalGeneration",
    "deepseek_ocr2": "DeepseekOcr2ForConditionalGeneration",
    "granite4_vision": "Granite4VisionForConditionalGeneration",
}
EXTRA_FAMILIES = tuple(EXTRA_CLASS)
"""Every other family transformers 5.24 can build offline (tests/test_vlm_families.py), including the designs that
bend the "image tokens in the sequence" picture: prefix-LM (PaliGemma), variable-resolution patches with break tokens
(Mistral3), early-fusion VQ tokens (Chameleon), cross-attention (Mllama, IDEFICS), query tokens placed first by the
processor (BLIP-2, InstructBLIP), linearly embedded patches (Fuyu) and hybrid or sparse-attention language models."""
MODEL_CLASS.update(EXTRA_CLASS)
ALL_FAMILIES = FAMILIES + EXTRA_FAMILIES


@dataclasses.dataclass
class TinyVLM:
    """A tiny model with its processor; ``placeholder`` is what a prompt holds per image."""

    family: str
    model: Any
    processor: Any

    @property
    def tokenizer(self) -> Any:
        return self.processor.tokenizer

    @property
    def placeholder(self) -> str:
        return P.image_placeholder(self.processor)

    def prompt(self, question: str = "What is in this picture?", n_images: int = 1) -> str:
        """A chat-templated user turn with ``n_images`` placeholders (``n_images=0``: text only)."""
        content = (self.placeholder * n_images + "\n" if n_images else "") + question
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
        )


def smol_tokenizer() -> Any:
    """A fresh SmolLM2 tokenizer (each model adds its own tokens to its copy)."""
    from transformers import AutoTokenizer

    from cotscope.probes.models.embedded import smollm2_dir

    return AutoTokenizer.from_pretrained(smollm2_dir())


def sample_image(w: int = 64, h: int = 48, seed: int = 0) -> Image.Image:
    """A deterministic RGB gradient with a few shapes."""
    g = torch.Generator().manual_seed(seed)
    base = torch.linspace(0, 255, w).repeat(h, 1)
    arr = torch.stack([base, base.flip(1), torch.full_like(base, 40.0 * (seed % 5))], -1).to(torch.uint8).numpy()
    img = Image.fromarray(arr, "RGB")
    d = ImageDraw.Draw(img)
    for _ in range(3):
        x, y = (int(v) for v in torch.randint(0, min(w, h) - 10, (2,), generator=g))
        d.ellipse((x, y, x + 10, y + 10), fill=tuple(int(v) for v in torch.randint(0, 255, (3,), generator=g)))
    return img


def _text(tok: Any, **over: Any) -> dict:
    return {**TEXT, "vocab_size": len(tok), **over}


QWEN_VISION = dict(
    depth=2,
    hidden_size=32,
    intermediate_size=64,
    num_heads=2,
    patch_size=14,
    spatial_merge_size=2,
    temporal_patch_size=2,
    out_hidden_size=64,
)
"""A 2-block Qwen2-VL-style vision tower (14-px patches, 2x2 merge) projecting to the text width."""
QWEN2_5_WINDOWS = dict(window_size=56, fullatt_block_indexes=[1])
"""Qwen2.5-VL windowed vision attention: block 0 windowed, block 1 full."""
QWEN3_VISION = dict(QWEN_VISION, patch_size=16, num_position_embeddings=64)
"""The Qwen3-VL tower: 16-px patches and learned position embeddings."""
MROPE = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}
"""3D rotary positions for head_dim 16 (8 frequencies: 2 temporal, 3 height, 3 width)."""
QWEN_IDS = dict(
    vision_start_token_id="<|vision_start|>", vision_end_token_id="<|vision_end|>", video_token_id="<|video_pad|>"
)


def _ids(tok: Any, **tokens: str) -> dict[str, int]:
    """Config keyword -> id of the named token (``_ids(tok, video_token_id="<|video_pad|>")``)."""
    return {k: tok.convert_tokens_to_ids(t) for k, t in tokens.items()}


def _llava(tok):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    proc = P.llava_processor(tok, image_size=IMG, patch_size=PATCH)
    cfg = LlavaConfig(
        vision_config=CLIPVisionConfig(**VISION, image_size=IMG, patch_size=PATCH),
        text_config=LlamaConfig(**_text(tok)),
        image_token_index=proc.image_token_id,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        image_seq_length=(IMG // PATCH) ** 2,
    )
    return cfg, proc


def _llava_like(tok):
    from transformers import CLIPVisionConfig, LlamaConfig, VideoLlavaConfig

    proc = P.video_llava_processor(tok, image_size=IMG, patch_size=PATCH)
    cfg = VideoLlavaConfig(
        vision_config=CLIPVisionConfig(**VISION, image_size=IMG, patch_size=PATCH),
        text_config=LlamaConfig(**_text(tok)),
        image_token_index=proc.image_token_id,
        video_token_index=proc.video_token_id,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        image_seq_length=(IMG // PATCH) ** 2,
    )
    return cfg, proc


def _llava_next(tok):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaNextConfig

    proc = P.llava_next_processor(tok, image_size=IMG, patch_size=PATCH, grid_pinpoints=PINPOINTS)
    cfg = LlavaNextConfig(
        vision_config=CLIPVisionConfig(**VISION, image_size=IMG, patch_size=PATCH),
        text_config=LlamaConfig(**_text(tok)),
        image_token_index=proc.image_token_id,
        image_grid_pinpoints=PINPOINTS,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        image_seq_length=(IMG // PATCH) ** 2,
    )
    return cfg, proc


def _llava_onevision(tok):
    from transformers import LlavaOnevisionConfig, Qwen2Config, SiglipVisionConfig

    proc = P.llava_onevision_processor(tok, image_size=IMG, patch_size=PATCH, grid_pinpoints=PINPOINTS)
    cfg = LlavaOnevisionConfig(
        vision_config=SiglipVisionConfig(**VISION, image_size=IMG, patch_size=PATCH),
        text_config=Qwen2Config(**_text(tok)),
        image_token_index=proc.image_token_id,
        video_token_index=proc.video_token_id,
        image_grid_pinpoints=PINPOINTS,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
    )
    return cfg, proc


def _qwen(tok, v25: bool):
    from transformers import Qwen2_5_VLConfig, Qwen2VLConfig

    proc = (P.qwen2_5_vl_processor if v25 else P.qwen2_vl_processor)(tok)
    vcfg = dict(
        depth=2, embed_dim=32, hidden_size=64, num_heads=2, patch_size=14, spatial_merge_size=2, temporal_patch_size=2
    )
    if v25:
        vcfg.update(intermediate_size=64, out_hidden_size=64, fullatt_block_indexes=[1], window_size=56)
        vcfg.pop("embed_dim")
    tcfg = _text(tok, rope_parameters=dict(MROPE))
    ids = _ids(tok, **QWEN_IDS)
    cls = Qwen2_5_VLConfig if v25 else Qwen2VLConfig
    cfg = cls(text_config=tcfg, vision_config=vcfg, image_token_id=proc.image_token_id, **ids)
    return cfg, proc


def _idefics2(tok):
    from transformers import Idefics2Config, LlamaConfig

    proc = P.idefics2_processor(tok, image_size=IMG, image_seq_len=4)
    cfg = Idefics2Config(
        vision_config=dict(**VISION, image_size=IMG, patch_size=PATCH),
        perceiver_config=dict(
            hidden_size=64,
            resampler_n_latents=4,
            resampler_depth=1,
            resampler_n_heads=2,
            resampler_head_dim=16,
            num_key_value_heads=1,
        ),
        text_config=LlamaConfig(**_text(tok)).to_dict(),
        image_token_id=proc.image_token_id,
    )
    return cfg, proc


def _idefics3(tok, smol: bool):
    from transformers import Idefics3Config, LlamaConfig, SmolVLMConfig

    proc = P.idefics3_processor(tok, image_size=IMG, image_seq_len=4)  # adds tokens: vocab size after this
    cls = SmolVLMConfig if smol else Idefics3Config
    cfg = cls(
        vision_config=dict(**VISION, image_size=IMG, patch_size=PATCH),
        text_config=LlamaConfig(**_text(tok)).to_dict(),
        image_token_id=proc.image_token_id,
        scale_factor=2,
    )
    return cfg, proc


def _gemma3(tok, shield: bool = False):
    from transformers import Gemma3Config, Gemma3TextConfig, ShieldGemma2Config, SiglipVisionConfig

    proc = P.gemma3_processor(tok, image_size=IMG, image_seq_length=4)
    tcfg = Gemma3TextConfig(**_text(tok, head_dim=16), query_pre_attn_scalar=16, sliding_window=512)
    cfg = (ShieldGemma2Config if shield else Gemma3Config)(
        text_config=tcfg,
        vision_config=SiglipVisionConfig(**VISION, image_size=IMG, patch_size=PATCH),
        mm_tokens_per_image=4,
        boi_token_index=tok.boi_token_id,
        eoi_token_index=tok.eoi_token_id,
        image_token_index=tok.image_token_id,
    )
    return cfg, proc


def _internvl(tok):
    from transformers import InternVLConfig, InternVLVisionConfig, Qwen2Config

    proc = P.internvl_processor(tok, image_size=IMG, image_seq_length=4)
    cfg = InternVLConfig(
        vision_config=InternVLVisionConfig(**VISION, image_size=[IMG, IMG], patch_size=[PATCH, PATCH]),
        text_config=Qwen2Config(**_text(tok)),
        downsample_ratio=0.5,
        image_seq_length=4,
        image_token_id=proc.image_token_id,
    )
    return cfg, proc


def _paligemma(tok):
    from transformers import GemmaConfig, PaliGemmaConfig, SiglipVisionConfig

    proc = P.paligemma_processor(tok, image_size=IMG, image_seq_length=(IMG // PATCH) ** 2)
    cfg = PaliGemmaConfig(
        vision_config=SiglipVisionConfig(**VISION, image_size=IMG, patch_size=PATCH, projection_dim=64),
        text_config=GemmaConfig(**_text(tok, head_dim=16)),
        image_token_index=proc.image_token_id,
        projection_dim=64,
        hidden_size=64,
        vocab_size=len(tok),
    )
    return cfg, proc


def _mistral3(tok):
    from transformers import Mistral3Config, MistralConfig, PixtralVisionConfig

    proc = P.pixtral_processor(tok, longest_edge=48, patch_size=PATCH, spatial_merge_size=2)
    vis = dict(VISION, num_attention_heads=2, head_dim=16)
    cfg = Mistral3Config(
        vision_config=PixtralVisionConfig(**vis, image_size=48, patch_size=PATCH),
        text_config=MistralConfig(**_text(tok, head_dim=16, sliding_window=None)),
        image_token_index=proc.image_token_id,
        spatial_merge_size=2,
        vision_feature_layer=-1,
    )
    return cfg, proc


def _chameleon(tok):
    from transformers import ChameleonConfig

    proc = P.chameleon_processor(tok, image_size=IMG, image_seq_length=16)
    n_codes = 16
    # VQ codebook entries are vocabulary tokens named IMGIMG<digits as letters A-J>Z (Chameleon's own convention)
    names = ["IMGIMG" + "".join(chr(ord("A") + int(c)) for c in str(i)) + "Z" for i in range(n_codes)]
    P.add_image_tokens(tok, names)
    vocab_map = {n: tok.convert_tokens_to_ids(n) for n in names}
    vocab_map["<image>"] = proc.image_token_id
    cfg = ChameleonConfig(
        **_text(tok),
        vq_config=dict(
            embed_dim=8,
            num_embeddings=n_codes,
            latent_channels=8,
            resolution=IMG,
            base_channels=32,
            channel_multiplier=[1, 1, 1, 1],
            num_res_blocks=1,
        ),
        vocabulary_map=vocab_map,
    )
    return cfg, proc


def _mllama(tok):
    from transformers import MllamaConfig, MllamaTextConfig, MllamaVisionConfig

    proc = P.mllama_processor(tok, image_size=IMG, max_image_tiles=2)
    text = _text(tok)
    text.pop("max_position_embeddings")
    cfg = MllamaConfig(
        vision_config=MllamaVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_global_layers=1,
            attention_heads=2,
            intermediate_layers_indices=[0],
            vision_output_dim=64,
            image_size=IMG,
            patch_size=PATCH,
            max_num_tiles=2,
            supported_aspect_ratios=[[1, 1], [1, 2], [2, 1]],
        ),
        text_config=MllamaTextConfig(**text, cross_attention_layers=[1]),
        image_token_index=proc.image_token_id,
    )
    return cfg, proc


def _vipllava(tok):
    from transformers import CLIPVisionConfig, LlamaConfig, VipLlavaConfig

    proc = P.llava_processor(tok, image_size=IMG, patch_size=PATCH)
    cfg = VipLlavaConfig(
        vision_config=CLIPVisionConfig(**VISION, image_size=IMG, patch_size=PATCH),
        text_config=LlamaConfig(**_text(tok)),
        image_token_index=proc.image_token_id,
        vision_feature_layer=[-2, 0],  # VIP-LLaVA concatenates several vision layers
        image_seq_length=(IMG // PATCH) ** 2,
    )
    return cfg, proc


def _deepseek_vl(tok):
    from transformers import DeepseekVLConfig, LlamaConfig, SiglipVisionConfig

    proc = P.deepseek_vl_processor(tok, image_size=IMG, num_image_tokens=(IMG // PATCH) ** 2)
    cfg = DeepseekVLConfig(
        text_config=LlamaConfig(**_text(tok)),
        vision_config=SiglipVisionConfig(**VISION, image_size=IMG, patch_size=PATCH),
        image_token_id=proc.image_token_id,
    )
    return cfg, proc


def _lighton_ocr(tok):
    from transformers import LightOnOcrConfig, PixtralVisionConfig, Qwen3Config

    proc = P.lighton_ocr_processor(tok, longest_edge=48, patch_size=PATCH, spatial_merge_size=2)
    cfg = LightOnOcrConfig(
        vision_config=PixtralVisionConfig(**VISION, head_dim=16, image_size=48, patch_size=PATCH),
        text_config=Qwen3Config(**_text(tok, head_dim=16)),
        image_token_id=proc.image_token_id,
        spatial_merge_size=2,
    )
    return cfg, proc


def _aya_vision(tok):
    from transformers import AyaVisionConfig, Cohere2Config, SiglipVisionConfig

    proc = P.aya_vision_processor(tok, image_size=IMG, patch_size=PATCH, downsample_factor=2)
    cfg = AyaVisionConfig(
        vision_config=SiglipVisionConfig(**VISION, image_size=IMG, patch_size=PATCH),
        text_config=Cohere2Config(**_text(tok, head_dim=16), layer_types=["full_attention"] * 4),
        image_token_index=proc.image_token_id,
        downsample_factor=2,
        vision_feature_layer=-1,
    )
    return cfg, proc


def _qwen3_vl(tok, cosmos: bool = False, moe: bool = False):
    from transformers import Cosmos3OmniConfig, Qwen3VLConfig, Qwen3VLMoeConfig

    proc = P.qwen3_vl_processor(tok)
    text = _text(tok, head_dim=16, rope_parameters=MROPE)
    if moe:
        text.update(moe_intermediate_size=32, num_experts=4, num_experts_per_tok=2)
    vis = dict(QWEN3_VISION, deepstack_visual_indexes=[0])
    ids = _ids(tok, **QWEN_IDS)
    cls = Cosmos3OmniConfig if cosmos else Qwen3VLMoeConfig if moe else Qwen3VLConfig
    cfg = cls(text_config=text, vision_config=vis, image_token_id=proc.image_token_id, **ids)
    return cfg, proc


def _glm4v(tok, v46: bool = False, ga: bool = False, ocr: bool = False, moe: bool = False):
    from transformers import Glm4vConfig, Glm4vMoeConfig, Glm46VConfig, GlmgaConfig, GlmOcrConfig

    proc = P.glmga_processor(tok) if ga else P.glm46v_processor(tok) if v46 else P.glm4v_processor(tok)
    text = _text(tok)
    text["rope_parameters"] = dict(MROPE)
    vis = dict(QWEN_VISION, image_size=28)
    ids = _ids(
        tok,
        image_start_token_id="<|begin_of_image|>",
        image_end_token_id="<|end_of_image|>",
        video_start_token_id="<|begin_of_video|>",
        video_end_token_id="<|end_of_video|>",
        video_token_id="<|video|>",
    )
    if v46 or ga:
        text["model_type"], vis["model_type"] = "glm4v_text", "glm4v_vision"
    if ocr:
        text["model_type"], vis["model_type"] = "glm_ocr_text", "glm_ocr_vision"
    if moe:
        text.update(moe_intermediate_size=32, n_routed_experts=4, num_experts_per_tok=2, head_dim=16)
        text["rope_parameters"] = dict(MROPE, partial_rotary_factor=1.0)  # GLM-4.5V rotates half by default
    cls = (
        GlmOcrConfig if ocr else GlmgaConfig if ga else Glm46VConfig if v46 else Glm4vMoeConfig if moe else Glm4vConfig
    )
    cfg = cls(text_config=text, vision_config=vis, image_token_id=proc.image_token_id, **ids)
    return cfg, proc


def _exaone4_5(tok):
    from transformers import Exaone4_5_Config

    proc = P.exaone4_5_processor(tok)
    text = _text(tok, head_dim=16, sliding_window=None, layer_types=["full_attention"] * 4, model_type="exaone4")
    vis = dict(QWEN_VISION, **QWEN2_5_WINDOWS, num_key_value_heads=2)
    cfg = Exaone4_5_Config(
        text_config=text,
        vision_config=vis,
        image_token_id=proc.image_token_id,
        video_token_id=tok.convert_tokens_to_ids("<|video_pad|>"),
    )
    return cfg, proc


def _janus(tok):
    from transformers import JanusConfig, LlamaConfig

    n = (IMG // PATCH) ** 2
    proc = P.janus_processor(tok, image_size=IMG, num_image_tokens=n)
    cfg = JanusConfig(
        text_config=LlamaConfig(**_text(tok)),
        vision_config=dict(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=IMG,
            patch_size=PATCH,
            mlp_ratio=2.0,
            projection_dim=64,
            depth=1,
            num_image_tokens=n,
        ),
        vq_config=dict(
            embed_dim=8,
            num_embeddings=16,
            latent_channels=8,
            base_channels=32,
            channel_multiplier=[1, 1],
            num_res_blocks=1,
            projection_dim=64,
            image_token_embed_dim=64,
            num_patches=IMG // PATCH,
        ),
        image_token_id=tok.image_token_id,
    )
    return cfg, proc


def _ovis2(tok):
    from transformers import Ovis2Config, Qwen2Config

    proc = P.ovis2_processor(tok, image_size=IMG, image_seq_length=(IMG // PATCH) ** 2)
    ind = [tok.convert_tokens_to_ids(t) for t in ("<IMG_START>", "<IMG_GRID>", "<IMG_COL>", "<IMG_ROW>", "<IMG_END>")]
    cfg = Ovis2Config(
        vision_config=dict(**VISION, image_size=IMG, patch_size=PATCH, vocab_size=64, hidden_stride=1),
        text_config=Qwen2Config(**_text(tok)),
        image_token_id=tok.convert_tokens_to_ids("<IMG_ATOM>"),  # the prompt's <image> expands to these
        visual_indicator_token_ids=ind,
        vocab_size=len(tok),
        hidden_size=64,
    )
    return cfg, proc


def _llava_next_video(tok):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaNextVideoConfig

    proc = P.llava_next_video_processor(tok, image_size=IMG, patch_size=PATCH, grid_pinpoints=PINPOINTS)
    cfg = LlavaNextVideoConfig(
        vision_config=CLIPVisionConfig(**VISION, image_size=IMG, patch_size=PATCH),
        text_config=LlamaConfig(**_text(tok)),
        image_token_index=proc.image_token_id,
        video_token_index=proc.video_token_id,
        image_grid_pinpoints=PINPOINTS,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        image_seq_length=(IMG // PATCH) ** 2,
    )
    return cfg, proc


def _qwen3_5_text(tok, **over):
    """A Qwen3.5 hybrid text config: Gated-DeltaNet and full-attention blocks alternating."""
    return _text(
        tok,
        head_dim=16,
        rope_parameters={
            "rope_type": "default",
            "rope_theta": 10000.0,
            "mrope_section": [2, 3, 3],
            "partial_rotary_factor": 1.0,
        },
        layer_types=["linear_attention", "full_attention", "linear_attention", "full_attention"],
        linear_conv_kernel_dim=2,
        linear_key_head_dim=16,
        linear_value_head_dim=16,
        linear_num_key_heads=2,
        linear_num_value_heads=4,
        **over,
    )


def _qwen3_5(tok, moe: bool = False):
    from transformers import Qwen3_5Config, Qwen3_5MoeConfig

    proc = P.qwen3_vl_processor(tok)
    text = _qwen3_5_text(tok)
    if moe:
        text.update(moe_intermediate_size=32, shared_expert_intermediate_size=32, num_experts=4, num_experts_per_tok=2)
    vis = dict(QWEN3_VISION)
    cfg = (Qwen3_5MoeConfig if moe else Qwen3_5Config)(
        text_config=text, vision_config=vis, image_token_id=proc.image_token_id, **_ids(tok, **QWEN_IDS)
    )
    return cfg, proc


def _hyperclovax_vision_v2(tok):
    from transformers import HyperCLOVAXVisionV2Config

    proc = P.hyperclovax_vision_v2_processor(tok)
    vis = dict(QWEN_VISION, **QWEN2_5_WINDOWS, model_type="qwen2_5_vl_vision")
    cfg = HyperCLOVAXVisionV2Config(
        text_config=_text(tok, model_type="hyperclovax", head_dim=16),
        vision_config=vis,
        image_token_id=proc.image_token_id,
        video_token_id=tok.convert_tokens_to_ids("<|video_pad|>"),
    )
    return cfg, proc


def _lfm3_vl(tok):
    from transformers import Lfm3VlConfig

    proc = P.lfm3_vl_processor(tok)
    text = _text(tok, head_dim=16, model_type="lfm3", sliding_window=8)
    text["layer_types"] = ["conv", "full_attention", "sliding_attention", "full_attention"]
    vis = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        patch_size=16,
        spatial_merge_size=2,
        temporal_patch_size=2,
    )
    ids = _ids(tok, **QWEN_IDS)
    cfg = Lfm3VlConfig(
        text_config=text, vision_config=vis, image_token_id=proc.image_token_id, projector_hidden_size=64, **ids
    )
    return cfg, proc


def _got_ocr2(tok, chart: bool = False):
    from transformers import GotOcr2Config, PPChart2TableConfig, Qwen2Config

    # SAM-style tower: 32 px / 4-px patches = 8x8, two stride-2 convolutions in the projector -> 2x2 = 4 tokens
    proc = (P.pp_chart2table_processor if chart else P.got_ocr2_processor)(tok, image_size=IMG, num_image_tokens=4)
    vis = dict(
        hidden_size=32,
        output_channels=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=IMG,
        patch_size=4,
        window_size=4,
        global_attn_indexes=[1],
        mlp_dim=64,
    )
    cls = PPChart2TableConfig if chart else GotOcr2Config
    cfg = cls(vision_config=vis, text_config=Qwen2Config(**_text(tok)), image_token_index=proc.image_token_id)
    return cfg, proc


def _gemma4(tok):
    from transformers import Gemma4Config

    proc = P.gemma4_processor(tok, patch_size=4, pooling_kernel_size=2, max_soft_tokens=70)
    text = _text(
        tok,
        head_dim=16,
        global_head_dim=16,
        hidden_size_per_layer_input=8,
        vocab_size_per_layer_input=len(tok),
        layer_types=["sliding_attention", "full_attention"] * 2,
    )
    vis = dict(VISION, num_key_value_heads=2, head_dim=16, patch_size=4, pooling_kernel_size=2)
    ids = _ids(
        tok,
        boi_token_id="<|image>",
        eoi_token_id="<image|>",
        video_token_id="<|video|>",
        boa_token_id="<|audio>",
        eoa_token_index="<audio|>",
        audio_token_id="<|audio|>",
    )
    vis["position_embedding_size"] = 64
    cfg = Gemma4Config(
        text_config=text, vision_config=vis, audio_config=None, image_token_id=proc.image_token_id, **ids
    )
    return cfg, proc


def _idefics(tok):
    from transformers import IdeficsConfig

    proc = P.idefics_processor(tok, image_size=IMG)
    text = {k: v for k, v in _text(tok).items() if k != "num_key_value_heads"}
    cfg = IdeficsConfig(
        **text,
        cross_layer_interval=2,  # gated cross-attention before blocks 0 and 2
        use_resampler=True,
        vision_config=dict(
            embed_dim=32,
            image_size=IMG,
            patch_size=PATCH,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
        ),
        perceiver_config=dict(
            use_resampler=True, resampler_n_latents=4, resampler_depth=1, resampler_n_heads=2, resampler_head_dim=16
        ),
    )
    return cfg, proc


def _blip2(tok):
    from transformers import Blip2Config, OPTConfig

    proc = P.blip2_processor(tok, image_size=IMG, num_query_tokens=4)
    t = _text(tok)
    opt = OPTConfig(  # BLIP-2's decoder-only releases use OPT
        vocab_size=t["vocab_size"],
        hidden_size=64,
        ffn_dim=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        max_position_embeddings=512,
        word_embed_proj_dim=64,
        **{k: t[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id")},
    )
    cfg = Blip2Config(
        vision_config=dict(VISION, image_size=IMG, patch_size=PATCH),
        qformer_config=dict(VISION, encoder_hidden_size=32, vocab_size=64, cross_attention_frequency=1),
        text_config=opt.to_dict(),
        num_query_tokens=4,
        image_token_index=proc.image_token_id,
    )
    return cfg, proc


def _instructblip(tok):
    from transformers import InstructBlipConfig, LlamaConfig

    qtok = smol_tokenizer()  # the Q-Former's own tokenizer (BERT in the releases)
    proc = P.instructblip_processor(tok, qformer_tokenizer=qtok, image_size=IMG, num_query_tokens=4)
    cfg = InstructBlipConfig(
        vision_config=dict(VISION, image_size=IMG, patch_size=PATCH),
        qformer_config=dict(VISION, encoder_hidden_size=32, vocab_size=len(qtok), cross_attention_frequency=1),
        text_config=LlamaConfig(**_text(tok)).to_dict(),  # Vicuna in the decoder-only releases
        num_query_tokens=4,
        image_token_index=proc.image_token_id,
    )
    return cfg, proc


def _fuyu(tok):
    from transformers import FuyuConfig

    proc = P.fuyu_processor(tok, image_size=IMG, patch_size=PATCH)
    text = {k: v for k, v in _text(tok, model_type="persimmon").items() if k != "num_key_value_heads"}
    text["pad_token_id"] = tok.pad_token_id  # the stock processor sets it to 0
    cfg = FuyuConfig(text_config=text, image_size=IMG, patch_size=PATCH, image_token_id=proc.image_token_id)
    return cfg, proc


def _aria(tok):
    from transformers import AriaConfig

    # the image processor accepts only 490 or 980 px: 490 px in 35-px patches = 14 x 14 patches -> 4 learned queries
    proc = P.aria_processor(tok, image_size=490, image_seq_length=4)
    text = _text(tok, moe_num_experts=4, moe_topk=2, moe_num_shared_experts=1)
    cfg = AriaConfig(
        vision_config=dict(VISION, image_size=490, patch_size=35, model_type="idefics3_vision"),
        text_config=text,
        projector_patch_to_query_dict={14 * 14: 4},
        image_token_index=proc.image_token_id,
    )
    return cfg, proc


def _paddleocr_vl(tok):
    from transformers import PaddleOCRVLConfig

    proc = P.paddleocr_vl_processor(tok)
    text = _text(tok, head_dim=16, model_type="paddleocr_vl_text")
    text["rope_parameters"] = dict(MROPE)
    vis = dict(VISION, image_size=28, patch_size=14, spatial_merge_size=2)
    ids = _ids(tok, vision_start_token_id="<|IMAGE_START|>", vision_end_token_id="<|IMAGE_END|>")
    cfg = PaddleOCRVLConfig(
        text_config=text,
        vision_config=vis,
        image_token_id=proc.image_token_id,
        video_token_id=tok.convert_tokens_to_ids("<|video_pad|>"),
        **ids,
    )
    return cfg, proc


def _granite_docling(tok):
    from transformers import GraniteDoclingConfig

    proc = P.granite_docling_processor(tok, image_size=IMG, image_seq_len=4)  # 16 patches / scale_factor^2
    vis = dict(
        VISION,
        image_size=IMG,
        patch_size=PATCH,
        out_hidden_size=64,
        scale_factor=2,
        deepstack_visual_indexes=[0],
        use_fine_route=False,
    )
    cfg = GraniteDoclingConfig(
        text_config=_text(tok, model_type="granite_docling_text"),
        vision_config=vis,
        image_token_id=proc.image_token_id,
        pad_token_id=tok.pad_token_id,
    )
    return cfg, proc


def _deepseek_vl_hybrid(tok):
    from transformers import DeepseekVLHybridConfig, LlamaConfig, SiglipVisionConfig

    proc = P.deepseek_vl_hybrid_processor(tok, image_size=IMG, high_res_size=64, num_image_tokens=(IMG // PATCH) ** 2)
    sam = dict(  # 64 px / 4-px patches = 16 x 16, two stride-2 convolutions -> the low-res 4 x 4 grid
        hidden_size=32,
        output_channels=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=64,
        patch_size=4,
        window_size=4,
        global_attn_indexes=[1],
        mlp_dim=64,
    )
    cfg = DeepseekVLHybridConfig(
        text_config=LlamaConfig(**_text(tok)),
        vision_config=SiglipVisionConfig(**VISION, image_size=IMG, patch_size=PATCH),
        high_res_vision_config=sam,
        image_token_id=proc.image_token_id,
    )
    return cfg, proc


def _cosmos3_edge(tok):
    from transformers import Cosmos3EdgeConfig

    proc = P.cosmos3_edge_processor(tok)
    text = _text(tok, head_dim=16, rope_parameters=MROPE)
    vis = dict(VISION, patch_size=16, num_patches=64, spatial_merge_size=2)
    cfg = Cosmos3EdgeConfig(
        text_config=text,
        vision_config=vis,
        projector_hidden_size=64,
        image_token_id=proc.image_token_id,
        **_ids(tok, **QWEN_IDS),
    )
    return cfg, proc


def _video_llama_3(tok):
    from transformers import Qwen2Config, VideoLlama3Config

    proc = P.video_llama_3_processor(tok)
    cfg = VideoLlama3Config(
        text_config=Qwen2Config(**_text(tok)).to_dict(),
        vision_config=dict(VISION, patch_size=14),
        image_token_id=proc.image_token_id,
        video_token_id=tok.convert_tokens_to_ids("<|video_pad|>"),
    )
    return cfg, proc


def _ernie4_5_vl_moe(tok):
    from transformers import Ernie4_5_VLMoeConfig

    proc = P.ernie4_5_vl_moe_processor(tok)
    text = _text(
        tok,
        head_dim=16,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [3, 3, 2]},
        moe_intermediate_size=[32, 16],  # text experts, vision experts
        moe_k=2,
        moe_num_experts=4,
        moe_num_shared_experts=1,
    )
    vis = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=14, spatial_merge_size=2)
    ids = _ids(
        tok,
        **{k.replace("_token", "_token_id"): v for k, v in P.ERNIE_VL_TOKENS.items()},
    )
    cfg = Ernie4_5_VLMoeConfig(text_config=text, vision_config=vis, **ids)
    return cfg, proc


def _mistral_large4(tok):
    from transformers import MistralLarge4Config, PixtralVisionConfig

    proc = P.pixtral_processor(tok, longest_edge=48, patch_size=PATCH, spatial_merge_size=2)
    text = _text(
        tok,
        model_type="mistral_large4_text",
        num_key_value_heads=4,
        kv_lora_rank=16,
        qk_rope_head_dim=8,
        qk_nope_head_dim=8,
        v_head_dim=16,
        moe_intermediate_size=32,
        n_routed_experts=4,
        num_experts_per_tok=2,
        index_topk=2048,  # the released value: dense below 2048 tokens (see the adapter notes for index_topk=8)
        index_head_dim=16,
        index_n_heads=2,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    )
    cfg = MistralLarge4Config(
        vision_config=PixtralVisionConfig(**VISION, head_dim=16, image_size=48, patch_size=PATCH),
        text_config=text,
        image_token_index=proc.image_token_id,
        spatial_merge_size=2,
        vision_feature_layer=-1,
    )
    return cfg, proc


def _qianfan_ocr(tok):
    from transformers import QianfanOCRConfig, Qwen3Config

    proc = P.qianfan_ocr_processor(tok, image_size=IMG, image_seq_length=4)  # 16 patches, pixel-shuffled by 0.5
    cfg = QianfanOCRConfig(
        vision_config=dict(VISION, image_size=[IMG, IMG], patch_size=[PATCH, PATCH], drop_path_rate=0.0),
        text_config=Qwen3Config(**_text(tok, head_dim=16)).to_dict(),
        image_token_id=proc.image_token_id,
        image_seq_length=4,
        downsample_ratio=0.5,
    )
    return cfg, proc


def _dots3_note(tok):
    from transformers import Dots3NoteConfig

    proc = P.dots3_note_processor(tok)
    mla = dict(q_lora_rank=16, kv_lora_rank=16, qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=16, head_dim=16)
    text = _text(
        tok,
        **mla,
        num_key_value_heads=4,  # latent attention: as many kv heads as query heads
        moe_intermediate_size=32,
        shared_experts_intermediate_size=32,
        n_routed_experts=4,
        num_experts_per_tok=2,
        index_head_dim=16,
        index_n_heads=2,
        sliding_window=8,
        # sliding-window blocks have their own (swa_*) latent-attention sizes
        **{f"swa_{k}": v for k, v in mla.items() if k != "qk_rope_head_dim"},
        swa_num_attention_heads=4,
        swa_num_key_value_heads=4,
    )
    vis = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        patch_size=14,
        spatial_merge_size=2,
        mlp_layer_types=["dense", "dense"],
        adapter_in_dim=32,
        adapter_out_dim=64,
    )
    audio = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        adapter_input_size=32,
        adapter_out_dim=64,
        downsample_hidden_size=16,
    )
    cfg = Dots3NoteConfig(
        text_config=text,
        vision_config=vis,
        audio_config=audio,
        image_token_id=proc.image_token_id,
        **_ids(tok, video_token_id="<|video_pad|>", audio_token_id="<|audio_comp_pad|>"),
    )
    return cfg, proc


def _minicpmv(tok, v47: bool = False):
    from transformers import MiniCPMV4_6Config, MiniCPMV4_7Config

    # 112 px / 14-px patches = 8 x 8 patches; two 2x2 merges (inside the tower, then the merger) -> 4 image tokens
    proc = (P.minicpmv4_7_processor if v47 else P.minicpmv_processor)(tok, scale_resolution=112, patch_size=14)
    vis = dict(VISION, image_size=112, patch_size=14, insert_layer_id=0)
    extra = _ids(tok, image_start_id="<image>", image_end_id="</image>") if v47 else {}
    cfg = (MiniCPMV4_7Config if v47 else MiniCPMV4_6Config)(
        text_config=_qwen3_5_text(tok, model_type="qwen3_5_text"),
        vision_config=vis,
        image_size=112,
        insert_layer_id=0,
        image_token_id=proc.image_token_id,
        video_token_id=proc.video_token_id,
        **extra,
    )
    return cfg, proc


def _qwen2_5_omni_thinker(tok):
    from transformers import Qwen2_5OmniThinkerConfig

    proc = P.qwen2_5_omni_processor(tok)
    vis = dict(QWEN_VISION, **QWEN2_5_WINDOWS)
    audio = dict(
        num_mel_bins=16, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=64, d_model=32, output_dim=64
    )
    ids = _ids(
        tok,
        image_token_index="<|IMAGE|>",
        video_token_index="<|VIDEO|>",
        audio_token_index="<|AUDIO|>",
        audio_start_token_id="<|audio_bos|>",
        audio_end_token_id="<|audio_eos|>",
        vision_start_token_id="<|vision_bos|>",
        vision_end_token_id="<|vision_eos|>",
    )
    cfg = Qwen2_5OmniThinkerConfig(
        text_config=_text(tok, head_dim=16, rope_parameters=MROPE), vision_config=vis, audio_config=audio, **ids
    )
    return cfg, proc


def _qwen3_omni_moe_thinker(tok):
    from transformers import Qwen3OmniMoeThinkerConfig

    proc = P.qwen3_omni_moe_processor(tok)
    vis = dict(QWEN3_VISION, deepstack_visual_indexes=[0])
    audio = dict(
        num_mel_bins=16,
        encoder_layers=1,
        encoder_attention_heads=2,
        encoder_ffn_dim=64,
        d_model=32,
        output_dim=64,
        downsample_hidden_size=16,
    )
    text = _text(
        tok, head_dim=16, rope_parameters=MROPE, moe_intermediate_size=32, num_experts=4, num_experts_per_tok=2
    )
    ids = _ids(
        tok,
        image_token_id="<|IMAGE|>",
        video_token_id="<|VIDEO|>",
        audio_token_id="<|AUDIO|>",
        audio_start_token_id="<|audio_bos|>",
        vision_start_token_id="<|vision_bos|>",
    )
    cfg = Qwen3OmniMoeThinkerConfig(text_config=text, vision_config=vis, audio_config=audio, **ids)
    return cfg, proc


def _cohere_compass(tok):
    from transformers import CohereCompassConfig

    proc = P.cohere_compass_processor(tok)
    text = _text(
        tok,
        head_dim=16,
        model_type="cohere_compass_text",
        layer_types=["full_attention"] * 4,
        rope_parameters={"full_attention": dict(MROPE)},  # rope settings per layer type (the default config has none)
    )
    ids = _ids(
        tok,
        video_token_id="<|VIDEO_PAD|>",
        vision_start_token_id="<|VISION_START|>",
        vision_end_token_id="<|VISION_END|>",
    )
    vis = dict(QWEN3_VISION, deepstack_visual_indexes=[0])
    cfg = CohereCompassConfig(text_config=text, vision_config=vis, image_token_id=proc.image_token_id, **ids)
    return cfg, proc


def _deepseek_ocr2(tok):
    from transformers import DeepseekOcr2Config

    # a 192-px view: SAM 16-px patches (12 x 12), two stride-2 convolutions -> 3 x 3 patches, read by the encoder's
    # 144 learned queries (its smallest query set) -> 144 image tokens + one view separator
    proc = P.deepseek_ocr2_processor(tok, image_size=192, patch_size=4)
    sam = dict(
        hidden_size=32,
        output_channels=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=192,
        patch_size=16,
        window_size=4,
        global_attn_indexes=[1],
        downsample_channels=[32, 64],
    )
    encoder = dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
    )
    text = _text(
        tok,
        n_routed_experts=4,
        num_experts_per_tok=2,
        moe_intermediate_size=32,
        n_shared_experts=1,
        mlp_layer_types=["dense", "sparse", "sparse", "sparse"],  # the default (None) does not build
    )
    cfg = DeepseekOcr2Config(
        vision_config=dict(sam_config=sam, encoder_config=encoder), text_config=text, image_token_id=proc.image_token_id
    )
    return cfg, proc


def _granite4_vision(tok):
    from transformers import Granite4VisionConfig

    # 64-px tiles in 8-px patches (8 x 8); windows of 4 x 4 patches each read by 2 x 2 Q-Former queries
    pins = [[64, 64], [64, 128], [128, 64]]
    proc = P.granite4_vision_processor(tok, image_size=64, patch_size=PATCH, grid_pinpoints=pins, downsample_rate="2/4")
    cfg = Granite4VisionConfig(
        vision_config=dict(VISION, hidden_size=64, image_size=64, patch_size=PATCH, model_type="clip_vision_model"),
        text_config=_text(tok, model_type="granite4_vision_text"),
        image_token_index=proc.image_token_id,
        image_grid_pinpoints=pins,
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        downsample_rate="2/4",
        spatial_target_layers=[1, 2],
        deepstack_layer_map=[[0, 0], [1, 1]],
        projector_dropout=0.0,
        qformer_config=dict(num_hidden_layers=1, intermediate_size=64),  # width and heads follow the vision tower
    )
    return cfg, proc


BUILDERS: dict[str, Callable[[Any], tuple[Any, Any]]] = {
    "llava": _llava,
    "llava_next": _llava_next,
    "llava_onevision": _llava_onevision,
    "qwen2_vl": lambda t: _qwen(t, False),
    "qwen2_5_vl": lambda t: _qwen(t, True),
    "idefics2": _idefics2,
    "idefics3": lambda t: _idefics3(t, False),
    "smolvlm": lambda t: _idefics3(t, True),
    "gemma3": _gemma3,
    "internvl": _internvl,
    "paligemma": _paligemma,
    "mistral3": _mistral3,
    "chameleon": _chameleon,
    "mllama": _mllama,
    "vipllava": _vipllava,
    "deepseek_vl": _deepseek_vl,
    "lighton_ocr": _lighton_ocr,
    "aya_vision": _aya_vision,
    "qwen3_vl": _qwen3_vl,
    "glm4v": _glm4v,
    "janus": _janus,
    "ovis2": _ovis2,
    "llava_next_video": _llava_next_video,
    "qwen3_5": _qwen3_5,
    "glm46v": lambda t: _glm4v(t, True),
    "exaone4_5": _exaone4_5,
    "hyperclovax_vision_v2": _hyperclovax_vision_v2,
    "lfm3_vl": _lfm3_vl,
    "shieldgemma2": lambda t: _gemma3(t, shield=True),
    "got_ocr2": _got_ocr2,
    "pp_chart2table": lambda t: _got_ocr2(t, chart=True),
    "gemma4": _gemma4,
    "qwen3_5_moe": lambda t: _qwen3_5(t, moe=True),
    "video_llava": _llava_like,
    "idefics": _idefics,
    "blip-2": _blip2,
    "instructblip": _instructblip,
    "fuyu": _fuyu,
    "aria": _aria,
    "paddleocr_vl": _paddleocr_vl,
    "granite_docling": _granite_docling,
    "deepseek_vl_hybrid": _deepseek_vl_hybrid,
    "cosmos3_edge": _cosmos3_edge,
    "video_llama_3": _video_llama_3,
    "ernie4_5_vl_moe": _ernie4_5_vl_moe,
    "glmga": lambda t: _glm4v(t, ga=True),
    "glm_ocr": lambda t: _glm4v(t, ocr=True),
    "mistral_large4": _mistral_large4,
    "qianfan_ocr": _qianfan_ocr,
    "dots3_note": _dots3_note,
    "minicpmv4_6": _minicpmv,
    "minicpmv4_7": lambda t: _minicpmv(t, v47=True),
    "qwen2_5_omni_thinker": _qwen2_5_omni_thinker,
    "qwen3_omni_moe_thinker": _qwen3_omni_moe_thinker,
    "cosmos3_omni": lambda t: _qwen3_vl(t, cosmos=True),
    "qwen3_vl_moe": lambda t: _qwen3_vl(t, moe=True),
    "glm4v_moe": lambda t: _glm4v(t, moe=True),
    "cohere_compass": _cohere_compass,
    "deepseek_ocr2": _deepseek_ocr2,
    "granite4_vision": _granite4_vision,
}


GATES = {"mllama": ("cross_attn_attn_gate", "cross_attn_mlp_gate"), "idefics": ("alpha_cross_attn", "alpha_dense")}
"""Cross-attention gate parameters (per family) that the tiny models open."""


def build_tiny_vlm(family: str, seed: int = 0) -> TinyVLM:
    """Build the tiny model of ``family`` (see :data:`FAMILIES`), deterministic for ``seed``."""
    import transformers

    if family not in BUILDERS:
        raise KeyError(f"no tiny model for {family!r}; families: {', '.join(ALL_FAMILIES)}")
    cfg, proc = BUILDERS[family](smol_tokenizer())
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = getattr(transformers, MODEL_CLASS[family])(cfg).eval()
    if family in GATES:  # HF initialises the cross-attention gates to 0 (tanh(0) = 0): open them so images count
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith(GATES[family]):
                    p.fill_(1.0)
    return TinyVLM(family, model, proc)


@functools.cache
def tiny_vlm(family: str) -> TinyVLM:
    """Session-cached :func:`build_tiny_vlm` (seed 0). Do not modify the returned model."""
    return build_tiny_vlm(family)


def scratch_dir(prefix: str) -> Path:
    """A temporary directory removed when the test session's process exits."""
    d = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, d, ignore_errors=True)
    return d


CHECKPOINT_CLASS = {"shieldgemma2": "ShieldGemma2ForImageClassification"}
"""Families whose released checkpoints are saved by a wrapper class (its ``.model`` is the generator)."""


def save_tiny(vlm: TinyVLM, d: Path) -> Path:
    """Save model + processor as a released checkpoint of the family is laid out."""
    import transformers

    model = vlm.model
    if vlm.family in CHECKPOINT_CLASS:
        model = getattr(transformers, CHECKPOINT_CLASS[vlm.family])(vlm.model.config)
        model.model.load_state_dict(vlm.model.state_dict())
    model.save_pretrained(d)
    vlm.processor.save_pretrained(d)
    return d


@functools.cache
def tiny_vlm_dir(family: str) -> Path:
    """The cached tiny model saved (model + processor) into a temporary directory, for ``load_model(dir)``."""
    return save_tiny(tiny_vlm(family), scratch_dir(f"cotscope-tiny-{family}-"))
