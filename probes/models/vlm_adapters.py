"""Adapters for vision-language model families (transformers 5.x module layout).

Every top-level ``…ForConditionalGeneration`` holds ``model`` (vision tower + projector + language model)
and ``lm_head``. Paths below start at that top level and work on HF modules and nnsight envoys alike.

Image tokens: the adapter reads the id of the token the *model* replaces with image features. For Gemma 3
that is ``image_token_index`` (``<image_soft_token>``), not the ``<start_of_image>`` token the prompt holds.

Processors: ``build_processor(model_dir)`` loads a saved processor offline; ``build_processor(tokenizer, …)``
assembles one from PIL image processors (see :mod:`probes.models.processors`).
"""

from __future__ import annotations

from cotscope.probes.models import processors as P
from cotscope.probes.models.registry import ModelAdapter, register

_LM = "model.language_model"


def _vlm(
    family: str,
    model_types: tuple[str, ...],
    lm: str,
    vision: str,
    projector: str,
    image_attrs: tuple[str, ...],
    recipe,
    processor_class: str,
    notes: str,
    norm: str = "norm",
    **kw,
) -> ModelAdapter:
    return register(
        ModelAdapter(
            family=family,
            model_types=model_types,
            layers_path=f"{lm}.layers",
            final_norm_path=f"{lm}.{norm}",
            vision_path=vision,
            projector_path=projector,
            image_token_attrs=image_attrs,
            text_config_attr="text_config",
            build_processor=P.processor_builder(recipe, processor_class),
            notes=notes,
            **kw,
        )
    )


LLAVA = _vlm(
    "llava",
    ("llava",),
    _LM,
    "model.vision_tower",
    "model.multi_modal_projector",
    ("image_token_index",),
    P.llava_processor,
    "LlavaProcessor",
    "LLaVA-1.5 style; one <image> token per vision patch",
)
LLAVA_NEXT = _vlm(
    "llava_next",
    ("llava_next",),
    _LM,
    "model.vision_tower",
    "model.multi_modal_projector",
    ("image_token_index",),
    P.llava_next_processor,
    "LlavaNextProcessor",
    "anyres tiles + base image; image-newline embeddings sit on image-token positions",
)
LLAVA_ONEVISION = _vlm(
    "llava_onevision",
    ("llava_onevision",),
    _LM,
    "model.vision_tower",
    "model.multi_modal_projector",
    ("image_token_index",),
    P.llava_onevision_processor,
    "LlavaOnevisionProcessor",
    "image-only processor (the video processor needs torchvision)",
)
QWEN2_VL = _vlm(
    "qwen2_vl",
    ("qwen2_vl",),
    _LM,
    "model.visual",
    "model.visual.merger",
    ("image_token_id",),
    P.qwen2_vl_processor,
    "Qwen2VLProcessor",
    "M-RoPE positions come from mm_token_type_ids + attention_mask (the processor returns them)",
)
QWEN2_5_VL = _vlm(
    "qwen2_5_vl",
    ("qwen2_5_vl",),
    _LM,
    "model.visual",
    "model.visual.merger",
    ("image_token_id",),
    P.qwen2_5_vl_processor,
    "Qwen2_5_VLProcessor",
    "as Qwen2-VL; windowed vision attention",
)
IDEFICS2 = _vlm(
    "idefics2",
    ("idefics2",),
    "model.text_model",
    "model.vision_model",
    "model.connector",
    ("image_token_id",),
    P.idefics2_processor,
    "Idefics2Processor",
    "perceiver-resampler connector: image_seq_len learned-query tokens per image",
)
IDEFICS3 = _vlm(
    "idefics3",
    ("idefics3",),
    "model.text_model",
    "model.vision_model",
    "model.connector",
    ("image_token_id",),
    P.idefics3_processor,
    "Idefics3Processor",
    "pixel-shuffle connector",
)
SMOLVLM = _vlm(
    "smolvlm",
    ("smolvlm",),
    "model.text_model",
    "model.vision_model",
    "model.connector",
    ("image_token_id",),
    P.idefics3_processor,
    "Idefics3Processor",
    "same layout as Idefics3; Idefics3Processor avoids SmolVLMProcessor's num2words/torchvision needs",
)
GEMMA3 = _vlm(
    "gemma3",
    ("gemma3",),
    _LM,
    "model.vision_tower",
    "model.multi_modal_projector",
    ("image_token_index",),
    P.gemma3_processor,
    "Gemma3Processor",
    "prompt holds <start_of_image>; the model's image token is <image_soft_token> (image_token_index); "
    "token_type_ids make image tokens attend bidirectionally",
)
INTERNVL = _vlm(
    "internvl",
    ("internvl",),
    _LM,
    "model.vision_tower",
    "model.multi_modal_projector",
    ("image_token_id",),
    P.internvl_processor,
    "InternVLProcessor",
    "processor defaults to crop_to_patches=True at call time; cotscope passes False",
    processor_kwargs={"crop_to_patches": False},
)

