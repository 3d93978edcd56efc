import numpy as np
import pytest

from cotscope.analyses.artifacts import DirectionFileError, DirectionMeta, DirectionSet


def make(d=8, layers=(1, 3)):
    rng = np.random.default_rng(0)
    return DirectionSet(
        {l: rng.normal(size=d).astype(np.float32) for l in layers},
        DirectionMeta(
            model_id="toy",
            hidden_size=d,
            n_layers=4,
            method="mean_diff",
            pairing="cue",
            token_rule="last_prompt",
            stimulus_hash="abc",
        ),
    )


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

    monkeypatch.setattr(stn, "save", boom)  # what analyses.safetensors_io.save_file calls
    with pytest.raises(OSError):
        make(layers=(2,)).save(p)
    assert p.read_bytes() == before
    assert [f.name for f in tmp_path.iterdir()] == ["d.safetensors"]


# ---------------------------------------------------------------- DirectionSet as the API


def make_two(d=16, layers=(0, 2, 3), n_layers=4):
    rng = np.random.default_rng(1)
    meta = lambda m: DirectionMeta(
        model_id="toy", hidden_size=d, n_layers=n_layers, method=m, normalisation="none", sign="cot_positive"
    )
    a = DirectionSet({l: rng.normal(size=d).astype(np.float32) for l in layers}, meta("mean_diff"))
    b = DirectionSet({l: rng.normal(size=d).astype(np.float32) for l in layers}, meta("lat"))
    return a, b


def f32(x):
    return np.asarray(x, dtype=np.float64).astype(np.float32)


def test_arithmetic_matches_numpy_and_records_history():
    a, b = make_two()
    a_hist = list(a.meta.history)
    cases = {
        "a+b": (a + b, lambda l: f32(a[l].astype(np.float64) + b[l])),
        "a-b": (a - b, lambda l: f32(a[l].astype(np.float64) - b[l])),
        "2.5a": (2.5 * a, lambda l: f32(a[l].astype(np.float64) * 2.5)),
        "a*2.5": (a * 2.5, lambda l: f32(a[l].astype(np.float64) * 2.5)),
        "a/4": (a / 4, lambda l: f32(a[l].astype(np.float64) * 0.25)),
        "-a": (-a, lambda l: -a[l]),
        "sum": (sum([a, b]), lambda l: f32(a[l].astype(np.float64) + b[l])),
    }
    for name, (got, want) in cases.items():
        assert got.layers == a.layers, name
        for l in a.layers:
            assert np.array_equal(got[l], want(l)), (name, l)
    assert a.meta.history == a_hist  # operands are never modified
    assert (a + b).meta.history[-1]["op"] == "add" and (a + b).meta.method == "combination"
    assert (a + b).meta.history[-1]["other"]["method"] == "lat"
    assert (-a).meta.sign == "cot_negative" and (-(-a)).meta.sign == "cot_positive"
    assert [h["op"] for h in (a - b).meta.history] == ["add"]
    assert (a - b).meta.history[0]["other"]["history"] == [{"op": "negate"}]
    assert (3 * a).meta.history == [{"op": "scale", "factor": 3.0}]


def test_arithmetic_refuses_what_does_not_fit():
    a, b = make_two()
    with pytest.raises(DirectionFileError, match=r"different layers .*select the common ones"):
        a + b.select([2, 3])
    with pytest.raises(DirectionFileError, match=r"widths 16 and 8.*resample\(16\)"):
        a + make(d=8, layers=(0, 2, 3))
    other_depth = DirectionSet(dict(b.vectors), DirectionMeta(hidden_size=16, n_layers=6))
    with pytest.raises(DirectionFileError, match="4 and 6 decoder blocks"):
        a + other_depth
    with pytest.raises(DirectionFileError, match="finite"):
        a * float("inf")
    with pytest.raises(DirectionFileError, match="divide .* by zero"):
        a / 0
    with pytest.raises(TypeError):
        a * np.ones(16)  # only scalars scale a direction set
    with pytest.raises(TypeError):
        np.ones(16) * a
    with pytest.raises(TypeError):
        a * True


