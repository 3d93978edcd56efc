"""Census of transformers' image-text-to-text families: which ones cotscope supports, and why the others are out.

For every ``model_type`` in ``MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES`` of the installed transformers, on the
``meta`` device (no weights allocated):

1. build the model class from its default config, offline (all families in one subprocess; one that crashes it
   is recorded as such and a new subprocess goes on with the rest);
2. look up its processor class and whether it, and a PIL image processor, exist without torchvision;
3. record whether cotscope has an adapter (and a tiny test model in tests/tiny_vlms.py).

Writes ``docs/vlm_census.json`` (atomically) and prints a summary. The compatibility table
(``scripts/compat_table.py``) lists the families that are not supported with the reason recorded here.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/vlm_family_census.py            # under a minute
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "vlm_census.json"

PROBE = r"""
import json, os, sys, warnings
os.environ["HF_HUB_OFFLINE"] = "1"
warnings.filterwarnings("ignore")
import torch, transformers
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES as M
from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES as PM
from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING_NAMES as IM


def one(mt):
    res = {"model_type": mt, "model_class": M[mt]}
    try:
        pname = PM.get(mt)
        res["processor_class"] = pname
        if pname:
            pc = getattr(transformers, pname, None)
            res["processor_backends"] = list(getattr(pc, "_backends", []) or []) if pc is not None else ["missing"]
            if pc is not None and type(pc).__name__ != "DummyObject":
                import inspect
                res["processor_wants_video"] = "video_processor" in inspect.signature(pc.__init__).parameters
        ims = IM.get(mt)
        res["pil_image_processor"] = ims.get("pil") if isinstance(ims, dict) else None
        res["image_processor_backends"] = sorted(ims) if isinstance(ims, dict) else []
        try:
            cfg = CONFIG_MAPPING[mt]()
        except Exception as e:
            res["build"] = f"config: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
            return res
        cls = getattr(transformers, M[mt], None)
        if cls is None or type(cls).__name__ == "DummyObject":
            res["build"] = f"model class needs {getattr(cls, '_backends', '?')}"
            return res
        res["is_encoder_decoder"] = bool(getattr(cfg, "is_encoder_decoder", False))
        with torch.device("meta"):
            m = cls(cfg)
        res["build"] = "ok"
        res["n_params_default_config"] = int(sum(p.numel() for p in m.parameters()))
    except Exception as e:
        msg = (str(e).strip().splitlines() or [""])[0]
        res["build"] = f"{type(e).__name__}: {msg[:200]}"
    return res


for mt in sys.argv[1:]:
    print("START" + mt, flush=True)
    print("CENSUS" + json.dumps(one(mt)), flush=True)