PALIGEMMA = _vlm(
    "paligemma",
    ("paligemma",),
    _LM,
    "model.vision_tower",
    "model.multi_modal_projector",
    ("image_token_index",),
    P.paligemma_processor,
    "PaliGemmaProcessor",
    "prefix-LM: token_type_ids 0 (image + prompt) attend bidirectionally; the processor inserts BOS after the "
    "image tokens and appends a newline (processor_suffix)",
    processor_suffix="\n",
)
MISTRAL3 = _vlm(
    "mistral3",
    ("mistral3",),
    _LM,
    "model.vision_tower",
    "model.multi_modal_projector",
    ("image_token_index",),
    P.pixtral_processor,
    "PixtralProcessor",
    "Pixtral vision at native resolution; rows of [IMG] closed by [IMG_BREAK] / [IMG_END]: only [IMG] positions "
    "hold image features (the break/end tokens are text embeddings). Image-only Pixtral-layout processor "
    "(transformers' PixtralProcessor needs torchvision)",
)
CHAMELEON = register(
    ModelAdapter(
        family="chameleon",
        model_types=("chameleon",),
        layers_path="model.layers",
        final_norm_path="model.norm",
        vision_path="model.vqmodel",
        projector_path="model.embed_tokens",
        image_token_attrs=("image_token_id",),
        build_processor=P.processor_builder(P.chameleon_processor, "ChameleonProcessor"),
        notes="early fusion: the VQ-GAN turns each image into codebook tokens of the shared vocabulary, embedded by "
        "the text embedding table (projector_path) on the <image> positions. Processor called with "
        "return_for_text_completion=True: cotscope renders the chat template itself, so no separator token is "
        "appended after the text",
        processor_kwargs={"return_for_text_completion": True},
    )
)
MLLAMA = _vlm(
    "mllama",
    ("mllama",),
    _LM,
    "model.vision_model",
    "model.multi_modal_projector",
    ("image_token_index",),
    P.mllama_processor,
    "MllamaProcessor",
    "cross-attention: one <|image|> marker per image; image features enter through the cross-attention layers "
    "(config.text_config.cross_attention_layers, inside the layer list), so there are no image tokens to mask",
    image_tokens_in_sequence=False,
)

VIPLLAVA = _vlm(
    "vipllava",
    ("vipllava",),
    _LM,
    "model.vision_tower",
    "model.multi_modal_projector",
    ("image_token_index",),
    P.llava_processor,
    "LlavaProcessor",
    "LLaVA layout; the projector reads several vision layers at once (vision_feature_layer list)",
)
DEEPSEEK_VL = _vlm(
    "deepseek_vl",
    ("deepseek_vl",),
    _LM,
    "model.vision_model",
    "model.aligner",
    ("image_token_id",),
    P.deepseek_vl_processor,
    "DeepseekVLProcessor",
    "SigLIP tower + two-layer aligner; <image_placeholder> repeated num_image_tokens times",
)
LIGHTON_OCR = _vlm(
    "lighton_ocr",
    ("lighton_ocr",),
    _LM,
    "model.vision_encoder",
    "model.vision_projection",
    ("image_token_id",),
    P.lighton_ocr_processor,
    "LightOnOcrProcessor",
    "Pixtral vision at native resolution with a spatial-merge projector; plain image tokens, no break tokens",
)
AYA_VISION = _vlm(
    "aya_vision",
    ("aya_vision",),
    _LM,
    "model.vision_tower",
    "model.multi_modal_projector",
    ("image_token_index",),
    P.aya_vision_processor,
    "AyaVisionProcessor",
    "prompt holds <image>; the model's image token is <|IMG_PATCH|>; TILE_GLOBAL / start / end tokens are text. "
    "Processor called with crop_to_patches=False (one global tile)",
    processor_kwargs={"crop_to_patches": False},
)