def test_unit_normalisation_follows_scaling():
    a, _ = make_two()
    u = a.normalised()
    assert u.meta.normalisation == "unit"
    assert all(abs(n - 1.0) < 1e-6 for n in u.norms().values())
    assert u.meta.history[-1]["op"] == "normalise"
    assert {int(k): v for k, v in u.meta.history[-1]["norms"].items()} == pytest.approx(a.norms(), rel=1e-12)
    assert (-u).meta.normalisation == "unit" and (2 * u).meta.normalisation == "none"
    with pytest.raises(DirectionFileError, match="all zeros"):
        DirectionSet({1: np.zeros(4)}, DirectionMeta()).normalised()


def test_lowpass_highpass_resample_use_spectral():
    from cotscope.analyses import spectral

    a, _ = make_two(d=64)
    lp, hp = a.lowpass(0.25), a.highpass(0.25)
    c = spectral.cutoff_bins(64, 0.25)
    for l in a.layers:
        assert np.array_equal(lp[l], f32(spectral.lowpass(a[l], c)))
        # the two parts add back up to the vector, up to float32 rounding of each part (|x| ~ 1, eps 6e-8)
        assert np.allclose(lp[l] + hp[l], a[l], rtol=0, atol=1e-6)
    assert lp.meta.filter == {"kind": "lowpass", "cutoff": 0.25, "cutoff_bins": c}
    assert hp.meta.filter["kind"] == "highpass"
    with pytest.raises(spectral.CutoffError):
        a.lowpass(1.5)
    r = a.resample(96)
    assert r.hidden_size == 96 and r.meta.hidden_size == 96 and r.meta.resampled_from == 64
    assert r.norms() == pytest.approx(a.norms(), rel=1e-6)  # resampling keeps each layer's norm
    assert r.resample(128).meta.resampled_from == 64  # the first width is remembered
    same = a.resample(64)
    assert all(np.allclose(same[l], a[l], atol=1e-6) for l in a.layers)  # same size, no cutoff: identity
    assert r.meta.history[-1] == {"op": "resample", "from": 64, "to": 96, "cutoff": None}
    with pytest.raises(DirectionFileError, match="d >= 2"):
        a.resample(1)


def test_steerable_and_negative_layers():
    a, _ = make_two()
    assert a.steerable().layers == [2, 3]
    assert a.steerable().meta.history[-1] == {"op": "select", "layers": [2, 3]}
    with pytest.raises(DirectionFileError, match="only block 0"):
        a.select([0]).steerable()
    v = np.arange(8, dtype=np.float32)
    known = DirectionSet({-1: v}, DirectionMeta(n_layers=4))
    assert known.layers == [3]  # -1 is the last block, never "every layer"
    unknown = DirectionSet({-1: v}, DirectionMeta())
    assert unknown.layers == [-1] and unknown.resolved(30).layers == [29]
    assert np.array_equal(a[-1], a[3]) and a.select([-2]).layers == [2]
    with pytest.raises(DirectionFileError, match="same block twice"):
        DirectionSet({-1: v, 3: v}, DirectionMeta(n_layers=4))


def test_history_survives_save_and_gguf(tmp_path):
    import gguf

    from cotscope.analyses.export.gguf_cv import KEY_NORMALISATION

    a, _ = make_two()
    ds = (2 * a).lowpass(0.5).steerable()
    back = DirectionSet.load(ds.save(tmp_path / "d.safetensors"))
    assert back.meta.history == ds.meta.history and back.meta == ds.meta
    p = ds.to_gguf(tmp_path / "u.gguf", normalise=True)
    g = DirectionSet.from_gguf(p)
    assert g.layers == [2, 3] and all(abs(n - 1) < 1e-6 for n in g.norms().values())
    assert g.meta.normalisation == "unit" and g.meta.history[-1]["op"] == "normalise"
    assert [h["op"] for h in g.meta.history] == ["scale", "lowpass", "select", "normalise"]
    field = gguf.GGUFReader(str(p)).fields[KEY_NORMALISATION]
    assert field.contents() == "unit"
    raw = DirectionSet.from_gguf(ds.to_gguf(tmp_path / "r.gguf"))
    assert raw.meta.normalisation == "none" and all(np.array_equal(raw[l], ds[l]) for l in ds.layers)
    with pytest.raises(DirectionFileError, match=r"steerable\(\)"):
        a.to_gguf(tmp_path / "b0.gguf")


