"""analyses.prior: Δ between checkpoints, the match report, streaming, the spectrum, the artifact."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from cotscope.analyses import prior as P
from cotscope.analyses import spectral

torch.set_num_threads(2)
TEXT = dict(
    vocab_size=64,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    tie_word_embeddings=False,
)


def _llama(seed: int = 0, **over):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(**{**TEXT, **over})).eval()


def _perturbed_text_state(lm, seed: int = 1, scale: float = 0.01) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: v + scale * torch.randn(v.shape, generator=g) for k, v in lm.model.state_dict().items()}


def _idefics2(lm):
    from transformers import Idefics2Config, Idefics2ForConditionalGeneration, LlamaConfig

    cfg = Idefics2Config(
        vision_config=dict(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=16,
            patch_size=8,
        ),
        perceiver_config=dict(
            hidden_size=32,
            resampler_n_latents=4,
            resampler_depth=1,
            resampler_n_heads=2,
            resampler_head_dim=8,
            num_key_value_heads=1,
        ),
        text_config=LlamaConfig(**TEXT).to_dict(),
        image_token_id=63,
    )
    torch.manual_seed(5)
    vlm = Idefics2ForConditionalGeneration(cfg).eval()
    vlm.model.text_model.load_state_dict(_perturbed_text_state(lm))
    vlm.lm_head.weight.data = lm.lm_head.weight.data + 0.02
    return vlm


def _llava(lm):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    cfg = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=16,
            patch_size=8,
        ),
        text_config=LlamaConfig(**TEXT),
        image_token_index=63,
    )
    torch.manual_seed(6)
    vlm = LlavaForConditionalGeneration(cfg).eval()
    vlm.model.language_model.load_state_dict(_perturbed_text_state(lm, seed=2))
    vlm.lm_head.weight.data = lm.lm_head.weight.data - 0.03
    return vlm


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A tiny Llama (reason), a tiny Idefics2 whose text model is a perturbed copy (sharded), and a LLaVA."""
    root = tmp_path_factory.mktemp("prior")
    lm = _llama()
    lm.save_pretrained(root / "lm")
    idefics = _idefics2(lm)
    idefics.save_pretrained(root / "idefics2", max_shard_size="40KB")  # several shards + index json
    llava = _llava(lm)
    llava.save_pretrained(root / "llava")  # legacy layout language_model.model.*
    return {"root": root, "lm": lm, "idefics2": idefics, "llava": llava}


def _direct_delta(lm, vlm, text_attr: str) -> dict[str, np.ndarray]:
    """Oracle: plain state-dict subtraction keyed by canonical name."""
    text = vlm.get_submodule(text_attr).state_dict()
    out = {k: (v - text[k]).numpy() for k, v in lm.model.state_dict().items()}
    out["lm_head.weight"] = (lm.lm_head.weight - vlm.lm_head.weight).detach().numpy()
    return out


@pytest.mark.parametrize("vl,text_attr", [("idefics2", "model.text_model"), ("llava", "model.language_model")])
def test_delta_equals_direct_state_dict_subtraction(pair, vl, text_attr, tmp_path):
    out = tmp_path / "prior.safetensors"
    res = P.compute_prior(
        pair["root"] / "lm",
        pair["root"] / vl,
        "full",
        out_path=out,
        n_perm=10,
        progress=False,
        verbose=False,
        chunk_mb=0.002,
    )  # tiny chunks: many row blocks
    oracle = _direct_delta(pair["lm"], pair[vl], text_attr)
    art = P.PriorArtifact.load(out)
    assert sorted(art.names) == sorted(oracle)
    for name, d in art.items():
        np.testing.assert_allclose(d, oracle[name], rtol=0, atol=1e-7)
    by = {t["canonical"]: t for t in res.tensors}
    for name, d in oracle.items():
        assert by[name]["delta_norm"] == pytest.approx(float(np.linalg.norm(d)), rel=1e-6)
    # per-layer cosine equals the cosine of the concatenated layer weights
    text = pair[vl].get_submodule(text_attr).state_dict()
    keys = [k for k in pair["lm"].model.state_dict() if k.startswith("layers.1.")]
    a = np.concatenate([pair["lm"].model.state_dict()[k].double().numpy().ravel() for k in keys])
    b = np.concatenate([text[k].double().numpy().ravel() for k in keys])
    row = [r for r in res.layers if r["layer"] == 1][0]
    assert row["cos"] == pytest.approx(float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)), abs=1e-9)
    assert row["delta_norm"] == pytest.approx(float(np.linalg.norm(a - b)), rel=1e-6)
    # typed result: one pandas row per layer, a compact repr and HTML table
    df = res.to_pandas()
    assert list(df["layer"]) == [r["layer"] for r in res.layers]
    assert df.set_index("layer").loc[1, "cos"] == row["cos"]
    assert "\n" not in repr(res) and repr(res).startswith("PriorResult(hidden_size=")
    assert "<table>" in res._repr_html_()