QWEN3_VL = _vlm(
    "qwen3_vl",
    ("qwen3_vl",),
    _LM,
    "model.visual",
    "model.visual.merger",
    ("image_token_id",),
    P.qwen3_vl_processor,
    "Qwen3VLProcessor",
    "M-RoPE as Qwen2-VL; DeepStack adds vision-layer features to the residual stream at the image positions right "
    "after each of the first len(deepstack_visual_indexes) blocks. Block outputs (what cotscope stores and steers, "
    "and what HF's hidden_states return) are taken before that addition",
)

GLM4V = _vlm(
    "glm4v",
    ("glm4v",),
    _LM,
    "model.visual",
    "model.visual.merger",
    ("image_token_id",),
    P.glm4v_processor,
    "Glm4vProcessor",
    "Qwen2-VL-style dynamic resolution and 3D RoPE; <|image|> tokens between <|begin_of_image|>/<|end_of_image|>",
)

JANUS = _vlm(
    "janus",
    ("janus",),
    _LM,
    "model.vision_model",
    "model.aligner",
    ("image_token_id",),
    P.janus_processor,
    "JanusProcessor",
    "understanding path: SigLIP-style tower + aligner on <image_placeholder> positions (the VQ generation head is "
    "not used for image-to-text)",
)
OVIS2 = _vlm(
    "ovis2",
    ("ovis2",),
    _LM,
    "model.vision_tower",
    "model.visual_embeddings_table",
    ("image_token_id",),
    P.ovis2_processor,
    "Ovis2Processor",
    "visual tokenizer: each <IMG_ATOM> position gets a probability-weighted mix of a visual embedding table; "
    "<IMG_START>/<IMG_GRID>/<IMG_END> get learned indicator embeddings (not counted as image tokens)",
)

LLAVA_NEXT_VIDEO = _vlm(
    "llava_next_video",
    ("llava_next_video",),
    _LM,
    "model.vision_tower",
    "model.multi_modal_projector",
    ("image_token_index",),
    P.llava_next_video_processor,
    "LlavaNextVideoProcessor",
    "image path of LLaVA-NeXT-Video (anyres tiles as LLaVA-NeXT); image-only processor (videos need torchvision)",
)

QWEN3_5 = _vlm(
    "qwen3_5",
    ("qwen3_5",),
    _LM,
    "model.visual",
    "model.visual.merger",
    ("image_token_id",),
    P.qwen3_vl_processor,
    "Qwen3VLProcessor",
    "hybrid language model: Gated-DeltaNet linear-attention layers between full-attention layers "
    "(text_config.layer_types); attention rows exist only for the full-attention layers",
)

GLM46V = _vlm(
    "glm46v",
    ("glm46v",),
    _LM,
    "model.visual",
    "model.visual.merger",
    ("image_token_id",),
    P.glm46v_processor,
    "Glm46VProcessor",
    "GLM-4.6V: the GLM-4V layout (3D RoPE, <|image|> between <|begin_of_image|>/<|end_of_image|>)",
)
EXAONE4_5 = _vlm(
    "exaone4_5",
    ("exaone4_5",),
    _LM,
    "model.visual",
    "model.visual.merger",
    ("image_token_id",),
    P.exaone4_5_processor,
    "Exaone4_5_Processor",
    "Qwen2.5-VL-style windowed vision tower with an EXAONE 4 language model; <|image_pad|> tokens",
)

HYPERCLOVAX_VISION_V2 = _vlm(
    "hyperclovax_vision_v2",
    ("hyperclovax_vision_v2",),
    _LM,
    "model.vision_model",
    "model.projector",
    ("image_token_id",),
    P.hyperclovax_vision_v2_processor,
    "HyperCLOVAXVisionV2Processor",
    "Qwen2.5-VL vision tower, one linear projector, HyperCLOVA X language model (muP-style multipliers)",
)

LFM3_VL = register(
    ModelAdapter(
        family="lfm3_vl",
        model_types=("lfm3_vl",),
        layers_path="model.language_model.layers",
        final_norm_path="model.language_model.embedding_norm",
        vision_path="model.vision_tower",
        projector_path="model.multi_modal_projector",
        image_token_attrs=("image_token_id",),
        text_config_attr="text_config",
        build_processor=P.processor_builder(P.lfm3_vl_processor, "Lfm3VlProcessor"),
        notes="hybrid language model: short-convolution blocks between full and sliding-window attention blocks "
        "(text_config.layer_types); attention rows exist only for the attention blocks; final norm is "
        "'embedding_norm'",
    )
)

