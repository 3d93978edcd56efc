import json

import numpy as np
import pytest

from cotscope.analyses.artifacts import DirectionFileError, DirectionMeta, DirectionSet


def make(d=8, layers=(1, 3)):
    rng = np.random.default_rng(0)
    return DirectionSet({l: rng.normal(size=d).astype(np.float32) for l in layers},
                        DirectionMeta(model_id="toy", hidden_size=d, n_layers=4, method="mean_diff", pairing="cue",
                                      token_rule="last_prompt", stimulus_hash="abc"))


def test_round_trip_keeps_vectors_and_provenance(tmp_path):
    ds = make()
    p = ds.save(tmp_path / "d.safetensors")
    back = DirectionSet.load(p, expect_hidden_size=8, expect_n_layers=4)
    assert back.layers == [1, 3]
    assert all(np.array_equal(back[l], ds[l]) for l in ds.layers)
    assert back.meta.model_id == "toy" and back.meta.layer_convention == "block_output"
    assert back.meta.stimulus_hash == "abc" and "numpy" in back.meta.library


def test_hidden_size_mismatch_names_the_fix(tmp_path):
    p = make().save(tmp_path / "d.safetensors")
    with pytest.raises(DirectionFileError, match="hidden-size mismatch.*resample"):
        DirectionSet.load(p, expect_hidden_size=576)
    with pytest.raises(DirectionFileError, match="out of range"):
        DirectionSet.load(p, expect_hidden_size=8, expect_n_layers=2)


def test_truncated_or_foreign_files_are_refused(tmp_path):
    p = make().save(tmp_path / "d.safetensors")
    data = p.read_bytes()
    bad = tmp_path / "trunc.safetensors"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(DirectionFileError, match="truncated or corrupt"):
        DirectionSet.load(bad)
    from safetensors.numpy import save_file

    save_file({"x": np.zeros(3, np.float32)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(DirectionFileError, match="not a cotscope direction file"):
        DirectionSet.load(tmp_path / "other.safetensors")
    with pytest.raises(DirectionFileError, match="does not exist"):
        DirectionSet.load(tmp_path / "missing.safetensors")


def test_invalid_vectors_rejected():
    with pytest.raises(DirectionFileError, match="NaN"):
        DirectionSet({0: np.array([np.nan, 1.0])}, DirectionMeta())
    with pytest.raises(DirectionFileError, match="different hidden sizes"):
        DirectionSet({0: np.ones(3), 1: np.ones(4)}, DirectionMeta())


def test_failed_save_leaves_previous_file_intact(tmp_path, monkeypatch):
    p = make().save(tmp_path / "d.safetensors")
    before = p.read_bytes()
    import safetensors.numpy as stn

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(stn, "save_file", boom)
    with pytest.raises(OSError):
        make(layers=(2,)).save(p)
    assert p.read_bytes() == before
    assert [f.name for f in tmp_path.iterdir()] == ["d.safetensors"]