def test_match_report_counts_layouts_and_vision(pair):
    pairs, rep = P.match_checkpoints(pair["root"] / "lm", pair["root"] / "idefics2")
    assert rep.n_matched == len(pairs) == 3 * 7  # attn(4) + mlp(3) per layer
    assert rep.matched_mapped == {"model -> model.text_model": 21} and rep.matched_exact == 0
    assert rep.n_vision["vl"] > 0 and rep.n_other["vl"] > 0 and rep.n_vision["reason"] == 0
    assert not rep.unmatched_reason and not rep.unmatched_vl and rep.ok
    text = str(rep)
    assert "matched:          21" in text and "shape-mismatched: 0" in text
    # legacy LLaVA save layout is mapped too
    _, rep2 = P.match_checkpoints(pair["root"] / "lm", pair["root"] / "llava", "full")
    assert rep2.matched_mapped.get("model -> language_model.model") == 29
    assert rep2.matched_mapped.get("<bare> -> language_model") == 1  # lm_head


def _renamed_copy(src: Path, dst: Path, old: str, new: str) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    sd = load_file(str(src / "model.safetensors"))
    sd[new] = sd.pop(old)
    save_file(sd, str(dst / "model.safetensors"))
    (dst / "config.json").write_text((src / "config.json").read_text())


def test_renamed_module_is_counted_unmatched(pair, tmp_path):
    _renamed_copy(
        pair["root"] / "lm",
        tmp_path / "renamed",
        "model.layers.1.mlp.up_proj.weight",
        "model.layers.1.mlp.upp_proj.weight",
    )
    with pytest.raises(P.ModuleMatchError) as ei:
        P.match_checkpoints(tmp_path / "renamed", pair["root"] / "idefics2", "full")
    rep = ei.value.report
    assert rep.unmatched_reason == ["model.layers.1.mlp.upp_proj.weight"]
    assert rep.unmatched_vl == ["model.text_model.layers.1.mlp.up_proj.weight"]
    assert "Module match report" in str(ei.value) and "unmatched:        reason 1 | VL 1" in str(ei.value)
    pairs, rep = P.match_checkpoints(tmp_path / "renamed", pair["root"] / "idefics2", "full", allow_unmatched=True)
    assert rep.n_matched == 29 and len(rep.unmatched_reason) == len(rep.unmatched_vl) == 1
    assert "layers.1.mlp.up_proj.weight" not in {p.canonical for p in pairs}


def test_different_architectures_raise_with_report(pair, tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=4)).save_pretrained(tmp_path / "gpt2")
    with pytest.raises(P.ModuleMatchError) as ei:
        P.match_checkpoints(pair["root"] / "lm", tmp_path / "gpt2")
    assert ei.value.report.n_matched == 0
    assert "no tensor pairs match" in str(ei.value) and "Module match report" in str(ei.value)
    # same family, different width: shapes mismatch -> error, unless allowed (then reported)
    _llama(hidden_size=48).save_pretrained(tmp_path / "wide")
    with pytest.raises(P.ModuleMatchError, match="different shapes"):
        P.match_checkpoints(pair["root"] / "lm", tmp_path / "wide")
    # different depth: the extra layers are unmatched
    _llama(num_hidden_layers=2).save_pretrained(tmp_path / "shallow")
    with pytest.raises(P.ModuleMatchError, match="no partner") as ei:
        P.match_checkpoints(pair["root"] / "lm", tmp_path / "shallow")
    assert len(ei.value.report.unmatched_reason) == 7


