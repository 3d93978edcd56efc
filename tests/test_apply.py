"""Steering helpers on the real SmolLM2: the nnsight helper and the TransformerLens hooks must change the logits
exactly as a plain PyTorch forward hook on ``model.layers[i]`` does."""

import contextlib

import numpy as np
import pytest
import torch

from cotscope.analyses.artifacts import DirectionFileError, DirectionMeta, DirectionSet
from cotscope.probes.apply import Applied, apply, decoder_layers, steering_vectors, tl_hooks

H, N = 576, 30
PROMPTS = ["The capital of France is", "Two plus two equals four because"]


@pytest.fixture(scope="session")
def smol():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cotscope.probes.models.embedded import smollm2_dir

    torch.set_num_threads(2)
    d = smollm2_dir()
    tok = AutoTokenizer.from_pretrained(d)
    tok.padding_side = "left"
    # eager attention: TransformerLens forces eager, so all three paths run the same kernels
    hf = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
    return d, tok, hf


@pytest.fixture(scope="session")
def lm(smol):
    import nnsight

    _, tok, hf = smol
    return nnsight.TransformersModel(hf, tokenizer=tok, task="text-generation")


@pytest.fixture(scope="session")
def bridge(smol):
    """TransformerBridge on its OWN copy of the model (boot_transformers mutates the model it wraps)."""
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoModelForCausalLM

    d, tok, _ = smol
    hf_tl = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    return TransformerBridge.boot_transformers(str(d), hf_model=hf_tl, tokenizer=tok, device="cpu")


@pytest.fixture(scope="session")
def ds():
    rng = np.random.default_rng(0)
    return DirectionSet(
        {l: rng.standard_normal(H).astype(np.float32) for l in (3, 12, 29)},
        DirectionMeta(model_type="llama", n_layers=N),
    )


def enc_of(tok, prompts):
    enc = tok(prompts, return_tensors="pt", padding=True)
    # left padding: give HF the same position ids nnsight derives from the mask (else RoPE differs by ~3e-5)
    enc["position_ids"] = (enc.attention_mask.cumsum(-1) - 1).clamp(min=0)
    return enc


