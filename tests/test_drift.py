"""probes.drift: the three DRIFT rules, gradient hooks, and the cos(g, Δ) logger."""

from __future__ import annotations

import copy
import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from cotscope.analyses.prior import PriorFitError, compute_prior
from cotscope.probes import drift as D

torch.set_num_threads(2)
TEXT = dict(
    vocab_size=64,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    tie_word_embeddings=False,
)


def _llama(seed: int = 0, **over):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(**{**TEXT, **over}))


def _batches(n: int = 2, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(3, 64, (2, 10), generator=g)
        out.append({"input_ids": ids, "labels": ids.clone()})
    return out


# ---------------------------------------------------------------------------------------------- the rules
G = torch.tensor([3.0, 4.0])  # ‖g‖ = 5
DELTA = torch.tensor([0.0, 2.0])  # ‖Δ‖ = 2, cos(g, Δ) = 0.8


def test_absolute_rule_is_g_minus_delta():
    assert torch.allclose(D.guide_gradient(G, DELTA, "absolute"), torch.tensor([3.0, 2.0]))


def test_grad_norm_rule_rescales_delta_to_the_gradient_norm():
    # g − ‖g‖·Δ/‖Δ‖ = [3, 4] − 5·[0, 1]
    assert torch.allclose(D.guide_gradient(G, DELTA, "grad_norm"), torch.tensor([3.0, -1.0]))


def test_adaptive_rule_weights_by_half_one_plus_cosine():
    # α' = (1 + 0.8)/2 = 0.9 → [3, 4] − 0.9·5·[0, 1]
    assert torch.allclose(D.guide_gradient(G, DELTA, "adaptive"), torch.tensor([3.0, -0.5]))
    # g anti-parallel to Δ (descent already moves towards θ_reason): nothing is injected
    assert torch.allclose(D.guide_gradient(-DELTA, DELTA, "adaptive"), -DELTA)
    # g parallel to Δ: the whole gradient is cancelled
    assert torch.allclose(D.guide_gradient(DELTA, DELTA, "adaptive"), torch.zeros(2), atol=1e-6)


@pytest.mark.parametrize("rule", D.RULES)
def test_rules_match_numpy_formulas_on_matrices(rule):
    rng = np.random.default_rng(0)
    g, d = rng.normal(size=(5, 7)), rng.normal(size=(5, 7))
    ng, nd = np.linalg.norm(g), np.linalg.norm(d)
    cos = (g * d).sum() / (ng * nd + 1e-12)
    expect = {
        "absolute": g - d,
        "grad_norm": g - ng * d / (nd + 1e-12),
        "adaptive": g - (1 + cos) / 2 * ng * d / (nd + 1e-12),
    }[rule]
    out = D.guide_gradient(torch.tensor(g, dtype=torch.float32), torch.tensor(d, dtype=torch.float32), rule)
    np.testing.assert_allclose(out.numpy(), expect, rtol=1e-5, atol=1e-6)
    # alpha = +1 flips the sign of the injected term
    plus = D.guide_gradient(torch.tensor(g), torch.tensor(d), rule, alpha=1.0).numpy()
    np.testing.assert_allclose(plus - g, -(expect - g), rtol=1e-9, atol=1e-12)


def test_rules_are_finite_for_zero_delta_and_zero_gradient():
    z = torch.zeros(3)
    v = torch.tensor([1.0, -2.0, 0.5])
    for rule in D.RULES:
        assert torch.equal(D.guide_gradient(v, z, rule), v)
        out = D.guide_gradient(z, v, rule)
        assert torch.isfinite(out).all()
    assert torch.allclose(D.guide_gradient(z, v, "absolute"), -v)


def test_rule_keeps_dtype_and_rejects_bad_input():
    out = D.guide_gradient(G.half(), DELTA, "grad_norm")
    assert out.dtype == torch.float16
    with pytest.raises(D.DriftError, match="unknown DRIFT rule"):
        D.guide_gradient(G, DELTA, "cosine")
    with pytest.raises(D.DriftError, match="shape"):
        D.guide_gradient(G, torch.zeros(3), "absolute")


# ---------------------------------------------------------------------------------------------- hooks
def _raw_grads(model, batch) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    model(**batch).loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("rule", D.RULES)
def test_hooks_rewrite_gradients_with_the_rule(rule):
    model = _llama()
    g = torch.Generator().manual_seed(1)
    names = ["model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.down_proj.weight"]
    params = dict(model.named_parameters())
    deltas = {n: torch.randn(params[n].shape, generator=g) * 0.01 for n in names}
    batch = _batches(1)[0]
    raw = _raw_grads(model, batch)
    with D.register_drift_hooks(model, deltas, rule, normalize_delta_to_param=False) as hooks:
        assert len(hooks.handles) == 2
        guided = _raw_grads(model, batch)
    for n in names:
        assert torch.allclose(guided[n], D.guide_gradient(raw[n], deltas[n], rule), atol=1e-6)
        assert not torch.allclose(guided[n], raw[n])
    other = "model.layers.0.mlp.up_proj.weight"
    assert torch.equal(guided[other], raw[other])
    assert torch.equal(_raw_grads(model, batch)[names[0]], raw[names[0]])  # removed on exit


def test_hooks_from_a_prior_artifact_and_misfit(tmp_path):
    reason, vl = _llama(0), _llama(1)
    reason.save_pretrained(tmp_path / "r")
    vl.save_pretrained(tmp_path / "v")
    compute_prior(
        tmp_path / "r",
        tmp_path / "v",
        "attn",
        out_path=tmp_path / "p.safetensors",
        spectrum=False,
        progress=False,
        verbose=False,
    )
    deltas = D.prior_tensors(vl, tmp_path / "p.safetensors")
    assert len(deltas) == 8
    n = "model.layers.1.self_attn.v_proj.weight"
    assert torch.allclose(deltas[n], dict(reason.named_parameters())[n] - dict(vl.named_parameters())[n], atol=1e-7)
    with pytest.raises(PriorFitError, match="does not fit"):
        D.register_drift_hooks(_llama(hidden_size=48), tmp_path / "p.safetensors")
    canon = D.prior_tensors(vl, {"layers.1.self_attn.v_proj.weight": deltas[n]})  # canonical keys work too
    assert list(canon) == [n]
    with pytest.raises(PriorFitError, match="name no parameter"):
        D.register_drift_hooks(vl, {"model.layers.9.self_attn.q_proj.weight": torch.zeros(32, 32)})
    frozen = _llama()
    frozen.requires_grad_(False)
    with pytest.raises(D.DriftError, match="requires grad"):
        D.register_drift_hooks(frozen, tmp_path / "p.safetensors")


def test_apply_drift_in_place_equals_the_rule():
    model = _llama()
    params = dict(model.named_parameters())
    n = "model.layers.0.self_attn.k_proj.weight"
    deltas = {n: torch.ones_like(params[n])}
    raw = _raw_grads(model, _batches(1)[0])
    assert D.apply_drift_(model, deltas, "adaptive") == 1
    assert torch.allclose(params[n].grad, D.guide_gradient(raw[n], deltas[n], "adaptive"))


# ---------------------------------------------------------------------------------------------- logger
def test_logger_records_cosines_per_tensor_and_step(tmp_path):
    model = _llama()
    params = dict(model.named_parameters())
    g = torch.Generator().manual_seed(2)
    names = [f"model.layers.{l}.self_attn.{m}_proj.weight" for l in range(2) for m in "qv"]
    deltas = {n: torch.randn(params[n].shape, generator=g) for n in names}
    batches = _batches(2)
    # oracle for step 0: the raw gradient of a fresh copy
    raw0 = _raw_grads(copy.deepcopy(model), batches[0])
    rows = D.log_gradient_alignment(
        model, deltas, batches, n_steps=3, lr=1e-3, progress=False, out_path=tmp_path / "cos.csv"
    )
    assert len(rows) == 3 * len(names)
    assert {r["step"] for r in rows} == {0, 1, 2}
    first = {r["param"]: r for r in rows if r["step"] == 0}
    for n in names:
        c = float(D.cosine(raw0[n], deltas[n]))
        assert first[n]["cos"] == pytest.approx(c, abs=1e-5)
        assert first[n]["layer"] == int(n.split(".")[2]) and first[n]["module"].startswith("self_attn.")
    assert rows[0]["loss"] != rows[-1]["loss"]  # the optimizer really stepped
    with open(tmp_path / "cos.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == len(rows) and math.isclose(float(table[0]["cos"]), rows[0]["cos"], rel_tol=1e-9)


def test_logger_with_rule_logs_the_guided_cosine():
    model = _llama()
    params = dict(model.named_parameters())
    n = "model.layers.0.mlp.gate_proj.weight"
    rows = D.log_gradient_alignment(
        model, {n: torch.randn(params[n].shape)}, _batches(1), n_steps=2, rule="grad_norm", progress=False
    )
    for r in rows:
        assert r["cos_guided"] < r["cos"] and r["cos_guided"] <= 1e-6  # g − ‖g‖Δ̂ has no positive Δ component
    with pytest.raises(D.DriftError, match="n_steps"):
        D.log_gradient_alignment(model, {n: torch.zeros(params[n].shape)}, _batches(1), n_steps=0)
    with pytest.raises(D.DriftError, match="unknown DRIFT rule"):
        D.log_gradient_alignment(model, {n: torch.zeros(params[n].shape)}, _batches(1), n_steps=1, rule="x")
    with pytest.raises(D.DriftError, match="zero on every tensor"):
        D.log_gradient_alignment(model, {n: torch.zeros(params[n].shape)}, _batches(1), n_steps=1)
    m2 = "model.layers.1.mlp.gate_proj.weight"  # zero Δ tensors are trained but not logged
    rows = D.log_gradient_alignment(
        model,
        {n: torch.ones(params[n].shape), m2: torch.zeros(params[m2].shape)},
        _batches(1),
        n_steps=1,
        progress=False,
    )
    assert {r["param"] for r in rows} == {n}


def test_drift_cosine_figure_draws_from_the_table(tmp_path):
    from cotscope.figures import fig_drift_cosine

    model = _llama()
    params = dict(model.named_parameters())
    names = ["model.layers.0.self_attn.q_proj.weight", "model.layers.1.self_attn.q_proj.weight"]
    rows = D.log_gradient_alignment(
        model,
        {n: torch.randn(params[n].shape) for n in names},
        _batches(1),
        n_steps=2,
        rule="adaptive",
        progress=False,
        out_path=tmp_path / "t.json",
    )
    fig = fig_drift_cosine.draw(fig_drift_cosine.load_table(tmp_path / "t.json"))
    assert len(fig.axes) == 2 and len(fig.axes[0].lines) >= 1
    paths = fig_drift_cosine.save(rows, tmp_path)
    assert all(p.stat().st_size > 1000 for p in paths)


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory):
    """A saved tiny Idefics2 (VL) and a perturbed copy of its text model saved as a Llama (reason)."""
    from tiny_vlms import tiny_vlm, tiny_vlm_dir
    from transformers import LlamaForCausalLM

    root = tmp_path_factory.mktemp("drift_pair")
    vdir, vlm = tiny_vlm_dir("idefics2"), tiny_vlm("idefics2")
    reason = LlamaForCausalLM(vlm.model.config.text_config)
    g = torch.Generator().manual_seed(0)
    reason.model.load_state_dict(
        {k: t + 0.01 * torch.randn(t.shape, generator=g) for k, t in vlm.model.model.text_model.state_dict().items()}
    )
    reason.save_pretrained(root / "reason")
    return root / "reason", vdir


def test_run_drift_alignment_on_a_tiny_vlm(tiny_pair, tmp_path):
    """End to end: prior between a perturbed text model and a saved tiny Idefics2, then the logger on visual items."""
    reason, vdir = tiny_pair
    compute_prior(
        reason, vdir, "attn", out_path=tmp_path / "p.safetensors", spectrum=False, progress=False, verbose=False
    )
    s = D.run_drift_alignment(
        vdir, tmp_path / "p.safetensors", tmp_path / "prior", n_steps=2, batch_size=1, rule="grad_norm"
    )
    assert s["drift_n_tensors"] == 16 and -1 <= s["drift_cos_mean"] <= 1
    assert set(s["drift_cos_by_module"]) == {
        "self_attn.q_proj",
        "self_attn.k_proj",
        "self_attn.v_proj",
        "self_attn.o_proj",
    }
    with open(tmp_path / "prior" / "drift_cos.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == 2 * 16
    from cotscope.figures import fig_drift_cosine  # figures draw from the stored table

    assert sorted(Path(p).suffix for p in fig_drift_cosine.render(tmp_path)) == [".html", ".pdf", ".png"]


def test_prior_stage_gives_numbers_and_a_report(tiny_pair, tmp_path):
    from cotscope.stages.prior import prior_stage

    reason, vdir = tiny_pair
    s = prior_stage(tmp_path, {}, reason_dir=reason, vl_dir=vdir, n_steps=1, batch_size=1)
    assert s["n_matched"] == 28 and s["delta_norm_total"] > 0 and s["drift_n_steps"] == 1
    assert "Verdict" in s["report"] and s["title"]
    assert (tmp_path / "prior" / "prior.safetensors").is_file() and (tmp_path / "prior" / "drift_cos.csv").is_file()
    from cotscope.analyses.prior import PriorArtifact

    assert PriorArtifact.load(tmp_path / "prior" / "prior.safetensors").meta["out_dtype"] == "float16"
    json_ready = __import__("json").dumps(s)  # goes into summary.json as is
    assert "NaN" not in json_ready


def test_sign_convention_moves_parameters_towards_theta_reason():
    """α = −1: with SGD the guided step has a positive component along Δ = θ_reason − θ_VL."""
    model = _llama()
    params = dict(model.named_parameters())
    n = "model.layers.1.self_attn.o_proj.weight"
    delta = torch.randn(params[n].shape, generator=torch.Generator().manual_seed(4))
    along = {}
    for rule in (None, "absolute", "grad_norm", "adaptive"):
        m = copy.deepcopy(model)
        p = dict(m.named_parameters())[n]
        start = p.detach().clone()
        D.log_gradient_alignment(
            m,
            {n: delta},
            _batches(1),
            n_steps=1,
            rule=rule,
            normalize_delta_to_param=False,
            optimizer=torch.optim.SGD(m.parameters(), lr=0.1),
            progress=False,
        )
        along[rule] = float(((p.detach() - start) * delta).sum() / delta.norm() ** 2)
    assert along["absolute"] == pytest.approx(along[None] + 0.1, abs=1e-5)  # −lr·(g − Δ) = −lr·g + lr·Δ
    assert along["grad_norm"] > along[None] and along["adaptive"] >= along[None]
    # released default: Δ rescaled to ||θ|| first, so the absolute rule steps lr·||θ||/||Δ|| along Δ
    m = copy.deepcopy(model)
    p = dict(m.named_parameters())[n]
    start = p.detach().clone()
    D.log_gradient_alignment(
        m,
        {n: delta},
        _batches(1),
        n_steps=1,
        rule="absolute",
        optimizer=torch.optim.SGD(m.parameters(), lr=0.1),
        progress=False,
    )
    ratio = float(start.norm() / delta.norm())
    assert float(((p.detach() - start) * delta).sum() / delta.norm() ** 2) == pytest.approx(
        along[None] + 0.1 * ratio, abs=1e-4
    )


def test_compare_finetuning_reports_each_rule(tiny_pair, tmp_path):
    reason, vdir = tiny_pair
    compute_prior(
        reason, vdir, "mlp", out_path=tmp_path / "p.safetensors", spectrum=False, progress=False, verbose=False
    )
    rows = D.compare_finetuning(
        vdir,
        tmp_path / "p.safetensors",
        tmp_path,
        rules=(None, "grad_norm"),
        n_steps=1,
        batch_size=1,
        n_eval=2,
        lr=1e-3,
    )
    assert [r["rule"] for r in rows] == ["none", "grad_norm"]
    assert rows[1]["update_along_delta"] > rows[0]["update_along_delta"]
    assert rows[0]["eval_loss_before"] == rows[1]["eval_loss_before"] and 0 <= rows[1]["eval_accuracy"] <= 1
    assert (tmp_path / "finetune_compare.json").is_file()


# ---------------------------------------------------------------------------------------------- released normalisation
@pytest.mark.parametrize("rule", D.RULES)
def test_normalize_delta_to_param_is_the_released_default(rule):
    model = _llama()
    params = dict(model.named_parameters())
    g = torch.Generator().manual_seed(4)
    names = ["model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.down_proj.weight"]
    deltas = {n: torch.randn(params[n].shape, generator=g) * 0.01 for n in names}
    scaled = D.normalize_deltas(model, deltas)
    for n in names:  # ||Δ'|| = ||θ|| per tensor, same direction
        assert float(scaled[n].norm()) == pytest.approx(float(params[n].detach().norm()), rel=1e-5)
        assert float(D.cosine(scaled[n], deltas[n])) == pytest.approx(1.0, abs=1e-6)
    batch = _batches(1)[0]
    raw = _raw_grads(model, batch)
    with D.register_drift_hooks(model, deltas, rule) as hooks:  # default: normalised
        assert all(torch.allclose(hooks.deltas[n], scaled[n]) for n in names)
        guided = _raw_grads(model, batch)
    for n in names:
        assert torch.allclose(guided[n], D.guide_gradient(raw[n], scaled[n], rule), atol=1e-6)
        plain = D.guide_gradient(raw[n], deltas[n], rule)
        # only the absolute rule sees Δ's scale; grad-norm and adaptive use Δ/||Δ|| and a cosine
        assert torch.allclose(guided[n], plain, atol=1e-6) == (rule != "absolute")


def test_logger_records_raw_and_used_delta_norms():
    model = _llama()
    params = dict(model.named_parameters())
    n = "model.layers.0.self_attn.q_proj.weight"
    d = torch.randn(params[n].shape) * 0.01
    rows = D.log_gradient_alignment(model, {n: d}, _batches(1), n_steps=1, progress=False)
    assert rows[0]["delta_norm"] == pytest.approx(float(d.norm()), rel=1e-5)
    assert rows[0]["delta_norm_used"] == pytest.approx(float(params[n].detach().norm()), rel=1e-3)  # before the step
    rows = D.log_gradient_alignment(
        _llama(), {n: d}, _batches(1), n_steps=1, progress=False, normalize_delta_to_param=False
    )
    assert rows[0]["delta_norm_used"] == pytest.approx(rows[0]["delta_norm"])