def test_shape_mismatch_allowed_is_skipped_and_reported(pair, tmp_path):
    d = tmp_path / "resized"
    d.mkdir()
    sd = load_file(str(pair["root"] / "lm" / "model.safetensors"))
    sd["model.embed_tokens.weight"] = np.concatenate([sd["model.embed_tokens.weight"], np.zeros((1, 32), np.float32)])
    save_file(sd, str(d / "model.safetensors"))
    pairs, rep = P.match_checkpoints(pair["root"] / "lm", d, "embed+attn", allow_shape_mismatch=True)
    assert [s["canonical"] for s in rep.shape_mismatched] == ["embed_tokens.weight"]
    assert "embed_tokens.weight" not in {p.canonical for p in pairs} and rep.n_matched == 12


def test_pattern_matching_nothing_is_an_error(pair):
    with pytest.raises(P.PatternError, match="cross_attn"):
        P.match_checkpoints(pair["root"] / "lm", pair["root"] / "idefics2", r"layers\.\d+\.cross_attn")
    with pytest.raises(P.PatternError, match="neither a preset"):
        P.match_checkpoints(pair["root"] / "lm", pair["root"] / "idefics2", "mlp[")
    pairs, _ = P.match_checkpoints(pair["root"] / "lm", pair["root"] / "idefics2", [r"\.q_proj\.", "norm"])
    assert {p.module for p in pairs} == {"self_attn.q_proj", "input_layernorm", "post_attention_layernorm", "norm"}


def test_presets_select_the_drift_module_sets():
    names = [
        "layers.0.self_attn.q_proj.weight",
        "layers.0.self_attn.q_proj.bias",
        "layers.0.mlp.down_proj.weight",
        "layers.0.input_layernorm.weight",
        "norm.weight",
        "embed_tokens.weight",
        "lm_head.weight",
    ]

    def sel(m):
        return [n for n in names if any(rx.search(n) for _, rx in P.resolve_modules(m))]

    assert sel("default") == names[:3]
    assert sel("norm") == ["layers.0.input_layernorm.weight", "norm.weight"]
    assert sel("embed+head") == ["embed_tokens.weight", "lm_head.weight"]
    assert sel("full") == names
    assert P.canonical_name("model.vision_model.encoder.layers.0.self_attn.q_proj.weight") is None
    assert P.canonical_name("visual.blocks.0.attn.qkv.weight") is None


def test_tied_head_pairs_with_real_head(tmp_path):
    tied = _llama(tie_word_embeddings=True)
    tied.save_pretrained(tmp_path / "tied")
    assert not any("lm_head" in k for k in load_file(str(tmp_path / "tied" / "model.safetensors")))
    _llama(seed=3).save_pretrained(tmp_path / "untied")
    pairs, rep = P.match_checkpoints(tmp_path / "tied", tmp_path / "untied", "head")
    assert [(p.reason_key, p.vl_key) for p in pairs] == [("model.embed_tokens.weight", "lm_head.weight")]
    assert any("ties lm_head" in n for n in rep.notes)
    with pytest.raises(P.PatternError, match="tie lm_head"):
        P.match_checkpoints(tmp_path / "tied", tmp_path / "tied", "head")


def test_bf16_and_fp16_checkpoints_read_exactly(pair, tmp_path):
    from safetensors.torch import save_file as save_torch

    sd = {k: v.to(torch.bfloat16) for k, v in pair["lm"].state_dict().items()}
    (tmp_path / "bf16").mkdir()
    save_torch(sd, str(tmp_path / "bf16" / "model.safetensors"))
    ck = P.Checkpoint(tmp_path / "bf16")
    w = sd["model.layers.0.mlp.up_proj.weight"]
    np.testing.assert_array_equal(ck.read("model.layers.0.mlp.up_proj.weight"), w.float().numpy())
    np.testing.assert_array_equal(ck.read("model.layers.0.mlp.up_proj.weight", slice(3, 7)), w[3:7].float().numpy())
    half = {k: v.to(torch.float16) for k, v in pair["lm"].state_dict().items()}
    (tmp_path / "f16").mkdir()
    save_torch(half, str(tmp_path / "f16" / "model.safetensors"))
    res = P.compute_prior(tmp_path / "bf16", tmp_path / "f16", "mlp", spectrum=False, progress=False, verbose=False)
    k = "layers.0.mlp.up_proj.weight"
    ref = np.linalg.norm(w.float().numpy() - half["model." + k].float().numpy())
    assert [t for t in res.tensors if t["canonical"] == k][0]["delta_norm"] == pytest.approx(ref, rel=1e-6)


