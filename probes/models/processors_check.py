"""Minimal prompt/image consistency check used by the collector (VLM engineers may extend it)."""
from __future__ import annotations

from typing import Any, Sequence


def check_prompts_and_images(loaded: Any, texts: Sequence[str], images: Sequence[Any]) -> None:
    try:
        from probes.models.processors import validate_batch  # richer checks when available
    except ImportError:
        validate_batch = None
    if validate_batch is not None:
        validate_batch(loaded, texts, images)
