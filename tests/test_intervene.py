"""Injection during generation: equality with a plain forward-hook reference, norm preservation, λ=0,
spectral preparation, controls, and bad input refused before any generation.

Real models only: the embedded SmolLM2 (short generations) and tiny random VLMs of every family.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from cotscope.analyses import spectral
from cotscope.analyses.artifacts import DirectionFileError, DirectionMeta, DirectionSet
from cotscope.probes.collect import encode_batch
from cotscope.probes.evaluate import forced_answer
from cotscope.probes.intervene import (
    BudgetDecoder,
    InjectionError,
    RowSteer,
    build_controls,
    generate_steered,
    inject_generate,
    normalize_positions,
    prepare_vector,
    random_like,
    source_layer,
    steer_hidden,
)
from cotscope.probes.models.loading import wrap_model

D = 576
N_NEW = 5
SHORT = " {answer}"  # a short forced answer keeps the tests fast


def chat(lm, text: str) -> str:
    return lm.tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
    )


@pytest.fixture(scope="module")
def vecs():
    rng = np.random.default_rng(0)
    return {l: (rng.standard_normal(D) * 4).astype(np.float32) for l in (8, 10, 20)}


@pytest.fixture(scope="module")
def prompts(smollm2):
    # two prompts of different lengths: the batch is left-padded, which the "first" rule must respect
    return [chat(smollm2, "What is 12 + 7? Answer directly."), chat(smollm2, "Name a colour.")]


def reference_generate(lm, texts, rows, positions, n_new, images=None):
    """An independent reference: plain PyTorch forward hooks on the HF model + ``hf.generate``."""
    positions = normalize_positions(positions)
    enc = encode_batch(lm, texts, images)
    am = enc["attention_mask"]
    T, lens = am.shape[1], am.sum(1)
    handles, calls = [], {}
    for l in sorted({l for s in rows for l in s.vectors}):
        add = torch.stack(
            [
                torch.as_tensor(s.lam * np.asarray(s.vectors[l])) if l in s.vectors else torch.zeros(lm.hidden_size)
                for s in rows
            ]
        ).float()
        on = [l in s.vectors for s in rows]

        def hook(mod, args, out, l=l, add=add, on=on):
            k = calls.get(l, 0)
            calls[l] = k + 1
            hid = out[0] if isinstance(out, tuple) else out
            mask = torch.zeros(hid.shape[:2], dtype=torch.bool)
            for b in range(hid.shape[0]):
                if not on[b]:
                    continue
                if k == 0:  # the prompt pass
                    if "first" in positions:
                        mask[b, T - int(lens[b])] = True
                    if "last_prompt" in positions:
                        mask[b, -1] = True
                    if "prompt" in positions:
                        mask[b, T - int(lens[b]) :] = True
                elif "first" in positions or "generated" in positions:
                    mask[b, :] = True
            rest = None
            if isinstance(out, tuple):  # older-style blocks (Chameleon) return (hidden, ...)
                out, rest = out[0], out[1:]
            new = out + add[:, None, :]
            new = new * (out.norm(dim=-1, keepdim=True) / new.norm(dim=-1, keepdim=True))
            new = torch.where(mask[..., None], new, out)
            return new if rest is None else (new, *rest)

        handles.append(lm.layers()[l].register_forward_hook(hook))
    try:
        with torch.no_grad():
            out = lm.hf.generate(**enc, max_new_tokens=n_new, do_sample=False)
    finally:
        for h in handles:
            h.remove()
    eos = lm.tokenizer.eos_token_id
    return [[t for t in row[T:].tolist() if t != eos] for row in out]


@pytest.mark.parametrize("positions", ["first", ("last_prompt", "generated")])
def test_nnsight_injection_equals_forward_hook(smollm2, prompts, vecs, positions):
    rows = [
        RowSteer.none(),
        RowSteer({8: vecs[8]}, 4.0),
        RowSteer({8: vecs[8], 10: vecs[10]}, 2.0),
        RowSteer({20: vecs[20]}, 6.0),
    ]
    texts = [prompts[0], prompts[0], prompts[1], prompts[1]]
    got = generate_steered(smollm2, texts, rows, positions=positions, budget=N_NEW, share_prefix=False)
    ref = reference_generate(smollm2, texts, rows, positions, N_NEW)
    assert [r.token_ids for r in got] == ref
    # the injection did something: steered rows differ from the unsteered row of the same prompt
    assert got[1].token_ids != got[0].token_ids


def test_shared_prefix_gives_the_same_tokens(smollm2, prompts, vecs):
    rows = [RowSteer.none(), RowSteer({10: vecs[10]}, 4.0), RowSteer.none(), RowSteer({10: vecs[10]}, 4.0)]
    texts = [prompts[0], prompts[0], prompts[1], prompts[1]]
    fa = [forced_answer(smollm2.tokenizer, 19, SHORT)] * 2 + [forced_answer(smollm2.tokenizer, 3, SHORT)] * 2
    kw = dict(positions="generated", budget=3, forced=fa)
    shared = generate_steered(smollm2, texts, rows, share_prefix=True, **kw)
    plain = generate_steered(smollm2, texts, rows, share_prefix=False, **kw)
    assert [r.token_ids for r in shared] == [r.token_ids for r in plain]
    np.testing.assert_allclose([r.gold_logprob for r in shared], [r.gold_logprob for r in plain], atol=2e-3)
    with pytest.raises(InjectionError, match="share_prefix=True"):
        generate_steered(smollm2, texts, rows, positions="first", budget=1, share_prefix=True)


def test_steer_hidden_with_zero_vector_is_bitwise_identity():
    """One code path: h + 0 = h and ‖h‖/‖h‖ = 1 exactly in IEEE arithmetic, so λ = 0 returns h bit for bit."""
    g = torch.Generator().manual_seed(0)
    h = torch.randn(2, 7, D, generator=g)
    mask = torch.ones(2, 7, dtype=torch.bool)
    for renorm in (True, False):
        assert torch.equal(steer_hidden(h, torch.zeros(2, D), mask, renorm), h)


def _fp32_noise_floor(a: float, b: float) -> float:
    """Tolerance for one log-probability compared across two code paths.

    The reference noise is measured in the same run: two identical prompts in rows 0 and 1 of one plain
    batch differ only because float32 sums are blocked differently per batch row (2.3e-7 on a logprob
    of 0.82 with torch 2.13's CPU kernels). A different code path may reorder sums the same way, so
    allow 8x that, with a floor of 64 float32 ulps of the value for when the two rows happen to agree.
    """
    measured = abs(a - b)
    ulp = float(np.spacing(np.float32(max(abs(a), abs(b), 1.0))))
    return max(8 * measured, 64 * ulp)


def test_lam_zero_matches_plain_generation(smollm2, prompts, vecs):
    """Across two code paths (steering hooks with λ = 0 vs plain generate): same tokens, logprobs within
    the float32 noise floor measured between batch rows (see ``_fp32_noise_floor``)."""
    fa = forced_answer(smollm2.tokenizer, 19, SHORT)
    zero = RowSteer({8: vecs[8], 20: vecs[20]}, 0.0)
    steered = generate_steered(smollm2, [prompts[0]] * 2, [RowSteer.none(), zero], budget=4, forced=[fa, fa])
    plain = generate_steered(smollm2, [prompts[0]] * 2, [None, None], budget=4, forced=[fa, fa])
    tol_free = _fp32_noise_floor(plain[0].logprob, plain[1].logprob)
    tol_gold = _fp32_noise_floor(plain[0].gold_logprob, plain[1].gold_logprob)
    for a, b in zip(steered, plain):  # row i against row i: same batch position
        assert a.token_ids == b.token_ids
        assert abs(a.logprob - b.logprob) <= tol_free
        assert abs(a.gold_logprob - b.gold_logprob) <= tol_gold
        np.testing.assert_allclose(a.forced_logprobs, b.forced_logprobs, rtol=0, atol=tol_gold)


def test_steered_generation_is_deterministic(smollm2, prompts, vecs):
    """One code path run twice: bit for bit equal."""
    fa = forced_answer(smollm2.tokenizer, 19, SHORT)
    rows = [RowSteer({8: vecs[8]}, 0.5), RowSteer({20: vecs[20]}, 1.0)]
    a = generate_steered(smollm2, prompts, rows, budget=4, forced=[fa, fa])
    b = generate_steered(smollm2, prompts, rows, budget=4, forced=[fa, fa])
    for x, y in zip(a, b):
        assert (x.token_ids, x.logprob, x.forced_logprobs, x.gold_logprob) == (
            y.token_ids,
            y.logprob,
            y.forced_logprobs,
            y.gold_logprob,
        )


def _capture_next_layer_input(lm, layer):
    seen = []

    def pre(mod, args, kwargs):
        h = args[0] if args else kwargs["hidden_states"]
        if not seen:
            seen.append(h.detach().clone())

    return seen, lm.layers()[layer + 1].register_forward_pre_hook(pre, with_kwargs=True)


@pytest.mark.parametrize("renorm", [True, False])
def test_norm_preserved_when_requested(smollm2, prompts, vecs, renorm):
    L = 10
    enc = encode_batch(smollm2, [prompts[0]])
    with torch.no_grad():
        h_all = smollm2.hf(**enc, output_hidden_states=True).hidden_states[L + 1][0]
    h_plain = h_all[-1]
    seen, handle = _capture_next_layer_input(smollm2, L)
    try:
        generate_steered(
            smollm2,
            [prompts[0]],
            [RowSteer({L: vecs[L]}, 8.0)],
            positions="last_prompt",
            budget=1,
            renorm=renorm,
            share_prefix=False,
        )
    finally:
        handle.remove()
    h_steered = seen[0][0, -1]
    assert not torch.allclose(h_steered, h_plain)  # the vector was added
    torch.testing.assert_close(seen[0][0, :-1], h_all[:-1])  # other positions untouched
    ratio = float(h_steered.norm() / h_plain.norm())
    if renorm:
        assert abs(ratio - 1) < 1e-5
    else:
        assert abs(ratio - 1) > 1e-3


def test_steer_hidden_formula_and_mask():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(2, 5, 16, generator=g) * 3
    add = torch.randn(2, 16, generator=g)
    mask = torch.zeros(2, 5, dtype=torch.bool)
    mask[0, 1] = mask[1, 4] = True
    out = steer_hidden(h, add, mask, renorm=True)
    torch.testing.assert_close(out.norm(dim=-1), h.norm(dim=-1))
    assert torch.equal(out[~mask], h[~mask])  # untouched tokens are bit-identical
    expect = (h[0, 1] + add[0]) * h[0, 1].norm() / (h[0, 1] + add[0]).norm()
    torch.testing.assert_close(out[0, 1], expect)
    raw = steer_hidden(h, add, mask, renorm=False)
    torch.testing.assert_close(raw[1, 4], h[1, 4] + add[1])


# --------------------------------------------------------------------------------- vectors and controls
def test_resample_plus_lowpass_at_full_cutoff_is_lossless():
    v = np.random.default_rng(1).standard_normal(D)
    np.testing.assert_allclose(spectral.resample(v, D), v, rtol=0, atol=1e-12)
    np.testing.assert_allclose(spectral.lowpass(spectral.resample(v, D), 1.0), v, rtol=0, atol=1e-12)
    np.testing.assert_allclose(prepare_vector(v, D, resample=True, filter="lowpass", cutoff=1.0), v, atol=1e-5)
    # up then down again keeps every original frequency
    np.testing.assert_allclose(spectral.resample(spectral.resample(v, 2 * D), D), v, atol=1e-10)
    assert prepare_vector(v, 960).shape == (960,)
    assert abs(np.linalg.norm(prepare_vector(v, 960)) - np.linalg.norm(v)) < 1e-3


def test_controls(vecs):
    ds = DirectionSet({8: vecs[8], 20: vecs[20]}, DirectionMeta(model_id="src", n_layers=30))
    iv = build_controls(
        ds,
        (D, 30),
        [8, 20],
        controls=("real", "unfiltered", "highpass", "random", "none"),
        filter="lowpass",
        cutoff=0.1,
        seed=3,
    )
    for l in (8, 20):
        real, hp, un = iv.vectors["real"][l], iv.vectors["highpass"][l], iv.vectors["unfiltered"][l]
        np.testing.assert_allclose(real + hp, un, atol=1e-5)  # low + high = unfiltered
        np.testing.assert_allclose(un, vecs[l], atol=1e-6)
        assert abs(np.linalg.norm(iv.vectors["random"][l]) - np.linalg.norm(real)) < 1e-3
        assert abs(np.dot(iv.vectors["random"][l], real)) / np.linalg.norm(real) ** 2 < 0.3
    again = build_controls(ds, (D, 30), [8], controls=("random",), cutoff=0.1, seed=3)
    assert np.array_equal(again.vectors["random"][8], iv.vectors["random"][8])  # seeded
    assert not np.array_equal(random_like(vecs[8], 4, 8), iv.vectors["random"][8])
    own = {8: vecs[20]}
    iv2 = build_controls(ds, (D, 30), [8], controls=("own_lowpass",), cutoff=0.1, own=own)
    np.testing.assert_allclose(iv2.vectors["own_lowpass"][8], spectral.lowpass(vecs[20], 0.1), atol=1e-5)


def test_relative_layer_map_and_single_layer_files():
    assert source_layer(59, [29], 30, 60) == 29  # one layer feeds every target layer
    assert source_layer(40, [10, 20], 30, 60, "relative") == 20
    with pytest.raises(InjectionError, match="has layers"):
        source_layer(40, [10, 12], 30, 60, "relative")


# --------------------------------------------------------------------------------- bad input, before generation
@pytest.fixture
def no_generation(smollm2, monkeypatch):
    def tripwire(*a, **k):
        raise AssertionError("generation started before the bad input was refused")

    monkeypatch.setattr(smollm2.hf, "generate", tripwire)
    monkeypatch.setattr(smollm2.hf, "forward", tripwire)
    return smollm2


@pytest.mark.parametrize("lam", [float("nan"), float("inf"), "abc"])
def test_nonfinite_lambda_refused(no_generation, prompts, vecs, lam):
    with pytest.raises(InjectionError, match="finite|not a number"):
        generate_steered(no_generation, [prompts[0]], [RowSteer({8: vecs[8]}, lam)], budget=2)


def test_bad_directions_refused(no_generation, prompts, vecs):
    lm = no_generation
    bad = vecs[8].copy()
    bad[3] = np.nan
    with pytest.raises(InjectionError, match="NaN"):
        generate_steered(lm, [prompts[0]], [RowSteer({8: bad}, 1.0)], budget=2)
    with pytest.raises(InjectionError, match="all zeros"):
        inject_generate(lm, [prompts[0]], np.zeros(D), [8], 0.5, budget=2)
    with pytest.raises(ValueError, match="out of range"):
        inject_generate(lm, [prompts[0]], vecs[8], [30], 0.5, budget=2)
    with pytest.raises(ValueError, match="out of range"):
        generate_steered(lm, [prompts[0]], [RowSteer({-31: vecs[8]}, 1.0)], budget=2)
    with pytest.raises(DirectionFileError, match="hidden-size mismatch"):
        inject_generate(lm, [prompts[0]], np.ones(960), [8], 0.5, resample=False, budget=2)
    with pytest.raises(DirectionFileError, match="hidden-size mismatch"):
        generate_steered(lm, [prompts[0]], [RowSteer({8: np.ones(960, np.float32)}, 1.0)], budget=2)
    with pytest.raises(InjectionError, match="unknown injection position"):
        generate_steered(lm, [prompts[0]], [None], positions="middle", budget=2)
    with pytest.raises(InjectionError, match="one RowSteer"):
        generate_steered(lm, prompts, [None], budget=2)
    with pytest.raises(InjectionError, match="high|all zeros"):
        prepare_vector(np.ones(D), D, filter="highpass", cutoff=0.1)  # a constant has no high-pass part


def test_budget_decoder_budget_eos_and_forcing():
    V = 10
    fa = type("FA", (), {"ids": (7, 8), "gold_mask": (False, True)})()
    dec = BudgetDecoder(2, budget=2, eos_ids=[0], forced=[fa, None])
    ids = torch.zeros(2, 1, dtype=torch.long)
    steps = [
        torch.tensor([[0, 5, 1, 0, 0, 0, 0, 0, 0, 0.0]] * 2),  # both pick 1
        torch.tensor([[9, 0, 0, 0, 0, 0, 0, 0, 0, 0.0], [0, 0, 0, 0, 0, 9, 0, 0, 0, 0.0]]),  # row0 EOS, row1 5
        torch.tensor([[0.0] * V, [0, 0, 0, 9, 0, 0, 0, 0, 0, 0.0]]),
        torch.zeros(2, V),
        torch.zeros(2, V),
    ]
    chosen = [dec(ids, s).argmax(-1).tolist() for s in steps]
    assert chosen[0] == [1, 1]
    assert chosen[1] == [7, 5]  # row 0 wanted EOS → forced answer starts; row 1 continues
    assert chosen[2] == [8, 0]  # row 1 hit its budget of 2 (wanted 3, not EOS) → cut, EOS emitted
    assert chosen[3] == [0, 0]
    res = dec.results(type("T", (), {"decode": staticmethod(lambda t, skip_special_tokens=True: str(t))})())
    assert res[0].token_ids == [1] and res[0].stopped and res[0].n_tokens == 1
    assert res[1].token_ids == [1, 5] and not res[1].stopped
    assert res[0].gold_logprob == pytest.approx(-np.log(V))  # uniform scores at the forced step
    assert res[0].answer_logprob == pytest.approx(float(torch.log_softmax(steps[1][0], -1)[7]) - np.log(V))
    assert res[1].gold_logprob is None


# --------------------------------------------------------------------------------- VLMs
VLM_FAST = ("llava", "qwen2_vl", "idefics3")


def _vlm_case(family):
    from tiny_vlms import sample_image, tiny_vlm

    vlm = tiny_vlm(family)
    lm = wrap_model(vlm.model, processor=vlm.processor, model_id=f"tiny-{family}")
    rng = np.random.default_rng(0)
    v = (rng.standard_normal(lm.hidden_size) * 4).astype(np.float32)
    rows = [RowSteer.none(), RowSteer({1: v}, 2.0), RowSteer({1: v, 2: v}, 1.0)]
    return lm, vlm.prompt(), sample_image(), rows


@pytest.mark.parametrize(
    "family",
    [pytest.param(f, marks=() if f in VLM_FAST else pytest.mark.slow) for f in __import__("tiny_vlms").FAMILIES],
)
def test_vlm_injection_with_image_equals_forward_hook(family):
    lm, prompt, img, rows = _vlm_case(family)
    for positions in ("first", "prompt"):
        got = generate_steered(lm, [prompt] * 3, rows, images=[img] * 3, positions=positions, budget=4)
        ref = reference_generate(lm, [prompt] * 3, rows, positions, 4, images=[img] * 3)
        assert [r.token_ids for r in got] == ref
    assert got[1].token_ids != got[0].token_ids


def test_vlm_resampled_direction_from_a_wider_model():
    lm, prompt, img, _ = _vlm_case("llava")
    v576 = np.random.default_rng(2).standard_normal(D)
    out = inject_generate(lm, [prompt], v576, [1], 0.9, images=[img], budget=3, filter="lowpass", cutoff=0.5)
    assert out[0].n_tokens <= 3
    with pytest.raises(DirectionFileError, match="resampl"):
        inject_generate(lm, [prompt], v576, [1], 0.9, images=[img], budget=3, resample=False)