@contextlib.contextmanager
def hf_hooks(hf, vecs: dict, lam: float, positions="all"):
    """The oracle: plain PyTorch forward hooks returning ``output + lam * v`` on ``model.layers[l]``."""

    def make(v):
        v = torch.as_tensor(v)

        def hook(module, args, out):
            delta = torch.zeros_like(out)
            if positions == "all":
                delta[:] = lam * v
            else:
                delta[:, positions] = lam * v
            return out + delta

        return hook

    handles = [hf.model.layers[l].register_forward_hook(make(v)) for l, v in vecs.items()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def hf_logits(hf, enc, vecs=None, lam=0.0, positions="all"):
    with torch.no_grad(), hf_hooks(hf, vecs, lam, positions) if vecs else contextlib.nullcontext():
        return hf(**enc).logits


def nnsight_logits(lm, enc, *args, **kw):
    with torch.no_grad():
        with lm.trace(dict(enc)):
            applied = apply(*args, **kw)
            logits = lm.output.logits.save()
    return logits, applied


def test_nnsight_all_positions_matches_forward_hook(smol, lm, ds):
    _, tok, hf = smol
    enc = enc_of(tok, PROMPTS)
    ref = hf_logits(hf, enc, ds.vectors, 4.0)
    base = hf_logits(hf, enc)
    assert (ref - base).abs().max() > 1.0  # the steering really changes the logits
    logits, applied = nnsight_logits(lm, enc, ds, lm, 4.0)
    assert applied.layers == [3, 12, 29]
    torch.testing.assert_close(logits, ref, atol=1e-5, rtol=0)


def test_nnsight_last_position_layers_and_normalize(smol, lm, ds):
    _, tok, hf = smol
    enc = enc_of(tok, PROMPTS)  # left-padded: -1 is each row's last real token
    v = ds[12] / np.linalg.norm(ds[12])
    ref = hf_logits(hf, enc, {12: v}, 30.0, positions=-1)
    logits, applied = nnsight_logits(lm, enc, ds, lm, 30.0, positions="last", layers=[12], normalize=True)
    assert applied.layers == [12]
    torch.testing.assert_close(logits, ref, atol=1e-5, rtol=0)
    base = hf_logits(hf, enc)
    real = enc.attention_mask[:, :-1].bool()  # (padded rows attend to everything; skip them)
    torch.testing.assert_close(logits[:, :-1][real], base[:, :-1][real], atol=1e-5, rtol=0)  # earlier tokens untouched
    assert (logits[:, -1] - base[:, -1]).abs().max() > 0.1


def test_nnsight_bare_vector_negative_layer_and_context_form(smol, lm, ds):
    _, tok, hf = smol
    enc = enc_of(tok, PROMPTS[:1])
    ref = hf_logits(hf, enc, {29: ds[29]}, -2.0, positions=[1, 2])
    with torch.no_grad():
        with lm.trace(dict(enc)):
            with apply(ds[29], lm, -2.0, positions=[1, 2], layers=[-1]) as applied:
                pass
            logits = lm.output.logits.save()
    assert isinstance(applied, Applied) and applied.layers == [29]
    torch.testing.assert_close(logits, ref, atol=1e-5, rtol=0)


def test_tl_hooks_match_forward_hook(smol, bridge, ds):
    _, tok, hf = smol
    enc = enc_of(tok, PROMPTS[:1])
    ref = hf_logits(hf, enc, ds.vectors, 4.0)
    hooks = tl_hooks(ds, 4.0, model=bridge)
    assert [n for n, _ in hooks] == ["blocks.3.hook_out", "blocks.12.hook_out", "blocks.29.hook_out"]
    with torch.no_grad():
        logits = bridge.run_with_hooks(enc.input_ids, fwd_hooks=hooks)
        base = bridge(enc.input_ids)
    torch.testing.assert_close(base, hf_logits(hf, enc), atol=1e-4, rtol=0)  # same model without steering
    torch.testing.assert_close(logits, ref, atol=1e-4, rtol=0)

    ref_last = hf_logits(hf, enc, {12: ds[12]}, 8.0, positions=-1)
    with torch.no_grad():
        logits = bridge.run_with_hooks(
            enc.input_ids, fwd_hooks=tl_hooks(ds, 8.0, layers=[-18], positions="last", model=bridge)
        )
    torch.testing.assert_close(logits, ref_last, atol=1e-4, rtol=0)


def test_tl_hook_out_is_block_output(smol, bridge):
    """``blocks.{l}.hook_out`` sees exactly HF ``hidden_states[l + 1]`` (the output of ``model.layers[l]``)."""
    _, tok, hf = smol
    enc = enc_of(tok, PROMPTS[:1])
    with torch.no_grad():
        _, cache = bridge.run_with_cache(enc.input_ids, names_filter=["blocks.0.hook_out", "blocks.17.hook_out"])
        hs = hf(**enc, output_hidden_states=True).hidden_states
    torch.testing.assert_close(cache["blocks.0.hook_out"], hs[1], atol=1e-4, rtol=0)
    torch.testing.assert_close(cache["blocks.17.hook_out"], hs[18], atol=1e-4, rtol=0)


def test_bad_inputs_get_clear_errors(smol, lm, bridge, ds):
    with pytest.raises(DirectionFileError, match="hidden-size mismatch.*64 dims.*576"):
        apply(np.ones(64), lm, 1.0, layers=[3])  # caught before the trace runs
    with pytest.raises(DirectionFileError, match="hidden-size mismatch.*64 dims.*576"):
        tl_hooks(np.ones(64), 1.0, layers=[3], model=bridge)
    with pytest.raises(DirectionFileError, match=r"out of range.*0\.\.29"):
        tl_hooks(np.ones(H), 1.0, layers=[30], model=bridge)
    with pytest.raises(DirectionFileError, match="needs layers="):
        apply(np.ones(H), lm, 1.0)
    with pytest.raises(DirectionFileError, match="not in this direction set"):
        steering_vectors(ds, layers=[5])
    with pytest.raises(DirectionFileError, match="all zeros"):
        steering_vectors(np.zeros(H), layers=[1], normalize=True)
    with pytest.raises(DirectionFileError, match="pass the model"):
        tl_hooks(np.ones(H), 1.0, layers=[-1])
    with pytest.raises(ValueError, match="positions='first'"):
        tl_hooks(np.ones(H), 1.0, layers=[1], positions="first")
    with pytest.raises(ValueError, match="positions=2.5"):
        apply(np.ones(H), lm, 1.0, layers=[1], positions=2.5)
    ((_, fn),) = tl_hooks(np.ones(H), 1.0, layers=[1], positions=[7])
    with pytest.raises(ValueError, match="out of range for a sequence of length 4"):
        fn(torch.zeros(1, 4, H))
    with pytest.raises(ValueError, match="layers_path"):
        decoder_layers(torch.nn.Linear(2, 2))


def test_steering_vectors_shapes():
    m = np.arange(3 * 4, dtype=np.float32).reshape(3, 4)
    out = steering_vectors(m, n_layers=3)
    assert list(out) == [0, 1, 2] and np.array_equal(out[2], m[2])
    assert list(steering_vectors(torch.ones(4), layers=[-1, 0], n_layers=3)) == [0, 2]
    with pytest.raises(DirectionFileError, match="one row per block"):
        steering_vectors(m, n_layers=5)
