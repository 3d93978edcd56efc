"""Stage ``reconstruction``: per-layer probes from the residual stream back to the VLM's connector outputs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from cotscope.probes.vision_latents import chat_prompt, find_connector, run_reconstruction_analysis

__all__ = ["reconstruction_stage", "run_reconstruction_demo"]


def run_reconstruction_demo(
    vlm_dir: str | Path,
    out_dir: str | Path,
    *,
    n_images: int = 64,
    seed: int = 0,
    n_tokens: int = 32,
    kinds: Sequence[str] = ("expression", "counting", "bars"),
    connector_path: str | None = None,
) -> dict:
    """The reconstruction probe on a saved VLM and the bundled visual problems (for ``make demo``).

    Loads ``vlm_dir`` with the Auto classes (offline), renders ``n_images`` stimuli with
    :func:`probes.stimuli.visual.generate_visual_items`, asks each item's direct question, and runs
    :func:`run_reconstruction_analysis` into ``out_dir``. Returns its summary numbers.
    """
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from cotscope.probes.stimuli.visual import generate_visual_items

    model = AutoModelForImageTextToText.from_pretrained(vlm_dir, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(vlm_dir)
    items = generate_visual_items(n_images, seed=seed, kinds=kinds)
    prompts = [chat_prompt(processor, it.direct_prompt) for it in items]
    cp = connector_path or find_connector(model)
    return run_reconstruction_analysis(
        model, processor, [it.image for it in items], prompts, cp, out_dir, n_tokens=n_tokens, seed=seed
    )


def reconstruction_stage(
    run_dir: str | Path,
    summary: dict | None = None,
    *,
    vlm_dir: str | Path | None = None,
    n_images: int = 64,
    n_tokens: int = 32,
    seed: int = 0,
) -> dict:
    """``make demo`` stage: the reconstruction probe on the reference VLM (results in ``RUN/reconstruction``).

    Returns summary numbers plus ``title``/``report`` (markdown) for ``report.md``; figures come
    from ``python -m cotscope.figures RUN``.
    """
    if vlm_dir is None:
        from cotscope.probes.models.reference_vlm import reference_vlm_dir

        vlm_dir = reference_vlm_dir()
    s = run_reconstruction_demo(
        vlm_dir, Path(run_dir) / "reconstruction", n_images=n_images, n_tokens=n_tokens, seed=seed
    )
    nan = float("nan")
    report = (
        f"Per-layer ridge probes from the residual stream (token rule `{s['recon_token_rule']}`) to `{Path(vlm_dir).name}`'s "
        f"own connector outputs pooled to {s['recon_n_tokens']} tokens; {s['recon_n_train']} training and "
        f"{s['recon_n_test']} held-out images. Best layer {s['recon_best_layer']}: R² {s['recon_best_r2']:.3f} "
        f"(shuffled image/hidden pairing {s.get('recon_best_r2_shuffled', nan):.3f}), centred cosine "
        f"{s['recon_best_cos_centered']:.3f} (shuffled {s.get('recon_best_cos_centered_shuffled', nan):.3f}), raw cosine "
        f"{s['recon_best_cos']:.3f} (shuffled {s.get('recon_best_cos_shuffled', nan):.3f}). R² is the headline: raw cosine "
        "is high even for a useless probe (connector outputs share a large mean), and the centred cosine is "
        "scale-free, so a shuffled probe's tiny predictions can still point along the few directions that "
        "separate image kinds."
    )
    return {**s, "title": "Vision-latent reconstruction probe", "report": report}
