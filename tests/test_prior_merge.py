"""Merging baselines (analyses.prior.merge) and putting merged weights into a model (probes.merge)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cotscope.analyses.prior.merge import MergeError, check_params, merge_checkpoints, merge_tensor, read_merged_meta
from cotscope.probes.merge import merged_weights


def _pair(seed=0, shape=(6, 5)):
    rng = np.random.default_rng(seed)
    base = rng.normal(size=shape).astype(np.float32)
    vl = base + rng.normal(size=shape).astype(np.float32) * 0.1
    reason = base + rng.normal(size=shape).astype(np.float32) * 0.1
    return base, vl, reason


def test_task_arithmetic_with_and_without_a_base():
    base, vl, reason = _pair()
    assert np.allclose(merge_tensor("task_arithmetic", vl, reason, lam=0.5), (vl + reason) / 2, atol=1e-6)
    assert np.allclose(merge_tensor("task_arithmetic", vl, reason, lam=1.0), reason, atol=1e-6)
    got = merge_tensor("task_arithmetic", vl, reason, base, lam=0.7)
    assert np.allclose(got, base + 0.7 * ((vl - base) + (reason - base)), atol=1e-6)


def test_ties_by_hand():
    base = np.zeros(6, np.float32)
    vl = np.array([0.5, -0.1, 0.0, 0.9, -0.8, 0.2], np.float32)
    reason = np.array([0.4, 0.3, -0.2, -0.1, -0.6, 0.05], np.float32)
    # trim to the top half by magnitude: τ_VL keeps 0.5, 0.9, -0.8; τ_R keeps 0.4, 0.3, -0.6
    # elected signs of the sums: +, +, 0, +, -, 0 → means over agreeing entries: 0.45, 0.3, 0, 0.9, -0.7, 0
    got = merge_tensor("ties", vl, reason, base, density=0.5, lam=1.0)
    assert np.allclose(got, [0.45, 0.3, 0.0, 0.9, -0.7, 0.0], atol=1e-6)


def test_dare_is_seeded_unbiased_and_sparse():
    base, vl, reason = _pair(1, (200, 100))
    a = merge_tensor("dare", vl, reason, drop=0.9, lam=1.0, seed=3, name="layers.0.mlp.up_proj.weight")
    b = merge_tensor("dare", vl, reason, drop=0.9, lam=1.0, seed=3, name="layers.0.mlp.up_proj.weight")
    c = merge_tensor("dare", vl, reason, drop=0.9, lam=1.0, seed=3, name="layers.1.mlp.up_proj.weight")
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    kept = (a - vl) != 0
    assert 0.08 < kept.mean() < 0.12
    assert np.allclose((a - vl)[kept], (reason - vl)[kept] / 0.1, rtol=1e-5)
    assert abs((a - vl).sum() - (reason - vl).sum()) < 5 * np.abs(reason - vl).sum() ** 0.5  # E[DARE(τ)] = τ


def test_layer_swap_and_bad_requests():
    _, vl, reason = _pair()
    assert np.array_equal(merge_tensor("layer_swap", vl, reason, layer=3, swap_layers=[3, 4]), reason)
    assert np.array_equal(merge_tensor("layer_swap", vl, reason, layer=2, swap_layers=[3, 4]), vl)
    for m, kw, words in [
        ("soup", {}, "unknown merge method"),
        ("ties", {"density": 0}, "density"),
        ("dare", {"drop": 1.0}, "drop"),
        ("layer_swap", {}, "swap_layers"),
        ("ties", {"drop": 0.5}, "takes"),
    ]:
        with pytest.raises(MergeError, match=words):
            check_params(m, kw)
    with pytest.raises(MergeError, match="shapes differ"):
        merge_tensor("task_arithmetic", vl, reason[:2])


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=50,
    )
    d = tmp_path_factory.mktemp("pair")
    torch.manual_seed(0)
    vl = LlamaForCausalLM(cfg)
    vl.save_pretrained(d / "vl")
    reason = LlamaForCausalLM(cfg)
    with torch.no_grad():
        for p, q in zip(reason.parameters(), vl.parameters()):
            p.copy_(q + 0.05 * torch.randn_like(q))
    reason.save_pretrained(d / "reason")
    return d / "reason", d / "vl", vl


@pytest.mark.parametrize(
    "method,kw",
    [
        ("task_arithmetic", {"lam": 0.5}),
        ("ties", {"density": 0.3}),
        ("dare", {"drop": 0.5}),
        ("layer_swap", {"swap_layers": [1, 2]}),
    ],
)
def test_streamed_file_equals_in_memory_merge_and_restores(tiny_pair, tmp_path, method, kw):
    reason, vl_dir, model = tiny_pair
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    res = merge_checkpoints(reason, vl_dir, tmp_path / "m.safetensors", method, progress=False, **kw)
    assert res.n_tensors == 21 and read_merged_meta(tmp_path / "m.safetensors")["method"] == method
    with merged_weights(model, path=tmp_path / "m.safetensors") as rec:
        from_file = {n: p.detach().clone() for n, p in model.named_parameters()}
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())  # restored exactly
    with merged_weights(model, method=method, reason_dir=reason, vl_dir=vl_dir, **kw) as rec2:
        in_mem = {n: p.detach().clone() for n, p in model.named_parameters()}
    assert all(torch.equal(from_file[n], in_mem[n]) for n in before)
    assert rec["n_tensors"] == rec2["n_tensors"] == 21 and rec["change_norm"] == pytest.approx(
        res.change_norm, rel=1e-5
    )
    assert torch.equal(in_mem["model.embed_tokens.weight"], before["model.embed_tokens.weight"])  # only LM blocks
    if method == "layer_swap":
        assert torch.equal(in_mem["model.layers.0.mlp.up_proj.weight"], before["model.layers.0.mlp.up_proj.weight"])
    with pytest.raises(MergeError, match="not a cotscope merged-weights file"):
        read_merged_meta(reason / "model.safetensors")