def test_bad_checkpoints_give_clear_errors(tmp_path):
    with pytest.raises(P.CheckpointError, match="does not exist"):
        P.Checkpoint(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(P.CheckpointError, match="no .safetensors"):
        P.Checkpoint(tmp_path / "empty")
    (tmp_path / "trunc").mkdir()
    (tmp_path / "trunc" / "model.safetensors").write_bytes(b"\x10\x00\x00")
    with pytest.raises(P.CheckpointError, match="truncated"):
        P.Checkpoint(tmp_path / "trunc")


def test_gram_spectrum_equals_summed_energy_spectra_and_permutations():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 48))
    gs = P.GramSpectrum(48)
    gs.add(X[:10])
    gs.add(X[10:])
    np.testing.assert_allclose(gs.spectrum(), spectral.energy_spectrum(X).sum(0), rtol=1e-10, atol=1e-9)
    p = rng.permutation(48)
    np.testing.assert_allclose(gs.spectrum(p), spectral.energy_spectrum(X[:, p]).sum(0), rtol=1e-4, atol=1e-3)
    # the exact null mean matches the Monte-Carlo mean over permutations
    mc = np.mean([gs.spectrum(rng.permutation(48)) for _ in range(3000)], 0) * P.onesided_weights(48)
    np.testing.assert_allclose(mc[1:-1], P._null_mean_spectrum(gs)[1:-1], rtol=0.05)


def test_spectrum_test_verdicts():
    t = np.arange(64)
    rng = np.random.default_rng(1)
    smooth = np.array([np.cos(2 * np.pi * k * t / 64 + rng.uniform(0, 6)) for k in rng.integers(1, 4, 30)])
    rough = smooth * (-1.0) ** t
    for X, verdict in (
        (smooth, "low-frequency"),
        (rough, "high-frequency"),
        (rng.normal(size=(200, 64)), "no frequency structure beyond the permutation null"),
    ):
        gs = P.GramSpectrum(64)
        gs.add(X)
        assert P.spectrum_test(gs, n_perm=100)["verdict"] == verdict


def test_planted_high_frequency_drift_is_detected(pair, tmp_path):
    """VL = reason − Δ with Δ's hidden-dim rows alternating in sign: the analysis must say high-frequency."""
    src = pair["root"] / "lm"
    sd = load_file(str(src / "model.safetensors"))
    rng = np.random.default_rng(0)
    alt = (-1.0) ** np.arange(32)
    out = {}
    for k, v in sd.items():
        if ".mlp.up_proj." in k or ".self_attn.q_proj." in k:  # hidden axis last
            v = v - 0.05 * rng.normal(size=(v.shape[0], 1)) * alt[None, :] * rng.uniform(0.5, 1, size=(1, 32))
        out[k] = v.astype(np.float32)
    (tmp_path / "hf").mkdir()
    save_file(out, str(tmp_path / "hf" / "model.safetensors"))
    (tmp_path / "hf" / "config.json").write_text((src / "config.json").read_text())
    res = P.compute_prior(
        src,
        tmp_path / "hf",
        [r"mlp\.up_proj", r"self_attn\.q_proj"],
        n_perm=100,
        n_perm_layer=50,
        progress=False,
        verbose=False,
    )
    assert res.spectrum["total"]["verdict"] == "high-frequency"
    assert res.spectrum["total"]["centroid"] > 0.9
    assert all(r["verdict"] == "high-frequency" for r in res.layers)