SHIELDGEMMA2 = _vlm(
    "shieldgemma2",
    ("shieldgemma2",),
    _LM,
    "model.vision_tower",
    "model.multi_modal_projector",
    ("image_token_index",),
    P.gemma3_processor,
    "Gemma3Processor",
    "ShieldGemma 2 checkpoints are Gemma3ForConditionalGeneration with their own config. cotscope drives them with "
    "the Gemma 3 processor on the user's prompt (ShieldGemma2Processor ignores the text and writes one policy "
    "prompt per image and policy); the layout is Gemma 3's. Checkpoints load through "
    "ShieldGemma2ForImageClassification (its .model is the generator): in transformers 5.24 "
    "AutoModelForImageTextToText leaves every language-model weight of a saved ShieldGemma 2 checkpoint "
    "newly initialised",
    auto_class="ShieldGemma2ForImageClassification",
    unwrap="model",
)
GOT_OCR2 = _vlm(
    "got_ocr2",
    ("got_ocr2",),
    _LM,
    "model.vision_tower",
    "model.multi_modal_projector",
    ("image_token_index",),
    P.got_ocr2_processor,
    "GotOcr2Processor",
    "SAM-style windowed vision tower, two stride-2 convolutions as projector; <imgpad> repeated num_image_tokens "
    "times between <img>/</img>. cotscope's GOT-OCR2-layout processor saves num_image_tokens (the stock one takes it "
    "per call, default 256)",
)
PP_CHART2TABLE = _vlm(
    "pp_chart2table",
    ("pp_chart2table",),
    _LM,
    "model.vision_tower",
    "model.multi_modal_projector",
    ("image_token_index",),
    P.pp_chart2table_processor,
    "PPChart2TableProcessor",
    "GOT-OCR2 architecture with its own config and image processor; the stock processor expands no placeholder "
    "(the checkpoint's prompts hold the <imgpad> tokens), cotscope's GOT-OCR2-layout processor expands <imgpad>",
)

GEMMA4 = _vlm(
    "gemma4",
    ("gemma4",),
    _LM,
    "model.vision_tower",
    "model.embed_vision",
    ("image_token_id",),
    P.gemma4_processor,
    "Gemma4Processor",
    "variable-resolution vision tower pooled to at most max_soft_tokens; <|image|> soft tokens between <|image> / "
    "<image|>; mm_token_type_ids make image tokens attend bidirectionally; every block also reads a per-layer "
    "token embedding. Image-only processor (the stock one wants an audio feature extractor and a torchvision video "
    "processor)",
)

QWEN3_5_MOE = _vlm(
    "qwen3_5_moe",
    ("qwen3_5_moe",),
    _LM,
    "model.visual",
    "model.visual.merger",
    ("image_token_id",),
    P.qwen3_vl_processor,
    "Qwen3VLProcessor",
    "as Qwen3.5 (Gated-DeltaNet + full-attention hybrid) with a sparse mixture-of-experts MLP and a shared expert "
    "in every block; block outputs include the routed experts",
)

VIDEO_LLAVA = _vlm(
    "video_llava",
    ("video_llava",),
    _LM,
    "model.image_tower",
    "model.multi_modal_projector",
    ("image_token_index",),
    P.video_llava_processor,
    "VideoLlavaProcessor",
    "image path of Video-LLaVA: LLaVA layout with a separate image tower; image-only processor (videos need "
    "torchvision)",
)

IDEFICS = register(
    ModelAdapter(
        family="idefics",
        model_types=("idefics",),
        layers_path="model.layers",
        final_norm_path="model.norm",
        vision_path="model.vision_model",
        projector_path="model.perceiver_resampler",
        image_token_attrs=(),
        build_processor=P.processor_builder(P.idefics_processor, "IdeficsProcessor"),
        notes="cross-attention (IDEFICS v1, Flamingo-style): one <image> marker per image between "
        "<fake_token_around_image> tokens; a gated cross-attention block before every cross_layer_interval-th "
        "decoder block reads the perceiver-resampled image latents, so there are no image tokens to mask. The "
        "processor's image-attention mask lets a token see the latest image before it, up to the next eos token",
        image_tokens_in_sequence=False,
    )
)