"""


def probe_all(types: list[str], timeout: int, bar) -> list[dict]:
    """Probe ``types`` in as few subprocesses as possible: one runs them in turn; if it dies (or hangs past
    ``timeout`` seconds on one family), that family is recorded as crashed and a new process takes the rest."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done: dict[str, dict] = {}
    todo = list(types)
    while todo:
        p = subprocess.Popen(
            [sys.executable, "-c", PROBE, *todo], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        current = None
        try:
            out, err = p.communicate(timeout=timeout * len(todo))
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
        for line in out.splitlines():
            if line.startswith("START"):
                current = line[5:]
            elif line.startswith("CENSUS"):
                r = json.loads(line[6:])
                done[r["model_type"]] = r
                bar.update(1)
                current = None
        if current is not None and current not in done:
            last = (err.strip().splitlines() or ["no output"])[-1]
            done[current] = {"model_type": current, "build": f"crashed the process: {last[:200]}"}
            bar.update(1)
        todo = [t for t in types if t not in done]
    return [done[t] for t in types]


CATEGORIES = (
    "supported",
    "not supported",
    "not yet adapted",
    "needs torchvision",
    "default config does not build offline",
    "encoder-decoder",
    "no processor registered",
)


VERDICTS = {
    "glm5_next": "not supported: hyper-connections: between blocks the residual stream is hc_mult parallel streams "
    "(block 0 output measured [1, 5, 4, 4096] for 5 tokens, default config on the meta device; hc_head collapses "
    "them to [1, 5, 4096] before the final norm), which cotscope's one [tokens, hidden] stream per layer (storage, "
    "steering, final-norm check) does not describe",
    "hy_v4_vl": "not supported: hyper-connections: between blocks the residual stream is hc_mult parallel streams "
    "(block 0 output measured [1, 5, 4, 6144] for 5 tokens, default config on the meta device), which cotscope's "
    "one [tokens, hidden] stream per layer does not describe",
    "git": "not supported: the image features are prepended inside the model, not placed on tokens: hidden states "
    "hold image + text positions (measured 23 positions for 6 input ids on a tiny 32-px / 8-px model), so "
    "cotscope's positions, which index input_ids, do not line up",
    "blip": "not supported: BERT-style text decoder with absolute position embeddings counted from the first "
    "position and no position-ids input: three left pads move the real tokens' last-layer states by 3.4 (scale 2.6, "
    "measured on a tiny model), so left-padded batches are wrong; images enter by cross-attention",
    "mistral4": "not supported: text-only: the image-text-to-text mapping lists Mistral4ForCausalLM, which takes no "
    "image input (no pixel_values argument, no vision tower)",
    "kosmos-2": "not supported: Kosmos2Processor exists but is not mapped to 'kosmos-2'; its image features replace a "
    "run of ordinary token ids marked by image_embeds_position_mask (measured: 64 image positions holding 64 "
    "distinct ids, 1..64), so cotscope's one-image-token-id mask cannot find them",
    "kosmos-2.5": "not supported: Kosmos2_5Processor exists but is not mapped to 'kosmos-2.5'; its image positions "
    "are <s> tokens (the BOS token) marked by image_embeds_position_mask (processing_kosmos2_5.py), so an "
    "image-token-id mask also catches the BOS",
    "hunyuan_vl": "not supported: batching changes the outputs in transformers 5.24: with two images of different "
    "sizes in one batch, the second row's block outputs differ from the same row run alone from block 1 on (2.4e-2 "
    "at the last block; embeddings, image features and the first row agree; tiny explicit config, since the default "
    "one does not build: rope alpha unset), so cotscope's batched collection would be silently wrong",
    "qwen4_exp": "not supported: hyper-connections (hc_count residual streams mixed in every block, "
    "modeling_qwen4_exp.py), which cotscope's one [tokens, hidden] stream per layer does not describe; its default "
    "config does not build offline either (TypeError: unsupported operand type(s) for //: 'NoneType' and "
    "'NoneType')",
    "diffusion_gemma": "not supported: block diffusion, not left-to-right decoding: DiffusionGemmaForBlockDiffusion "
    "denoises a canvas of tokens with a bidirectional decoder conditioned on a prompt cache "
    "(modeling_diffusion_gemma.py), so there is no causal stream over prompt + answer to collect or steer; its "
    "default config does not build offline either",
    "emu3": "not supported: batching changes the image tokens: images of different sizes are padded to one size "
    "before the VQ-VAE, whose codes then differ from the same image alone (13 of 54 and 20 of 55 codes, tiny explicit "
    "config, 64x48 and 80x40 images), so cotscope's batched collection would differ from per-item; its default "
    "config does not build either (no vocabulary map)",
    "evolla": "not supported: not an image model: EvollaForProteinText2Text reads protein sequences (EvollaProcessor "
    "pairs a protein tokenizer with a text tokenizer; no image input)",
    "instructblipvideo": "needs torchvision: InstructBlipVideoProcessor has a video processor (torchvision) and no "
    "image processor; the model reads stacks of frames",
}
"""Measured reasons for families looked at and not supported (each says what was measured or read)."""


def verdict(r: dict, supported: set[str], image_only: frozenset[str] = frozenset()) -> str:
    """``"<category>: <reason>"`` (category one of :data:`CATEGORIES`), or ``"supported"``."""
    if r["model_type"] in supported:
        return "supported"
    if r["model_type"] in VERDICTS:
        return VERDICTS[r["model_type"]]
    if "timm" in str(r.get("build")):
        return (
            "needs torchvision: its vision tower is a timm model (TimmWrapperModel) and timm requires torchvision "
            "(pip resolves torchvision as a timm dependency)"
        )
    if r.get("build") != "ok":
        return f"default config does not build offline: {r.get('build')}"
    if r.get("is_encoder_decoder"):
        return (
            "encoder-decoder: the prompt is read by a bidirectional encoder and the answer by a decoder that "
            "cross-attends to it (config.is_encoder_decoder); cotscope's collection and steering assume one causal "
            "stack over prompt + answer"
        )
    backends = r.get("processor_backends") or []
    if not r.get("processor_class"):
        return "no processor registered: transformers maps no processor class to this model type"
    if backends and r["processor_class"] in image_only:
        return (
            f"not yet adapted: builds offline; {r['processor_class']} is gated on {', '.join(backends)} but cotscope "
            "has an image-only variant of it; needs a tiny builder and an adapter"
        )
    if backends:
        return f"needs torchvision: {r['processor_class']} is gated on {', '.join(backends)}"
    if not r.get("pil_image_processor"):
        mapped = r.get("image_processor_backends")
        if mapped:
            return f"needs torchvision: its image processor is mapped for {', '.join(mapped)} only (no PIL variant)"
        return "needs torchvision: transformers maps no image processor to this model type"
    if r.get("processor_wants_video"):
        return (
            f"not yet adapted: builds offline; {r['processor_class']} wants a torchvision video processor, so it "
            "needs an image-only variant (as Qwen3-VL / GLM-4V have), a tiny builder and an adapter"
        )
    return "not yet adapted: builds offline; needs a tiny builder and an adapter"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--timeout", type=int, default=120)
    ap.add_argument("--only", nargs="*", help="model types to probe (default: all)")
    args = ap.parse_args(argv)
    import transformers
    from tqdm import tqdm
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES as M

    sys.path.insert(0, str(ROOT / "tests"))
    from cotscope.analyses.io.atomic import write_text_atomic
    from cotscope.probes.models.registry import supported_model_types

    supported = set(supported_model_types())
    from cotscope.probes.models.processors import image_only_variants

    image_only = frozenset(image_only_variants())
    types = args.only or sorted(M)
    with tqdm(total=len(types), desc="census", unit="family") as bar:
        rows = probe_all(types, args.timeout, bar)
    for r in rows:
        r["verdict"] = verdict(r, supported, image_only)
    doc = {
        "transformers": transformers.__version__,
        "mapping": "MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES",
        "rows": rows,
    }
    write_text_atomic(args.out, json.dumps(doc, indent=1) + "\n")
    for cat in CATEGORIES:
        names = [r["model_type"] for r in rows if r["verdict"].split(":")[0] == cat]
        print(f"{len(names):4d}  {cat}: {', '.join(names)}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
