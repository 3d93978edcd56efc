"""Device maps and dtypes: tensors that touch a layer's output are made on that layer's device and in its dtype.

No GPU here, so the placement code is exercised with accelerate's disk offload: the upper blocks are offloaded
(their parameters sit on ``meta``; accelerate hooks run them on the CPU), so a layer's own parameters do not say
where it runs; cotscope asks each layer for its execution device, and a spy checks it asks *each* requested layer. bf16 and fp16 models run collection, injection and attention end to end
and stay within the tolerances derived in :mod:`probes.precision` of the float32 model.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cotscope.probes import intervene
from cotscope.probes.apply import apply
from cotscope.probes.attention import CaptureRequest, capture_batch
from cotscope.probes.collect import collect_pairs
from cotscope.probes.evaluate import forced_answer
from cotscope.probes.intervene import RowSteer, generate_steered
from cotscope.probes.models.loading import LoadedModel, ModelLoadError, load_model
from cotscope.probes.precision import attention_tolerance, logprob_tolerance, residual_tolerance
from cotscope.probes.stimuli import generate_problems, make_pairs

LAYERS = [3, 22]  # one block in memory, one offloaded to disk


@pytest.fixture(scope="module")
def pairs():
    return make_pairs(generate_problems(2, seed=7), "cue")


@pytest.fixture(scope="module")
def offloaded(tmp_path_factory):
    dm = {"model.embed_tokens": "cpu", "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"}
    dm.update({f"model.layers.{i}": "cpu" if i < 20 else "disk" for i in range(30)})
    return load_model("embedded:smollm2", device_map=dm, offload_folder=str(tmp_path_factory.mktemp("offload")))


def _chat(lm, text):
    return lm.tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
    )


def _vec(d, seed=0):
    return (np.random.default_rng(seed).standard_normal(d) * 4).astype(np.float32)


def test_offloaded_layers_report_their_execution_device(offloaded, tmp_path):
    assert next(offloaded.layers()[22].parameters()).device.type == "meta"
    assert offloaded.layer_device(22) == torch.device("cpu")  # accelerate's execution device
    assert offloaded.layer_device(3) == torch.device("cpu")
    assert offloaded.device == torch.device("cpu")  # inputs go to the embedding's device
    assert offloaded.layer_dtype(22) == torch.float32
    # an offloaded *embedding* cannot work with nnsight 0.8 (it moves inputs to the first parameter's device): refused
    dm = {
        "model.embed_tokens": "disk",
        "lm_head": "disk",
        "model.layers": "cpu",
        "model.norm": "cpu",
        "model.rotary_emb": "cpu",
    }
    emb_off = load_model("embedded:smollm2", device_map=dm, offload_folder=str(tmp_path))
    assert emb_off.device == torch.device("cpu")  # inputs belong on the embedding's execution device
    with pytest.raises(ModelLoadError, match="input embedding"):
        emb_off.nnsight


def test_offloaded_model_collects_injects_and_captures_like_the_plain_one(smollm2, offloaded, pairs, tmp_path):
    kw = dict(layers=LAYERS, positions=("last_prompt", "answer_mean"), batch_size=4, progress=False)
    a = collect_pairs(smollm2, pairs, tmp_path / "plain", **kw)
    b = collect_pairs(offloaded, pairs, tmp_path / "offloaded", **kw)
    for p in kw["positions"]:
        for l in LAYERS:
            assert np.array_equal(a.get(p, l), b.get(p, l))
    prompts = [_chat(smollm2, "What is 12 + 7?")] * 2
    rows = [RowSteer.none(), RowSteer({22: _vec(576)}, 4.0)]
    x = generate_steered(smollm2, prompts, rows, budget=3, share_prefix=False)
    y = generate_steered(offloaded, prompts, rows, budget=3, share_prefix=False)
    assert [(r.token_ids, r.logprob) for r in x] == [(r.token_ids, r.logprob) for r in y]
    assert x[0].logprob != x[1].logprob  # the offloaded layer 22 was steered
    # apply() inside a user's trace: the steering term is made from the block output itself (its device, dtype)
    enc = dict(smollm2.tokenizer(["The answer is"], return_tensors="pt"))
    got = []
    for lm in (smollm2, offloaded):
        with torch.no_grad():
            with lm.nnsight.trace(enc):
                apply(_vec(576), lm.nnsight, 4.0, positions="last", layers=[22])
                last = lm.nnsight.output.logits[:, -1].save()
        got.append(last)
    assert torch.equal(got[0], got[1])
    req = [CaptureRequest("q", "What is 12 + 7?")]
    ra = capture_batch(smollm2, req, layers=LAYERS, max_new_tokens=2)[0]["tensors"]["rows"]
    rb = capture_batch(offloaded, req, layers=LAYERS, max_new_tokens=2)[0]["tensors"]["rows"]
    assert np.array_equal(ra, rb)


def test_each_layer_is_asked_for_its_device(smollm2, pairs, tmp_path, monkeypatch):
    asked: list[int] = []
    real = LoadedModel.layer_device

    def spy(self, i):
        asked.append(int(i))
        return real(self, i)

    monkeypatch.setattr(LoadedModel, "layer_device", spy)
    collect_pairs(smollm2, pairs[:1], tmp_path / "s", layers=[2, 5], positions=("last_prompt",), progress=False)
    assert sorted(set(asked)) == [2, 5]
    asked.clear()
    rows = [RowSteer({4: _vec(576)}, 1.0), RowSteer({9: _vec(576, 1)}, 1.0)]
    generate_steered(smollm2, [_chat(smollm2, "Hi")] * 2, rows, budget=1)
    assert sorted(set(asked)) == [4, 9]


PREC_LAYERS = [0, 10, 29]


@pytest.fixture(scope="module")
def float32_reference(smollm2, pairs, tmp_path_factory):
    """Collection, teacher-forced log-probs under injection, and attention rows of the float32 model."""
    kw = dict(layers=PREC_LAYERS, positions=("last_prompt", "answer_mean"), batch_size=4, progress=False)
    store = collect_pairs(smollm2, pairs[:1], tmp_path_factory.mktemp("f32") / "s", **kw)
    gen = _generate(smollm2, _inject_case(smollm2))
    rows = capture_batch(smollm2, [CaptureRequest("q", "What is 12 + 7?")], layers=[0, 29], max_new_tokens=1)[0][
        "tensors"
    ]["rows"]
    return kw, store, gen, rows


def _inject_case(lm):
    prompts = [_chat(lm, "What is 12 + 7? Answer directly.")] * 2
    rows = [RowSteer.none(), RowSteer({10: _vec(576)}, 4.0)]
    fa = [forced_answer(lm.tokenizer, 19, " {answer}.")] * 2
    return prompts, rows, 0, fa, None, ("last_prompt", "generated")


def _generate(lm, case):
    prompts, rows, budget, fa, _, positions = case
    return generate_steered(lm, prompts, rows, budget=budget, forced=fa, positions=positions, share_prefix=False)


@pytest.mark.parametrize("dtype", ["bfloat16", pytest.param("float16", marks=pytest.mark.slow)])  # CPU fp16 is slow
def test_reduced_precision_end_to_end(pairs, float32_reference, tmp_path, monkeypatch, dtype):
    kw, ref, want, ra = float32_reference
    lm = load_model("embedded:smollm2", dtype=dtype)
    td = getattr(torch, dtype)
    assert lm.dtype == td and lm.layer_dtype(10) == td
    # collection: summaries are taken in float32 and stay within the derived tolerance of the float32 model
    low = collect_pairs(lm, pairs[:1], tmp_path / dtype, **kw)
    for p in kw["positions"]:
        for l in PREC_LAYERS:
            a, b = ref.get(p, l), low.get(p, l)
            assert b.dtype == np.float32 and np.isfinite(b).all()
            rel = np.linalg.norm(a - b, axis=1) / np.linalg.norm(a, axis=1)
            assert rel.max() <= residual_tolerance(dtype, l), (p, l, rel.max())
    # injection: the steering term is added in the layer's dtype, on its device; forced log-probs within tolerance
    seen = []
    real_steer = intervene.steer

    def spy(h, add, mask, renorm=True):
        seen.append((h.dtype, add.dtype, add.device))
        return real_steer(h, add, mask, renorm)

    monkeypatch.setattr(intervene, "steer", spy)
    got = _generate(lm, _inject_case(lm))
    assert seen and all(s == (td, td, torch.device("cpu")) for s in seen)
    for g, w in zip(got, want):
        for lg, lw in zip(g.forced_logprobs, w.forced_logprobs):
            assert abs(lg - lw) <= logprob_tolerance(dtype, 30, lw)
    # attention capture: rows are probabilities (sum 1) and within the derived total-variation bound
    rb = capture_batch(lm, [CaptureRequest("q", "What is 12 + 7?")], layers=[0, 29], max_new_tokens=1)[0]["tensors"][
        "rows"
    ]
    np.testing.assert_allclose(rb.sum(-1), 1.0, atol=1e-2)
    for k, l in enumerate([0, 29]):
        assert 0.5 * np.abs(ra[k] - rb[k]).sum(-1).max() <= attention_tolerance(dtype, l)


def test_injector_places_tensors_per_layer():
    """With a per-layer placement (device, dtype), each layer's additive tensor and masks follow it; unknown
    placement (remote) keeps float32 on the CPU for the trace to move."""
    am = torch.ones(2, 5, dtype=torch.long)
    rows = [RowSteer({1: _vec(8), 3: _vec(8, 1)}, 1.0), RowSteer.none()]
    inj = intervene._Injector(
        rows,
        am,
        5,
        ("first",),
        True,
        {1: (torch.device("cpu"), torch.bfloat16), 3: (torch.device("cpu"), torch.float16)},
    )
    assert inj.add[1].dtype == torch.bfloat16 and inj.add[3].dtype == torch.float16
    remote = intervene._Injector(rows, am, 5, ("first",), True, {})
    assert remote.add[1].dtype == torch.float32 and remote.add[1].device.type == "cpu"
    assert torch.equal(remote.masks[1][0], inj.masks[1][0])