BLIP2 = register(
    ModelAdapter(
        family="blip-2",
        model_types=("blip-2",),
        layers_path="language_model.model.decoder.layers",
        final_norm_path="language_model.model.decoder.final_layer_norm",
        vision_path="vision_model",
        projector_path="language_projection",
        image_token_attrs=("image_token_index",),
        text_config_attr="text_config",
        build_processor=P.processor_builder(P.blip2_processor, "Blip2Processor"),
        notes="Q-Former: num_query_tokens learned queries read the vision tower; their projections sit on <image> "
        "tokens at the start of the row (where the stock processor puts them, wherever the prompt's placeholder is). "
        "cotscope's processor pads to the left of the query tokens (the stock one pads between them and the text). "
        "Decoder-only (OPT) checkpoints; Flan-T5 ones are encoder-decoder. generate() runs the language model on "
        "embeddings, so the logits of each step come from language_model (generator_path)",
        generator_path="language_model",
    )
)

INSTRUCTBLIP = register(
    ModelAdapter(
        family="instructblip",
        model_types=("instructblip",),
        layers_path="language_model.model.layers",
        final_norm_path="language_model.model.norm",
        vision_path="vision_model",
        projector_path="language_projection",
        image_token_attrs=("image_token_index",),
        text_config_attr="text_config",
        build_processor=P.processor_builder(P.instructblip_processor, "InstructBlipProcessor"),
        notes="BLIP-2 layout (query tokens first, left padding outside them) whose Q-Former also reads the text. "
        "As with the stock processor, the Q-Former reads the whole text it is given: in teacher-forced collection "
        "that includes the answer, so the image features (and every position after them) depend on the answer "
        "text. Decoder-only (Vicuna/Llama) checkpoints; Flan-T5 ones are encoder-decoder",
        generator_path="language_model",
    )
)

FUYU = _vlm(
    "fuyu",
    ("fuyu",),
    _LM,
    "model.vision_embed_tokens",
    "model.vision_embed_tokens",
    ("image_token_id",),
    P.fuyu_processor,
    "FuyuProcessor",
    "no vision tower: image patches are linearly embedded (vision_embed_tokens) on |SPEAKER| tokens, each row "
    "closed by |NEWLINE| (text embeddings), then BOS; the image goes first in the row, wherever the placeholder is. "
    "The processor appends <0x04> (beginning of answer) after the text (processor_suffix). cotscope's Fuyu-layout "
    "processor builds the token ids itself: the stock one fails with the PIL image processor in transformers 5.24",
    processor_suffix="<0x04>",
    norm="final_layernorm",
)

ARIA = _vlm(
    "aria",
    ("aria",),
    _LM,
    "model.vision_tower",
    "model.multi_modal_projector",
    ("image_token_index",),
    P.aria_processor,
    "AriaProcessor",
    "Idefics3-style vision tower; the projector's learned queries cross-attend to the patches "
    "(projector_patch_to_query_dict: patch count -> query count), one <|img|> token per query; mixture-of-experts "
    "language model with shared experts",
)

PADDLEOCR_VL = _vlm(
    "paddleocr_vl",
    ("paddleocr_vl",),
    _LM,
    "model.visual",
    "model.projector",
    ("image_token_id",),
    P.paddleocr_vl_processor,
    "PaddleOCRVLProcessor",
    "NaViT-style dynamic-resolution SigLIP tower, 2x2 patch-merging projector, ERNIE-4.5 language model with "
    "3D (M-RoPE) positions; <|IMAGE_PLACEHOLDER|> tokens between <|IMAGE_START|>/<|IMAGE_END|>",
)

GRANITE_DOCLING = _vlm(
    "granite_docling",
    ("granite_docling",),
    "model.text_model",
    "model.vision_model",
    "model.vision_model.connector",
    ("image_token_id",),
    P.granite_docling_processor,
    "GraniteDoclingProcessor",
    "Idefics3-style tiles and pixel-shuffle connector with DeepStack: vision-layer features are added at the image "
    "positions after the first language-model blocks (block outputs, as stored and as HF returns them, are taken "
    "before that addition); Granite language model (muP multipliers)",
)

DEEPSEEK_VL_HYBRID = _vlm(
    "deepseek_vl_hybrid",
    ("deepseek_vl_hybrid",),
    _LM,
    "model.vision_model",
    "model.aligner",
    ("image_token_id",),
    P.deepseek_vl_hybrid_processor,
    "DeepseekVLHybridProcessor",
    "DeepSeek-VL with two towers: SigLIP on the low-resolution image and SAM on a high-resolution copy, "
    "concatenated by the aligner; <image_placeholder> repeated num_image_tokens times. vision_path is the SigLIP "
    "tower (model.high_res_vision_model is the SAM one)",
)

