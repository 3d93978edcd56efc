"""Exporters/importers: llama.cpp GGUF control vectors, repeng, plain arrays. Peer tools are the oracles:
the ``gguf`` reader checks llama.cpp's loader rules and ``repeng.ControlVector`` reads/writes real files."""

import json
import re

import gguf
import numpy as np
import pytest

from cotscope.analyses.artifacts import UNKNOWN, DirectionFileError, DirectionMeta, DirectionSet
from cotscope.analyses.export import (
    TargetModel,
    export_gguf_cv,
    export_npz,
    export_repeng_cv,
    export_safetensors_arrays,
    from_repeng,
    import_arrays,
    import_gguf_cv,
    import_repeng_cv,
    resolve_target,
    sidecar_path,
    to_repeng,
)

H, N = 576, 30  # SmolLM2-135M


@pytest.fixture(scope="module")
def repeng():
    if not hasattr(np, "float_"):
        np.float_ = np.float64  # repeng 0.4.0 names np.float_, removed in numpy 2 (API-NOTES §6); test-only patch
    return pytest.importorskip("repeng")


def make_ds(layers=(1, 5, 12, 29), hidden=H, n_layers=N, seed=0):
    rng = np.random.default_rng(seed)
    meta = DirectionMeta(
        model_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        model_revision="abc123",
        model_type="llama",
        n_layers=n_layers,
        token_rule="last_prompt",
        pairing="cue",
        method="mean_diff",
        sign="cot_positive",
        stimulus_hash="deadbeef",
        n_pairs=64,
    )
    return DirectionSet({l: rng.standard_normal(hidden).astype(np.float32) for l in layers}, meta)


def assert_same_arrays(a: DirectionSet, b: DirectionSet):
    assert a.layers == b.layers
    for l in a.layers:
        assert b[l].dtype == np.float32
        assert np.array_equal(a[l], b[l]), l


def write_gguf(path, tensors, arch="controlvector", kv=None):
    """A GGUF written straight with the gguf package (as llama.cpp's generator or another tool would)."""
    w = gguf.GGUFWriter(str(path), arch or "x")
    if arch is None:
        w.kv_data[0].pop("general.architecture")  # GGUFWriter always adds it; a file without the key
    for k, v in (kv or {}).items():
        w.add_string(k, v)
    for name, arr in tensors.items():
        w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


# ---------------------------------------------------------------- llama.cpp GGUF


def test_gguf_round_trip_identical_arrays_and_provenance(tmp_path):
    ds = make_ds()
    p = export_gguf_cv(ds, tmp_path / "cot.gguf", target="embedded:smollm2")
    back = import_gguf_cv(p)
    assert_same_arrays(ds, back)
    assert back.meta == ds.meta  # full provenance travels inside the GGUF


def test_gguf_passes_llamacpp_loader_rules(tmp_path):
    """Every rule of llama.cpp's common_control_vector_load_one + llama_adapter_cvec, checked with the gguf reader."""
    ds = make_ds()
    p = export_gguf_cv(ds, tmp_path / "cot.gguf", target="embedded:smollm2")
    r = gguf.GGUFReader(str(p))
    assert r.get_field("general.architecture").contents() == "controlvector"
    assert r.get_field("controlvector.model_hint").contents() == "llama"
    assert r.get_field("controlvector.layer_count").contents() == len(ds.layers)
    assert len(r.tensors) == len(ds.layers)
    seen = set()
    for t in r.tensors:
        m = re.fullmatch(r"direction\.(\d+)", t.name)
        assert m, t.name  # name must parse as direction.<int>
        k = int(m.group(1))
        assert 1 <= k < N  # 0 rejected; tensors exist for 1..n_layer-1 only
        assert t.tensor_type == gguf.GGMLQuantizationType.F32  # non-F32 rejected
        assert len(t.shape) == 1 and int(t.shape[0]) == H  # 1-D, n_embd must equal the model's
        assert t.n_elements == H
        assert np.array_equal(np.asarray(t.data), ds[k])  # direction.k == cotscope layer k
        seen.add(k)
    assert seen == set(ds.layers)
    prov = json.loads(r.get_field("cotscope.provenance").contents())
    assert prov["model_id"] == ds.meta.model_id and prov["layer_convention"] == "block_output"