def test_artifact_fits_its_model_and_refuses_others(pair, tmp_path):
    out = tmp_path / "p.safetensors"
    P.compute_prior(
        pair["root"] / "lm", pair["root"] / "idefics2", out_path=out, spectrum=False, progress=False, verbose=False
    )
    art = P.PriorArtifact.load(out)
    assert art.meta["sign"] == P.SIGN_CONVENTION and art.meta["vl"]["model_type"] == "idefics2"
    assert (
        art.meta["tensors"]["layers.0.self_attn.q_proj.weight"]["vl_key"]
        == "model.text_model.layers.0.self_attn.q_proj.weight"
    )
    m = art.fit({n: tuple(p.shape) for n, p in pair["idefics2"].named_parameters()})
    assert len(m) == 21 and m["model.text_model.layers.2.mlp.down_proj.weight"] == "layers.2.mlp.down_proj.weight"
    with pytest.raises(P.PriorFitError, match="shape mismatch"):
        art.fit({n: tuple(p.shape) for n, p in _llama(hidden_size=48).named_parameters()})
    with pytest.raises(P.PriorFitError, match="have no parameter"):
        art.fit({n: tuple(p.shape) for n, p in _llama(num_hidden_layers=2).named_parameters()})
    assert (
        len(art.fit({n: tuple(p.shape) for n, p in _llama(num_hidden_layers=2).named_parameters()}, allow_partial=True))
        == 14
    )
    with safe_open(str(out), "numpy") as fh:  # a standard safetensors file
        assert fh.metadata()["format"] == P.PRIOR_FORMAT


def test_artifact_load_rejects_foreign_and_corrupt_files(pair, tmp_path):
    with pytest.raises(P.PriorFitError, match="does not exist"):
        P.PriorArtifact.load(tmp_path / "none.safetensors")
    with pytest.raises(P.PriorFitError, match="not a cotscope prior"):
        P.PriorArtifact.load(pair["root"] / "lm" / "model.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\xff" * 12)
    with pytest.raises(P.PriorFitError, match="not a readable safetensors"):
        P.PriorArtifact.load(bad)


def test_run_prior_analysis_writes_artifact_json_and_figures(pair, tmp_path):
    from cotscope.figures.__main__ import render_all

    s = P.run_prior_analysis(
        pair["root"] / "lm",
        pair["root"] / "idefics2",
        tmp_path,
        n_perm=20,
        n_perm_layer=10,
        progress=False,
        verbose=False,
    )
    assert s["n_matched"] == 21 and s["n_unmatched_vl"] == 0 and s["delta_norm_total"] > 0
    assert s["spectral_verdict"] in (
        "high-frequency",
        "low-frequency",
        "no frequency structure beyond the permutation null",
    )
    data = json.loads((tmp_path / P.ANALYSIS_FILENAME).read_text())
    assert len(data["layers"]) == 3 and data["sign"] == P.SIGN_CONVENTION
    assert [r["module"] for r in data["modules"]][:4] == [
        "self_attn.q_proj",
        "self_attn.k_proj",
        "self_attn.v_proj",
        "self_attn.o_proj",
    ]
    (tmp_path / "prior").mkdir()
    for f in tmp_path.glob("prior*"):  # lay the files out as a run: RUN/prior/…
        if f.is_file():
            f.rename(tmp_path / "prior" / f.name)
    figs = [f for f in render_all(tmp_path, verbose=False) if Path(f).name.startswith("prior_")]
    for f in figs:
        assert Path(f).stat().st_size > 1000
    assert sum(f.endswith(".png") for f in figs) == 3
    assert s["artifact"].endswith("prior.safetensors")


def test_identical_backbones_give_zero_delta_and_no_spectrum(pair, tmp_path):
    from cotscope.figures.__main__ import render_all

    s = P.run_prior_analysis(
        pair["root"] / "lm",
        pair["root"] / "lm",
        tmp_path / "prior",
        "full",
        write_artifact=False,
        progress=False,
        verbose=False,
    )
    assert s["delta_norm_total"] == 0.0 and s["cos_min"] == pytest.approx(1.0) and s["delta_norm_max_layer"] is None
    assert s["spectral_verdict"] == P.ZERO_VERDICT and s["spectral_centroid"] is None

    def no_nan(c):
        raise AssertionError(f"non-standard JSON constant {c}")

    data = json.loads((tmp_path / "prior" / P.ANALYSIS_FILENAME).read_text(), parse_constant=no_nan)
    assert all(r["verdict"] == P.ZERO_VERDICT for r in data["layers"])
    figs = [f for f in render_all(tmp_path, verbose=False) if Path(f).name.startswith("prior_")]
    assert sum(f.endswith(".png") for f in figs) == 3  # the zero-Δ figures still draw


