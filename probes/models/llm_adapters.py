"""Adapters for plain decoder-only LLMs (Llama, Qwen2/3, Mistral, Gemma families, …)."""

from __future__ import annotations

from cotscope.probes.models.registry import ModelAdapter, register

LLAMA = register(
    ModelAdapter(
        family="llama",
        model_types=("llama",),
        layers_path="model.layers",
        final_norm_path="model.norm",
        notes="SmolLM2, Llama 2/3",
    )
)
QWEN2 = register(
    ModelAdapter(
        family="qwen2",
        model_types=("qwen2", "qwen3", "qwen2_moe", "qwen3_moe"),
        layers_path="model.layers",
        final_norm_path="model.norm",
    )
)
MISTRAL = register(
    ModelAdapter(
        family="mistral", model_types=("mistral", "mixtral"), layers_path="model.layers", final_norm_path="model.norm"
    )
)
GEMMA = register(
    ModelAdapter(
        family="gemma",
        model_types=("gemma", "gemma2", "gemma3_text"),
        layers_path="model.layers",
        final_norm_path="model.norm",
    )
)
PHI = register(
    ModelAdapter(family="phi3", model_types=("phi3",), layers_path="model.layers", final_norm_path="model.norm")
)