def test_gguf_export_refuses_block0(tmp_path):
    ds = make_ds(layers=(0, 3))
    with pytest.raises(DirectionFileError, match=r"layer 0.*direction\.0.*select\(\[3\]\)"):
        export_gguf_cv(ds, tmp_path / "x.gguf", target="embedded:smollm2")
    assert list(tmp_path.iterdir()) == []  # nothing (not even a temp file) left behind


def test_gguf_export_checks_target_fit(tmp_path):
    with pytest.raises(DirectionFileError, match="hidden-size mismatch.*64 dims.*576"):
        export_gguf_cv(make_ds(hidden=64), tmp_path / "x.gguf", target="embedded:smollm2")
    small = TargetModel("tiny-llama", "llama", H, 24)
    with pytest.raises(DirectionFileError, match=r"\[29\] are out of range for target model 'tiny-llama'.*0\.\.23"):
        export_gguf_cv(make_ds(), tmp_path / "x.gguf", target=small)
    with pytest.raises(DirectionFileError, match="layer-count mismatch.*30.*24"):
        export_gguf_cv(make_ds(layers=(1, 5)), tmp_path / "x.gguf", target=small)
    with pytest.raises(DirectionFileError, match="unknown target model 'no-such-model'"):
        export_gguf_cv(make_ds(), tmp_path / "x.gguf", target="no-such-model")
    assert not (tmp_path / "x.gguf").exists()


def test_target_from_config_dict_and_folder(tmp_path):
    cfg = {"model_type": "llama", "hidden_size": H, "num_hidden_layers": N}
    assert resolve_target(cfg) == TargetModel("llama", "llama", H, N)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llava", "text_config": cfg}))
    t = resolve_target(tmp_path)
    assert (t.model_type, t.hidden_size, t.n_layers) == ("llava", H, N)
    export_gguf_cv(make_ds(), tmp_path / "ok.gguf", target=tmp_path)
    assert gguf.GGUFReader(str(tmp_path / "ok.gguf")).get_field("controlvector.model_hint").contents() == "llava"
    with pytest.raises(DirectionFileError, match="no integer hidden_size"):
        resolve_target({"model_type": "llama"})


def test_import_foreign_gguf_marks_provenance_unknown(tmp_path):
    rng = np.random.default_rng(1)
    vecs = {k: rng.standard_normal(H).astype(np.float32) for k in (2, 9)}
    p = write_gguf(
        tmp_path / "foreign.gguf",
        {f"direction.{k}": v for k, v in vecs.items()},
        kv={"controlvector.model_hint": "llama"},
    )
    ds = import_gguf_cv(p, n_layers=N)
    assert ds.layers == [2, 9] and all(np.array_equal(ds[k], vecs[k]) for k in vecs)
    m = ds.meta
    assert m.model_type == "llama" and m.n_layers == N and m.hidden_size == H
    for field in (
        "model_id",
        "model_revision",
        "token_rule",
        "pairing",
        "sign",
        "stimulus_hash",
        "normalisation",
        "created",
    ):
        assert getattr(m, field) == UNKNOWN, field
    assert m.method == "imported" and m.extra["imported_from"].startswith("llama.cpp")
    with pytest.raises(DirectionFileError, match="1..7"):
        import_gguf_cv(p, n_layers=8)  # direction.9 does not exist in an 8-block model
    with pytest.raises(DirectionFileError, match="hidden-size mismatch"):
        import_gguf_cv(p, expect_hidden_size=960)


def test_import_rejects_a_model_gguf():
    from cotscope.probes.models.embedded import find_smollm2_gguf

    with pytest.raises(DirectionFileError, match="general.architecture='llama', not a control vector"):
        import_gguf_cv(find_smollm2_gguf())