COSMOS3_EDGE = _vlm(
    "cosmos3_edge",
    ("cosmos3_edge",),
    _LM,
    "model.visual",
    "model.projector",
    ("image_token_id",),
    P.cosmos3_edge_processor,
    "Cosmos3EdgeProcessor",
    "SigLIP-2-style variable-resolution tower, 2x2 patch-merging projector, 3D (M-RoPE) positions; <|image_pad|> "
    "between <|vision_start|>/<|vision_end|>. Image-only processor (the video processor needs torchvision). The model "
    "needs mm_token_type_ids for its 3D positions and the stock processor does not return them unless asked: "
    "cotscope passes return_mm_token_type_ids=True",
    processor_kwargs={"return_mm_token_type_ids": True},
)

VIDEO_LLAMA_3 = _vlm(
    "video_llama_3",
    ("video_llama_3",),
    _LM,
    "model.vision_model",
    "model.projector",
    ("image_token_id",),
    P.video_llama_3_processor,
    "VideoLlama3Processor",
    "image path of VideoLLaMA 3: SigLIP-style tower at native resolution with 2D RoPE, MLP projector, Qwen2 "
    "language model with 1D positions; image-only processor (videos need torchvision)",
)

ERNIE4_5_VL_MOE = _vlm(
    "ernie4_5_vl_moe",
    ("ernie4_5_vl_moe",),
    _LM,
    "model.vision_tower",
    "model.resampler_model",
    ("image_token_id",),
    P.ernie4_5_vl_moe_processor,
    "Ernie4_5_VLMoeProcessor",
    "multimodal mixture of experts: image tokens (and their start/end tokens, per moe_mm_token_type_ids) are routed "
    "to vision experts, text tokens to text experts; variable-resolution tower, spatial/temporal resampler, 3D "
    "positions; <|IMAGE_PLACEHOLDER|> between <|IMAGE_START|>/<|IMAGE_END|>. Image-only processor",
)

GLMGA = _vlm(
    "glmga",
    ("glmga",),
    _LM,
    "model.visual",
    "model.visual.merger",
    ("image_token_id",),
    P.glmga_processor,
    "Glm46VProcessor",
    "GLM-GA: GLM-4.6V's model class with its own config and image processor; transformers registers no processor, "
    "so cotscope uses the GLM-4.6V processor on the GLM-GA image processor",
)

GLM_OCR = _vlm(
    "glm_ocr",
    ("glm_ocr",),
    _LM,
    "model.visual",
    "model.visual.merger",
    ("image_token_id",),
    P.glm4v_processor,
    "Glm4vProcessor",
    "GLM-OCR: the GLM-4V architecture at OCR size; transformers registers no processor or image processor for it, "
    "so cotscope uses the GLM-4V ones (same <|begin_of_image|><|image|><|end_of_image|> layout)",
)

MISTRAL_LARGE4 = _vlm(
    "mistral_large4",
    ("mistral_large4",),
    _LM,
    "model.vision_tower",
    "model.multi_modal_projector",
    ("image_token_index",),
    P.pixtral_processor,
    "PixtralProcessor",
    "Mistral3 layout (Pixtral vision, [IMG] rows closed by [IMG_BREAK]/[IMG_END]) with a mixture-of-experts language "
    "model using latent (MLA) attention and a sparse token indexer (each query attends to its index_topk "
    "highest-scoring keys; blocks return (hidden, topk indices)). Exact below index_topk tokens (2048 released). "
    "Measured on the tiny model with index_topk=8, shorter than its prompts: collection still equals HF and "
    "injection equals hooks, but a left-padded batch differs from per-item collection by 1.4e-2 and captured "
    "attention rows differ from HF's by 0.11, so batch long prompts one per row and do not trust attention rows "
    "past index_topk tokens",
)

QIANFAN_OCR = _vlm(
    "qianfan_ocr",
    ("qianfan_ocr",),
    _LM,
    "model.vision_tower",
    "model.multi_modal_projector",
    ("image_token_id",),
    P.qianfan_ocr_processor,
    "QianfanOCRProcessor",
    "InternVL layout (pixel-shuffle projector, <IMG_CONTEXT> tokens between <img>/</img>) with a Qwen3 language "
    "model; prompts hold <image> (the processor's image_placeholder_token). Processor called with "
    "crop_to_patches=False (one tile per image)",
    processor_kwargs={"crop_to_patches": False},
)