def test_repeng_round_trip_through_the_real_package(tmp_path):
    if not hasattr(np, "float_"):
        np.float_ = np.float64  # repeng 0.4.0 names np.float_, removed in numpy 2 (API-NOTES §6); test-only patch
    repeng = pytest.importorskip("repeng")
    a, _ = make_two()
    cv = repeng.ControlVector(**a.to_repeng(normalise=True))
    assert sorted(cv.directions) == a.layers
    assert all(abs(np.linalg.norm(cv.directions[l]) - 1) < 1e-6 for l in a.layers)
    back = DirectionSet.from_repeng(cv, n_layers=4)
    assert all(np.array_equal(back[l], a.normalised()[l]) for l in a.layers)
    cv.export_gguf(str(tmp_path / "rp.gguf"))  # repeng's own writer, read by from_gguf
    assert DirectionSet.from_gguf(tmp_path / "rp.gguf", n_layers=4).layers == a.layers


def test_steering_vector_adds_at_the_same_block_as_cotscope(smollm2):
    """steering-vectors' SteeringVector hooks model.layers[i]: the same block as cotscope's layer i.

    Reference: a plain PyTorch forward hook returning ``out + lam * v`` on ``model.layers[i]``. Both add the same
    float32 vector (scaled in float32) to the same tensor, so the logits agree to float32 rounding; any wrong layer
    changes them by orders of magnitude more (checked against the neighbouring blocks).
    """
    import torch

    sv_mod = pytest.importorskip("steering_vectors")
    hf, tok = smollm2.hf, smollm2.tokenizer
    rng = np.random.default_rng(0)
    ds = DirectionSet(
        {l: rng.normal(size=smollm2.hidden_size).astype(np.float32) for l in (5, 12)},
        DirectionMeta(model_id="rand", n_layers=smollm2.n_layers),
    )
    sv = ds.to_steering_vector()
    assert isinstance(sv, sv_mod.SteeringVector) and sv.layer_type == "decoder_block"
    assert sorted(sv.layer_activations) == [5, 12]
    ids = tok("The answer to 17 + 25 is", return_tensors="pt")
    lam = 2.0

    def hooked(layer_map):
        hs = [
            smollm2.layers()[b].register_forward_hook(lambda m, i, o, v=torch.as_tensor(ds[l]): o + lam * v)
            for l, b in layer_map.items()
        ]
        try:
            with torch.no_grad():
                return hf(**ids).logits
        finally:
            for h in hs:
                h.remove()

    with torch.no_grad():
        base = hf(**ids).logits
        with sv.apply(hf, multiplier=lam):
            steered = hf(**ids).logits
    ref = hooked({5: 5, 12: 12})
    shifted = hooked({5: 6, 12: 13})
    err = (steered - ref).abs().max().item()
    assert err < 1e-4
    assert (ref - base).abs().max().item() > 1e3 * max(err, 1e-6)
    assert (shifted - ref).abs().max().item() > 1e3 * max(err, 1e-6)
    back = DirectionSet.from_steering_vector(sv)
    assert back.layers == [5, 12] and all(np.array_equal(back[l], ds[l]) for l in ds.layers)
    with pytest.raises(DirectionFileError, match="decoder_block"):
        DirectionSet.from_steering_vector(sv_mod.SteeringVector({5: torch.zeros(3)}, layer_type="mlp"))