@pytest.mark.parametrize(
    "tensors,kv_arch,msg",
    [
        ({"direction.3": np.ones(H, np.float16)}, "controlvector", "F16.*must be F32"),
        ({"direction.3": np.ones(H, np.float64)}, "controlvector", "F64.*must be F32"),
        ({"direction.3": np.ones((4, H), np.float32)}, "controlvector", r"shape \[4, 576\].*1-D"),
        ({"direction.0": np.ones(H, np.float32)}, "controlvector", r"direction\.0 is invalid"),
        ({"direction.x": np.ones(H, np.float32)}, "controlvector", "not named direction"),
        ({"direction.1": np.ones(H, np.float32), "direction.2": np.ones(8, np.float32)}, "controlvector", "8 elements"),
        ({"blk.0.attn_q.weight": np.ones(H, np.float32)}, None, "no general.architecture"),
    ],
)
def test_import_rejects_bad_control_vectors(tmp_path, tensors, kv_arch, msg):
    p = tmp_path / "bad.gguf"
    write_gguf(p, tensors, arch=kv_arch)
    with pytest.raises(DirectionFileError, match=msg):
        import_gguf_cv(p)


def test_import_rejects_non_gguf_and_missing(tmp_path):
    p = tmp_path / "junk.gguf"
    p.write_bytes(b"not a gguf at all" * 10)
    with pytest.raises(DirectionFileError, match="not a readable GGUF"):
        import_gguf_cv(p)
    with pytest.raises(DirectionFileError, match="does not exist"):
        import_gguf_cv(tmp_path / "nope.gguf")


# ---------------------------------------------------------------- repeng


def test_repeng_reads_exported_file(tmp_path, repeng):
    ds = make_ds()
    p = export_repeng_cv(ds, tmp_path / "cot.gguf", target="embedded:smollm2")
    cv = repeng.ControlVector.import_gguf(str(p))
    assert cv.model_type == "llama"
    assert sorted(cv.directions) == ds.layers
    for l in ds.layers:
        assert np.array_equal(cv.directions[l], ds[l])
    back = from_repeng(cv, n_layers=N)  # cotscope -> repeng -> cotscope
    assert_same_arrays(ds, back)
    assert back.meta.model_type == "llama" and back.meta.method == "imported"
    assert_same_arrays(ds, import_repeng_cv(p))  # and straight from the file


def test_repeng_written_file_imports(tmp_path, repeng):
    ds = make_ds(layers=(0, 4, 20))
    cv = repeng.ControlVector(**to_repeng(ds))
    p = tmp_path / "from_repeng.gguf"
    cv.export_gguf(str(p))  # repeng's own writer
    back = import_repeng_cv(p, n_layers=N)
    assert_same_arrays(ds, back)
    assert back.meta.model_type == "llama" and back.meta.model_id == UNKNOWN
    with pytest.raises(DirectionFileError, match=r"direction\.0"):
        import_gguf_cv(p)  # llama.cpp would skip this file: layer 0
    only_ok = repeng.ControlVector(**to_repeng(ds.select([4, 20])))
    only_ok.export_gguf(str(tmp_path / "ok.gguf"))
    assert import_gguf_cv(tmp_path / "ok.gguf").layers == [4, 20]


def test_repeng_block0_needs_opt_in(tmp_path, repeng):
    ds = make_ds(layers=(0, 2))
    with pytest.raises(DirectionFileError, match="layer 0"):
        export_repeng_cv(ds, tmp_path / "a.gguf")
    p = export_repeng_cv(ds, tmp_path / "a.gguf", allow_block0=True)
    assert sorted(repeng.ControlVector.import_gguf(str(p)).directions) == [0, 2]
    assert_same_arrays(ds, import_repeng_cv(p))


def test_from_repeng_negative_layers_and_bad_input():
    class CV:  # the two fields repeng.ControlVector has
        model_type = "llama"
        directions = {-1: np.ones(H), 3: np.zeros(H)}

    ds = from_repeng(CV(), n_layers=N)
    assert ds.layers == [3, 29] and ds[29].dtype == np.float32
    with pytest.raises(DirectionFileError, match="pass n_layers"):
        from_repeng(CV())
    with pytest.raises(DirectionFileError, match="non-empty .directions"):
        from_repeng(object())