DOTS3_NOTE = _vlm(
    "dots3_note",
    ("dots3_note",),
    _LM,
    "model.vision_tower",
    "model.vision_tower.merger",
    ("image_token_id",),
    P.dots3_note_processor,
    "Dots3NoteProcessor",
    "image path of dots3-note: native-resolution vision tower with a patch merger; latent-attention (MLA) MoE "
    "language model mixing sparse-indexer and sliding-window blocks (text_config.layer_types); <|imgpad|> tokens "
    "between <|img|>/<|endofimg|>. Image-only processor (no video processor or audio feature extractor); the audio "
    "tower is unused",
)

MINICPMV4_6 = _vlm(
    "minicpmv4_6",
    ("minicpmv4_6",),
    _LM,
    "model.vision_tower",
    "model.merger",
    ("image_token_id",),
    P.minicpmv_processor,
    "MiniCPMV4_6Processor",
    "SigLIP-style tower with a window-attention merger inside it (after block insert_layer_id) and an MLP merger: "
    "16x fewer tokens than patches; Qwen3.5 hybrid language model (Gated-DeltaNet + full attention). "
    "<|image_pad|> tokens between <image>/</image>, led by <image_id>i</image_id>. Image-only processor",
)
MINICPMV4_7 = _vlm(
    "minicpmv4_7",
    ("minicpmv4_7",),
    _LM,
    "model.vision_tower",
    "model.merger",
    ("image_token_id",),
    P.minicpmv4_7_processor,
    "MiniCPMV4_7Processor",
    "the MiniCPM-V 4.6 layout; 4.7 adds canvas M-RoPE (3D positions pinned by the <image>/</image> markers) and "
    "returns mm_token_type_ids. Image-only processor",
)

QWEN2_5_OMNI_THINKER = _vlm(
    "qwen2_5_omni_thinker",
    ("qwen2_5_omni_thinker",),
    _LM,
    "model.visual",
    "model.visual.merger",
    ("image_token_index",),
    P.qwen2_5_omni_processor,
    "Qwen2_5OmniProcessor",
    "the text-generating part of Qwen2.5-Omni: Qwen2.5-VL-style vision (windowed tower, 3D positions) and an "
    "audio tower (unused here); <|IMAGE|> between <|vision_bos|>/<|vision_eos|>. transformers maps no processor "
    "to the thinker: cotscope uses Qwen2_5OmniProcessor without its video processor and audio feature extractor",
)

QWEN3_OMNI_MOE_THINKER = _vlm(
    "qwen3_omni_moe_thinker",
    ("qwen3_omni_moe_thinker",),
    _LM,
    "model.visual",
    "model.visual.merger",
    ("image_token_id",),
    P.qwen3_omni_moe_processor,
    "Qwen3OmniMoeProcessor",
    "the text-generating part of Qwen3-Omni: Qwen3-VL-style vision with DeepStack (features added after the first "
    "blocks; block outputs are taken before that addition), an audio tower (unused here) and a mixture-of-experts "
    "language model. transformers maps no processor to the thinker: cotscope uses Qwen3OmniMoeProcessor without "
    "its video processor and audio feature extractor",
)

COSMOS3_OMNI = _vlm(
    "cosmos3_omni",
    ("cosmos3_omni",),
    _LM,
    "model.visual",
    "model.visual.merger",
    ("image_token_id",),
    P.qwen3_vl_processor,
    "Qwen3VLProcessor",
    "the understanding path of Cosmos3 Omni: Qwen3-VL's model class with its own config (generation heads of the "
    "unified checkpoint are dropped on load). transformers defines no processor for it; cotscope uses the "
    "image-only Qwen3-VL processor on the Qwen2-VL image processor transformers maps to it",
)

