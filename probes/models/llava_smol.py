"""LLaVA-SmolLM2: a LLaVA whose language model is exactly the embedded SmolLM2-135M-Instruct.

The stand-in VLM until the reference VLM exists: a tiny random CLIP tower (64 px, patch 16 → 16 image tokens)
and projector in front of SmolLM2's unchanged weights. The image placeholder reuses SmolLM2's unused
special token ``<empty_output>`` (id 16), so the vocabulary stays 49152 and text-only logits equal SmolLM2's
exactly (API-NOTES §4). The directory is built once per seed, atomically, and loads with
``load_model(dir)`` / ``AutoModelForImageTextToText`` + ``AutoProcessor`` offline.

>>> d = llava_smol_dir()      # first call ~10 s, then instant   # doctest: +SKIP
>>> lm = load_model(d)                         # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

from cotscope.analyses.atomic import atomic_dir
from cotscope.probes.models.embedded import GGUF_SHA256, cache_root, image_chat_template, smollm2_dir

IMAGE_TOKEN = "<empty_output>"
IMAGE_SIZE, PATCH = 64, 16
VISION = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4)
FORMAT_VERSION = 1
CHAT_TEMPLATE = image_chat_template(IMAGE_TOKEN)


def build_llava_smol(smol_dir: str | Path | None = None, seed: int = 0):
    """``(model, processor)`` in memory: random vision tower/projector for ``seed``, SmolLM2 language model."""
    import torch
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoTokenizer,
        CLIPVisionConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
    )

    from cotscope.probes.models.processors import llava_processor

    d = Path(smol_dir) if smol_dir is not None else smollm2_dir()
    tok = AutoTokenizer.from_pretrained(d)
    vocab = tok.get_vocab()
    if IMAGE_TOKEN not in vocab:
        raise ValueError(
            f"{IMAGE_TOKEN} is not a token of the tokenizer in {d}; LLaVA-SmolLM2 needs the SmolLM2 "
            "tokenizer (run `make setup` to restore the embedded model)."
        )
    proc = llava_processor(
        tok, image_size=IMAGE_SIZE, patch_size=PATCH, image_token=IMAGE_TOKEN, chat_template=CHAT_TEMPLATE
    )
    cfg = LlavaConfig(
        vision_config=CLIPVisionConfig(**VISION, image_size=IMAGE_SIZE, patch_size=PATCH),
        text_config=AutoConfig.from_pretrained(d),
        image_token_index=vocab[IMAGE_TOKEN],
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        image_seq_length=(IMAGE_SIZE // PATCH) ** 2,
    )
    smol = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlavaForConditionalGeneration(cfg).eval()
    model.model.language_model.load_state_dict(smol.model.state_dict(), strict=True)
    if model.lm_head.weight.data_ptr() != model.model.language_model.embed_tokens.weight.data_ptr():
        model.lm_head.weight.data.copy_(smol.lm_head.weight.data)
    return model, proc


def llava_smol_dir(cache_dir: str | Path | None = None, seed: int = 0) -> Path:
    """Directory of LLaVA-SmolLM2 for ``seed``, built on first use (atomic: temp dir + rename)."""
    root = Path(cache_dir) if cache_dir is not None else cache_root() / "models"
    target = root / f"llava-smollm2-{GGUF_SHA256[:12]}-s{seed}-v{FORMAT_VERSION}"
    if (target / "cotscope.json").is_file():
        return target
    model, proc = build_llava_smol(seed=seed)
    meta = {
        "name": "llava-smollm2",
        "seed": seed,
        "format_version": FORMAT_VERSION,
        "smollm2_gguf_sha256": GGUF_SHA256,
        "image_token": IMAGE_TOKEN,
        "image_size": IMAGE_SIZE,
        "patch_size": PATCH,
        "note": "random vision tower + projector; language model = SmolLM2-135M-Instruct exactly",
    }
    with atomic_dir(target, meta=meta) as tmp:
        model.save_pretrained(tmp)
        proc.save_pretrained(tmp)
    return target