# ---------------------------------------------------------------- plain arrays


@pytest.mark.parametrize("export,name", [(export_npz, "cot.npz"), (export_safetensors_arrays, "cot.safetensors")])
def test_arrays_round_trip(tmp_path, export, name):
    ds = make_ds()
    p = export(ds, tmp_path / name, target="embedded:smollm2")
    assert sidecar_path(p).is_file() and p.is_file()
    side = json.loads(sidecar_path(p).read_text())
    assert side["layers"] == ds.layers and side["layer_convention"] == "block_output"
    back = import_arrays(p)
    assert_same_arrays(ds, back)
    assert back.meta == ds.meta
    sidecar_path(p).unlink()
    bare = import_arrays(p)  # arrays still self-describe their layers
    assert_same_arrays(ds, bare)
    if p.suffix == ".safetensors":
        assert bare.meta == ds.meta  # provenance also in the safetensors header
    else:
        assert bare.meta.model_id == UNKNOWN and bare.meta.method == "imported"


def test_plain_npz_layout(tmp_path):
    ds = make_ds()
    z = np.load(export_npz(ds, tmp_path / "cot.npz"))
    assert set(z.files) == {"directions", "layers"}
    assert z["directions"].shape == (4, H) and z["directions"].dtype == np.float32
    assert np.array_equal(z["directions"][list(z["layers"]).index(12)], ds[12])


def test_import_foreign_arrays_with_conventions(tmp_path):
    rng = np.random.default_rng(2)
    m = rng.standard_normal((3, H)).astype(np.float32)
    np.save(tmp_path / "m.npy", m)
    with pytest.raises(DirectionFileError, match="pass layers="):
        import_arrays(tmp_path / "m.npy")
    ds = import_arrays(tmp_path / "m.npy", layers=[-1, -2, -3], layer_convention="negative", n_layers=N)
    assert ds.layers == [27, 28, 29] and np.array_equal(ds[29], m[0])
    assert ds.meta.extra["source_layer_convention"] == "negative" and ds.meta.n_layers == N
    ds = import_arrays(tmp_path / "m.npy", layers=[1, 2, 30], layer_convention="hf_hidden", n_layers=N)
    assert ds.layers == [0, 1, 29]
    with pytest.raises(DirectionFileError, match="needs the model depth"):
        import_arrays(tmp_path / "m.npy", layers=[1, 2, 3], layer_convention="hf_hidden")
    with pytest.raises(DirectionFileError, match="3 direction rows but 2"):
        import_arrays(tmp_path / "m.npy", layers=[1, 2])
    np.savez(tmp_path / "per.npz", **{"layer_4": m[0], "layer_7": m[1]})
    ds = import_arrays(tmp_path / "per.npz")
    assert ds.layers == [4, 7] and np.array_equal(ds[7], m[1])
    with pytest.raises(DirectionFileError, match="already names its layers"):
        import_arrays(tmp_path / "per.npz", layers=[1, 2])
    with pytest.raises(DirectionFileError, match="unknown layer_convention"):
        import_arrays(tmp_path / "m.npy", layers=[1, 2, 3], layer_convention="hf")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(DirectionFileError, match="not a readable"):
        import_arrays(tmp_path / "junk.npz")


def test_import_accepts_direction_tensors_without_metadata(tmp_path):
    """llama.cpp's loader reads no metadata at all; a bare file of valid direction tensors is a control vector."""
    v = np.linspace(-1, 1, H, dtype=np.float32)
    p = write_gguf(tmp_path / "bare.gguf", {"direction.7": v}, arch=None)
    ds = import_gguf_cv(p)
    assert ds.layers == [7] and np.array_equal(ds[7], v) and ds.meta.model_type == UNKNOWN


