"""Shared fixtures: the real embedded SmolLM2, loaded once per session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def smollm2_path():
    from cotscope.probes.models.embedded import smollm2_dir

    return smollm2_dir()


@pytest.fixture(scope="session")
def smollm2(smollm2_path):
    """The real embedded LLM as a LoadedModel (shared: do not modify its weights)."""
    import torch

    from cotscope.probes.models.loading import load_model

    torch.manual_seed(0)
    return load_model("embedded:smollm2", device="cpu", dtype="float32")
