"""Model loading (embedded defaults, local paths, hub names) and per-family adapters."""

from cotscope.probes.models import llm_adapters as _llm  # noqa: F401  (registers adapters)

try:  # VLM families register themselves when their module exists
    from cotscope.probes.models import vlm_adapters as _vlm  # noqa: F401
except ImportError as _e:  # pragma: no cover - only while the module is absent
    if "vlm_adapters" not in str(_e):
        raise
from cotscope.probes.models.registry import (
    ModelAdapter,
    NoImageTokensError,
    UnsupportedModelError,
    adapter_for,
    registered_families,
)

__all__ = ["ModelAdapter", "NoImageTokensError", "UnsupportedModelError", "adapter_for", "registered_families"]