# ---------------------------------------------------------------- one entry point: export_direction / cotscope export
def test_export_direction_leaves_out_block0_for_control_vectors(tmp_path):
    from cotscope.analyses.export import export_direction

    src = make_ds(layers=(0, 1, 5, 29)).save(tmp_path / "d.safetensors")
    path, layers = export_direction(src, "gguf", tmp_path / "d.gguf", target="embedded:smollm2")
    assert layers == [1, 5, 29]
    assert_same_arrays(DirectionSet.load(src).select([1, 5, 29]), import_gguf_cv(path))
    path, layers = export_direction(src, "npz", tmp_path / "d.npz")  # arrays keep block 0
    assert layers == [0, 1, 5, 29] and import_arrays(path).layers == [0, 1, 5, 29]
    with pytest.raises(DirectionFileError, match="block 0"):
        export_direction(src, "gguf", tmp_path / "e.gguf", layers=[0, 1])
    with pytest.raises(DirectionFileError, match=r"layers \[7\] are not in the direction file"):
        export_direction(src, "npz", tmp_path / "e.npz", layers=[7])
    with pytest.raises(ValueError, match="unknown export format"):
        export_direction(src, "onnx", tmp_path / "e.onnx")
    assert not (tmp_path / "e.gguf").exists() and not (tmp_path / "e.npz").exists()


@pytest.mark.parametrize("fmt,read", [("gguf", import_gguf_cv), ("npz", import_arrays)])
def test_export_direction_normalise_writes_unit_vectors_and_says_so(tmp_path, fmt, read):
    from cotscope.analyses.export import export_direction

    ds = make_ds()
    src = ds.save(tmp_path / "d.safetensors")
    raw = read(export_direction(src, fmt, tmp_path / f"raw.{fmt}")[0])
    unit = read(export_direction(src, fmt, tmp_path / f"unit.{fmt}", normalise=True)[0])
    assert raw.meta.normalisation == "none" and unit.meta.normalisation == "unit"
    assert_same_arrays(ds, raw)
    for l in ds.layers:
        n = float(np.linalg.norm(ds[l].astype(np.float64)))
        assert abs(np.linalg.norm(unit[l]) - 1) < 1e-6
        assert np.allclose(unit[l] * n, ds[l], rtol=0, atol=1e-5 * n)  # same direction, float32 rounding
        assert unit.meta.history[-1]["norms"][str(l)] == pytest.approx(n)  # the scale can be recovered
    if fmt == "gguf":
        kv = gguf.GGUFReader(str(tmp_path / "unit.gguf")).fields["cotscope.normalisation"].contents()
        assert kv == "unit"


def test_parse_layers():
    from cotscope.analyses.export import parse_layers

    assert parse_layers("1-3,8") == [1, 2, 3, 8] and parse_layers("") is None
    with pytest.raises(ValueError, match="1-29"):
        parse_layers("one")


def test_cli_export_and_its_error_message(tmp_path, capsys):
    from cotscope.cli import main

    src = make_ds(layers=(0, 3, 4)).save(tmp_path / "d.safetensors")
    assert main(["export", str(src), "--to", "repeng", "--out", str(tmp_path / "d.gguf")]) == 0
    assert "block 0 left out" in capsys.readouterr().out
    assert import_repeng_cv(tmp_path / "d.gguf").layers == [3, 4]
    assert main(["export", str(src), "--to", "gguf", "--out", str(tmp_path / "x.gguf"), "--layers", "0,3"]) == 2
    err = capsys.readouterr().err
    assert "block 0" in err and "Fix" in err and not (tmp_path / "x.gguf").exists()


def test_cli_export_normalise(tmp_path):
    from cotscope.cli import main

    src = make_ds(layers=(3, 4)).save(tmp_path / "d.safetensors")
    assert main(["export", str(src), "--to", "gguf", "--out", str(tmp_path / "u.gguf"), "--normalise"]) == 0
    u = import_gguf_cv(tmp_path / "u.gguf")
    assert u.meta.normalisation == "unit" and all(abs(np.linalg.norm(u[l]) - 1) < 1e-6 for l in u.layers)