QWEN3_VL_MOE = _vlm(
    "qwen3_vl_moe",
    ("qwen3_vl_moe",),
    _LM,
    "model.visual",
    "model.visual.merger",
    ("image_token_id",),
    P.qwen3_vl_processor,
    "Qwen3VLProcessor",
    "Qwen3-VL (DeepStack, 3D positions) with a mixture-of-experts language model. transformers maps no image "
    "processor to this model type (checkpoints name the Qwen2-VL one); cotscope uses the image-only Qwen3-VL "
    "processor on the PIL Qwen2-VL image processor",
)
GLM4V_MOE = _vlm(
    "glm4v_moe",
    ("glm4v_moe",),
    _LM,
    "model.visual",
    "model.visual.merger",
    ("image_token_id",),
    P.glm4v_processor,
    "Glm4vProcessor",
    "GLM-4.5V: the GLM-4V layout with a mixture-of-experts language model (shared expert, first block dense). "
    "transformers maps no image processor to this model type; cotscope uses the image-only GLM-4V processor on the "
    "PIL GLM-4V image processor",
)

COHERE_COMPASS = _vlm(
    "cohere_compass",
    ("cohere_compass",),
    _LM,
    "model.visual",
    "model.visual.merger",
    ("image_token_id",),
    P.cohere_compass_processor,
    "CohereCompassProcessor",
    "Qwen3-VL-style vision (DeepStack, 3D positions) with a Cohere language model; <|IMAGE_PAD|> between "
    "<|VISION_START|>/<|VISION_END|>. Its default config does not build (no rope settings for its layer types); "
    "explicit configs do. Image-only processor",
)

DEEPSEEK_OCR2 = _vlm(
    "deepseek_ocr2",
    ("deepseek_ocr2",),
    _LM,
    "model.vision_tower",
    "model.multi_modal_projector",
    ("image_token_id",),
    P.deepseek_ocr2_processor,
    "DeepseekOcr2Processor",
    "SAM tower whose patches are read by learned queries of a causal-LM-style vision encoder (144 or 256 queries per "
    "view), then a view separator; mixture-of-experts language model. Processor called with crop_to_patches=False "
    "(global view only; the stock call default adds 2-6 local tiles). Its default config does not build "
    "(mlp_layer_types unset); explicit configs do",
    processor_kwargs={"crop_to_patches": False},
)

GRANITE4_VISION = _vlm(
    "granite4_vision",
    ("granite4_vision",),
    _LM,
    "model.vision_tower",
    "model.layerwise_projectors",
    ("image_token_index",),
    P.granite4_vision_processor,
    "Granite4VisionProcessor",
    "LLaVA-NeXT anyres tiles; windowed Q-Former projectors downsample several vision layers and add them to the "
    "image positions of the input of chosen language-model blocks (deepstack_layer_map, spatial_target_layers); block "
    "outputs, which cotscope stores and HF returns, are taken before the next block's addition. Its default config "
    "does not build; explicit ones do",
)

VLM_ADAPTERS = (
    LLAVA,
    LLAVA_NEXT,
    LLAVA_ONEVISION,
    QWEN2_VL,
    QWEN2_5_VL,
    IDEFICS2,
    IDEFICS3,
    SMOLVLM,
    GEMMA3,
    INTERNVL,
    PALIGEMMA,
    MISTRAL3,
    CHAMELEON,
    MLLAMA,
    VIPLLAVA,
    DEEPSEEK_VL,
    LIGHTON_OCR,
    AYA_VISION,
    QWEN3_VL,
    GLM4V,
    JANUS,
    OVIS2,
    LLAVA_NEXT_VIDEO,
    QWEN3_5,
    GLM46V,
    EXAONE4_5,
    HYPERCLOVAX_VISION_V2,
    LFM3_VL,
    SHIELDGEMMA2,
    GOT_OCR2,
    PP_CHART2TABLE,
    GEMMA4,
    QWEN3_5_MOE,
    VIDEO_LLAVA,
    IDEFICS,
    BLIP2,
    INSTRUCTBLIP,
    FUYU,
    ARIA,
    PADDLEOCR_VL,
    GRANITE_DOCLING,
    DEEPSEEK_VL_HYBRID,
    COSMOS3_EDGE,
    VIDEO_LLAMA_3,
    ERNIE4_5_VL_MOE,
    GLMGA,
    GLM_OCR,
    MISTRAL_LARGE4,
    QIANFAN_OCR,
    DOTS3_NOTE,
    MINICPMV4_6,
    MINICPMV4_7,
    QWEN2_5_OMNI_THINKER,
    QWEN3_OMNI_MOE_THINKER,
    COSMOS3_OMNI,
    QWEN3_VL_MOE,
    GLM4V_MOE,
    COHERE_COMPASS,
    DEEPSEEK_OCR2,
    GRANITE4_VISION,
)