@pytest.mark.slow
def test_reference_vlm_prior_is_minus_its_lora_delta(tmp_path):
    """The real pair: Δ(SmolLM2, reference VLM) must equal −(the shipped LoRA delta), and be zero elsewhere."""
    RV = pytest.importorskip("cotscope.probes.models.reference_vlm")
    from cotscope.probes.models.embedded import smollm2_dir

    try:
        vdir = RV.reference_vlm_dir()
    except (RV.ReferenceVLMWeightsError, FileNotFoundError) as e:
        pytest.skip(f"reference VLM not available: {e}")
    out = tmp_path / "prior.safetensors"
    res = P.compute_prior(smollm2_dir(), vdir, "default", out_path=out, spectrum=False, progress=False)
    assert res.report.ok and res.report.n_matched == 30 * 7
    art = P.PriorArtifact.load(out)
    lora = {k: v.numpy() for k, v in RV.lm_deltas().items()}
    for name in art.names:
        d = art.get(name)
        if name in lora:
            np.testing.assert_allclose(d, -lora[name], rtol=0, atol=1e-6 * max(1.0, float(np.abs(lora[name]).max())))
        else:
            assert not np.any(d), name


def test_user_regex_can_pair_non_lm_tensors_by_exact_name(pair):
    pairs, rep = P.match_checkpoints(pair["root"] / "idefics2", pair["root"] / "idefics2", r"raw:^model\.connector\.")
    assert rep.n_matched == rep.matched_exact == len(pairs) > 0
    assert all(p.canonical.startswith("model.connector.") and p.method == "exact" for p in pairs)
    # presets never pick them up, and vision towers are always skipped
    full, _ = P.match_checkpoints(pair["root"] / "idefics2", pair["root"] / "idefics2", "full")
    assert not any("connector" in p.canonical or "vision" in p.canonical for p in full)
    with pytest.raises(P.PatternError):
        P.match_checkpoints(pair["root"] / "idefics2", pair["root"] / "idefics2", r"raw:vision_model")
    with pytest.raises(P.PatternError):  # plain regexes see only the language model
        P.match_checkpoints(pair["root"] / "idefics2", pair["root"] / "idefics2", r"^model\.connector\.")


def test_figures_regenerate_from_the_run_directory(pair, tmp_path):
    from cotscope.figures.__main__ import render_all

    P.run_prior_analysis(
        pair["root"] / "lm",
        pair["root"] / "idefics2",
        tmp_path / "prior",
        write_artifact=False,
        n_perm=10,
        n_perm_layer=10,
        progress=False,
        verbose=False,
    )
    written = render_all(tmp_path, verbose=False)
    names = {Path(p).name for p in written}
    assert {"prior_norms.png", "prior_modules.html", "prior_spectrum.pdf"} <= names
    assert all(Path(p).parent == tmp_path / "figures" for p in written)


def test_float16_artifact_round_trips(pair, tmp_path):
    out = tmp_path / "p16.safetensors"
    P.compute_prior(
        pair["root"] / "lm",
        pair["root"] / "idefics2",
        "mlp",
        out_path=out,
        out_dtype="float16",
        spectrum=False,
        progress=False,
        verbose=False,
    )
    art = P.PriorArtifact.load(out)
    oracle = _direct_delta(pair["lm"], pair["idefics2"], "model.text_model")
    for name, d in art.items():
        assert d.dtype == np.float32
        np.testing.assert_allclose(d, oracle[name], rtol=1e-3, atol=1e-6)
    with pytest.raises(P.PriorError, match="out_dtype"):
        P.compute_prior(pair["root"] / "lm", pair["root"] / "idefics2", out_path=out, out_dtype="bfloat16")
