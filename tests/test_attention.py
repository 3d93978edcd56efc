"""Attention capture (probes.attention) against HF ``output_attentions`` on tiny random VLMs of several families.

Per family the model runs **sdpa** everywhere except the captured layers, which cotscope switches to eager; the
reference is a full-eager teacher-forced forward of the same tokens with ``output_attentions=True``. R and F
computed by the tool (stored run → analyses.attention_shift) must equal R and F computed here directly from the
HF weights. Then: batching, switch modes, what is (not) held, restoration, key types, the run store, bad input.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_vlms import build_tiny_vlm, sample_image

from cotscope.analyses.attention_shift import token_metrics
from cotscope.analyses.attention_store import IMAGE, QUESTION, AttentionRun, AttentionStoreError
from cotscope.probes.attention import (
    AttentionCaptureError,
    CaptureRequest,
    EagerAttentionUnavailable,
    _module_eager,
    additive_mask,
    capture_batch,
    capture_run,
    recording,
)
from cotscope.probes.models.loading import wrap_model

torch.set_num_threads(2)
FAMILIES = ("llava", "qwen2_vl", "idefics3", "gemma3", "idefics2")
LAYERS, HEADS = [1, 3], [0, 2, 3]
QUESTION_TEXT = "What is in this picture?"
PROMPT = QUESTION_TEXT + "\nLet's think step by step."


@pytest.fixture(scope="module", params=FAMILIES)
def sdpa_vlm(request):
    """A fresh tiny VLM of ``family`` running sdpa (its own copy: the tests switch implementations)."""
    v = build_tiny_vlm(request.param)
    v.model.set_attn_implementation("sdpa")
    return v


def _hf_reference(v, lm, record, tensors, image):
    """Full-eager teacher-forced forward over prompt + generated tokens (the last generated token is not a query)."""
    from cotscope.probes.collect import encode_batch

    enc = dict(encode_batch(lm, [record["prompt_text"]], [image]))
    ids = torch.as_tensor(tensors["token_ids"])[None]
    n = record["n_steps"]
    P = record["prompt_len"]
    full = ids[:, : P + n - 1] if n else ids
    assert torch.equal(full[:, :P], enc["input_ids"])
    enc["input_ids"] = full
    enc["attention_mask"] = torch.ones_like(full)
    for key in ("mm_token_type_ids", "token_type_ids"):  # generated tokens are text
        if key in enc:
            enc[key] = torch.cat([enc[key], torch.zeros(1, full.shape[1] - enc[key].shape[1], dtype=enc[key].dtype)], 1)
    v.model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            out = v.model(**enc, output_attentions=True)
    finally:
        v.model.set_attn_implementation("sdpa")
    return [a[0].numpy() for a in out.attentions]


def test_R_F_equal_hf_output_attentions(sdpa_vlm, tmp_path):
    v = sdpa_vlm
    lm = wrap_model(v.model, processor=v.processor)
    img = sample_image()
    run = capture_run(
        lm,
        [CaptureRequest("a", PROMPT, image=img, question=QUESTION_TEXT, condition="cot")],
        tmp_path / "run",
        layers=LAYERS,
        heads=HEADS,
        max_new_tokens=5,
        min_new_tokens=5,
        progress=False,
    )
    tr = run.trace(0)
    assert tr.n_steps == 5 and tr.layers == LAYERS and tr.heads == HEADS
    att = _hf_reference(v, lm, tr.record, {"token_ids": tr.token_ids}, img)
    P = tr.prompt_len
    img_mask = lm.adapter.image_token_mask(torch.as_tensor(tr.token_ids), lm.config).numpy()
    assert img_mask[:P].sum() > 0 and (tr.key_types[:P] == IMAGE).sum() == img_mask[:P].sum()
    tm = token_metrics(tr)
    tm_img = token_metrics(tr, entropy_over="image", eps=1e-4)
    tm_sub = token_metrics(tr, layers=[3], heads=[2])
    for s in range(tr.n_steps):
        ref = np.stack([att[l][HEADS, P - 1 + s, : P + s] for l in LAYERS])  # [L, h, K]
        np.testing.assert_allclose(tr.step_row(s), ref, atol=2e-6)
        for metrics, row, over, eps in (
            (tm, ref.mean((0, 1)), "all", 1e-6),
            (tm_img, ref.mean((0, 1)), "image", 1e-4),
            (tm_sub, att[3][2, P - 1 + s, : P + s], "all", 1e-6),
        ):
            row = row.astype(np.float64)
            m = img_mask[: P + s]
            R = row[m].sum() / row[~m].sum()
            p = row if over == "all" else row[m]
            p = p[p > 0] / p.sum()
            F = 1.0 / (-(p * np.log(p)).sum() + eps)
            assert metrics.R[s] == pytest.approx(R, rel=1e-4)
            assert metrics.F[s] == pytest.approx(F, rel=1e-4)
            assert metrics.image_share[s] == pytest.approx(row[m].sum() / row.sum(), rel=1e-4)
    assert tm_sub.choice["layers"] == [3] and tm_sub.choice["heads"] == [2]


def test_batched_equals_single_and_question_keys(sdpa_vlm):
    v = sdpa_vlm
    lm = wrap_model(v.model, processor=v.processor)
    reqs = [
        CaptureRequest("long", PROMPT, image=sample_image(), question=QUESTION_TEXT),
        CaptureRequest("short", "How many?", image=sample_image(seed=1)),
    ]
    batch = capture_batch(lm, reqs, layers=[2], heads=[1], max_new_tokens=3, min_new_tokens=3)
    for req, b in zip(reqs, batch):
        single = capture_batch(lm, [req], layers=[2], heads=[1], max_new_tokens=3, min_new_tokens=3)[0]
        np.testing.assert_array_equal(single["tensors"]["token_ids"], b["tensors"]["token_ids"])
        np.testing.assert_allclose(single["tensors"]["rows"], b["tensors"]["rows"], atol=2e-6)
        kt, ids = b["tensors"]["key_types"], b["tensors"]["token_ids"]
        q = lm.tokenizer.decode(ids[kt == QUESTION])
        assert b["record"]["question_found"] and q.strip() == (req.question or req.prompt)
        # the rows are probability rows: they sum to 1 over the visible keys
        off = b["tensors"]["row_offsets"]
        sums = [b["tensors"]["rows"][..., off[s] : off[s + 1]].sum(-1) for s in range(len(off) - 1)]
        np.testing.assert_allclose(np.stack(sums), 1.0, atol=1e-5)
        np.testing.assert_allclose(b["tensors"]["mass"].sum(-1), 1.0, atol=1e-5)


def test_switch_modes_agree_and_only_requested_layers_hold_weights():
    v = build_tiny_vlm("llava")
    v.model.set_attn_implementation("sdpa")
    lm = wrap_model(v.model, processor=v.processor)
    req = [CaptureRequest("a", PROMPT, image=sample_image())]
    attn = [layer.self_attn for layer in lm.layers()]
    shared = attn[0].config
    seen: dict[int, list[bool]] = {i: [] for i in range(len(attn))}
    hooks = [
        m.register_forward_hook(lambda _m, _a, out, i=i: seen[i].append(out[1] is not None)) for i, m in enumerate(attn)
    ]
    try:
        with torch.no_grad(), recording(lm, layers=[1], heads=[0]) as rec:
            lm.hf(**dict(_enc(lm, req)))
            assert all(m.config is shared for i, m in enumerate(attn) if i != 1) and attn[1].config is not shared
    finally:
        for h in hooks:
            h.remove()
    assert set(rec.rows) == {1} and len(rec.rows[1]) == 1 and rec.rows[1][0].shape[1] == 1  # [B, 1 head, T]
    assert seen == {0: [False], 1: [True], 2: [False], 3: [False]}  # unrequested layers ran sdpa: no weights at all
    assert all(m.config is shared for m in attn) and shared._attn_implementation == "sdpa"  # restored
    base = capture_batch(lm, req, layers=[1, 2], max_new_tokens=3, min_new_tokens=3)[0]["tensors"]["rows"]
    whole = capture_batch(lm, req, layers=[1, 2], max_new_tokens=3, min_new_tokens=3, switch="model")[0]
    np.testing.assert_allclose(whole["tensors"]["rows"], base, atol=2e-6)
    assert shared._attn_implementation == "sdpa"
    seen = {i: [] for i in range(len(attn))}
    hooks = [
        m.register_forward_hook(lambda _m, _a, out, i=i: seen[i].append(out[1] is not None)) for i, m in enumerate(attn)
    ]
    try:
        plain = lm.hf.generate(
            **{k: v for k, v in dict(_enc(lm, req)).items()}, max_new_tokens=3, do_sample=False, pad_token_id=2
        )
        rows = capture_batch(lm, req, layers=[1, 2], max_new_tokens=3, min_new_tokens=3, switch="rows")[0]
    finally:
        for h in hooks:
            h.remove()
    assert not any(v for vs in seen.values() for v in vs)  # "rows": every layer kept its sdpa kernel
    np.testing.assert_allclose(rows["tensors"]["rows"], base, atol=2e-6)
    P = rows["record"]["prompt_len"]
    assert rows["tensors"]["token_ids"][P:].tolist() == plain[0, P:].tolist()  # generation exactly uncaptured
    with pytest.raises(EagerAttentionUnavailable, match="attn_implementation='eager'"):
        capture_batch(lm, req, layers=[1], max_new_tokens=2, switch="none")
    v.model.set_attn_implementation("eager")
    hooked = capture_batch(lm, req, layers=[1, 2], max_new_tokens=3, min_new_tokens=3, switch="none")[0]
    np.testing.assert_allclose(hooked["tensors"]["rows"], base, atol=2e-6)


def _enc(lm, reqs):
    from cotscope.probes.attention import encode, render_prompt

    return encode(lm, [render_prompt(lm, r.prompt, r.image is not None) for r in reqs], [r.image for r in reqs])


def test_restored_after_error_and_text_only_prompt():
    v = build_tiny_vlm("qwen2_vl")
    lm = wrap_model(v.model, processor=v.processor)
    attn = [layer.self_attn for layer in lm.layers()]
    cfg = attn[0].config
    with pytest.raises(RuntimeError, match="boom"):
        with recording(lm, layers=[0, 2], switch="model"):
            assert cfg._attn_implementation == "eager" and attn[0].config is not cfg
            raise RuntimeError("boom")
    assert all(m.config is cfg for m in attn) and cfg._attn_implementation == "eager"
    tr = capture_batch(lm, [CaptureRequest("t", "Say hi.")], layers=[0], max_new_tokens=2, min_new_tokens=2)[0]
    assert tr["record"]["n_keys_by_type"]["image"] == 0 and tr["record"]["image_layout"]["kind"] == "none"
    assert tr["tensors"]["mass"][..., IMAGE].max() == 0.0


@pytest.mark.parametrize("family", ["gemma3", "qwen2_vl", "llava_onevision"])
def test_rows_mode_equals_eager_layers(family):
    """Row-only capture (original kernel + eager last row) equals switching the layers to eager."""
    v = build_tiny_vlm(family)
    v.model.set_attn_implementation("sdpa")
    lm = wrap_model(v.model, processor=v.processor)
    reqs = [CaptureRequest("a", PROMPT, image=sample_image()), CaptureRequest("b", "Hi", image=sample_image(seed=2))]
    a = capture_batch(lm, reqs, layers=[0, 3], max_new_tokens=3, min_new_tokens=3)
    b = capture_batch(lm, reqs, layers=[0, 3], max_new_tokens=3, min_new_tokens=3, switch="rows")
    for x, y in zip(a, b):
        np.testing.assert_allclose(x["tensors"]["rows"], y["tensors"]["rows"], atol=5e-6)


def test_additive_mask_conversions():
    q = torch.zeros(1, 2, 3, 4)
    k = torch.zeros(1, 2, 5, 4)
    m = additive_mask(None, q, k)  # sdpa "pure causal": bottom-right aligned
    allowed = (m[0, 0] == 0).numpy()
    np.testing.assert_array_equal(allowed, np.tril(np.ones((3, 5), bool), k=2))
    assert additive_mask(None, q[:, :, :1], k) is None  # one query sees every key
    b = torch.tensor([[True, False, True, True, True]]).expand(3, 5)[None, None]
    np.testing.assert_array_equal((additive_mask(b, q, k)[0, 0] == 0).numpy(), b[0, 0].numpy())
    pad = torch.tensor([[0, 1, 1, 1, 1]])
    np.testing.assert_array_equal(
        (additive_mask(pad, q, k)[0, 0] == 0).numpy(),
        np.tril(np.ones((3, 5), bool), k=2) & np.array([0, 1, 1, 1, 1], bool),
    )
    f = torch.zeros(1, 1, 3, 5)
    assert additive_mask(f, q, k) is f
    from cotscope.probes.attention import last_row_mask

    assert last_row_mask(None, q, k) is None
    np.testing.assert_array_equal((last_row_mask(b, q, k)[0, 0, 0] == 0).numpy(), b[0, 0, -1].numpy())
    np.testing.assert_array_equal((last_row_mask(pad, q, k)[0, 0, 0] == 0).numpy(), [False, True, True, True, True])


class _NoEager(torch.nn.Module):
    pass


def test_bad_inputs():
    v = build_tiny_vlm("llava")
    lm = wrap_model(v.model, processor=v.processor)
    req = [CaptureRequest("a", "Hi", image=sample_image())]
    with pytest.raises(AttentionCaptureError, match="out of range.*4 decoder blocks"):
        capture_batch(lm, req, layers=[4])
    with pytest.raises(AttentionCaptureError, match="head 4 is out of range.*4 query heads"):
        capture_batch(lm, req, heads=[0, 4])
    with pytest.raises(AttentionCaptureError, match="layers is empty"):
        capture_batch(lm, req, layers=[])
    with pytest.raises(AttentionCaptureError, match="unknown switch"):
        capture_batch(lm, req, switch="all")
    with pytest.raises(AttentionCaptureError, match="max_new_tokens"):
        capture_batch(lm, req, max_new_tokens=0)
    with pytest.raises(EagerAttentionUnavailable, match="no eager_attention_forward.*attn_implementation='eager'"):
        _module_eager(_NoEager())
    with pytest.raises(AttentionCaptureError, match="unique"):
        capture_run(lm, req * 2, "/nonexistent/never-written")
    with pytest.raises(AttentionCaptureError, match="some requests have images"):
        capture_batch(lm, req + [CaptureRequest("b", "Hi")])


def test_run_store_resume_and_config_guard(tmp_path):
    v = build_tiny_vlm("idefics3")
    lm = wrap_model(v.model, processor=v.processor)
    reqs = [
        CaptureRequest(f"r{i}", PROMPT, image=sample_image(seed=i), condition=c)
        for i, c in enumerate(["cot", "direct"])
    ]
    run = capture_run(lm, reqs, tmp_path / "r", layers=[0], max_new_tokens=2, progress=False)
    assert len(run) == 2 and run.select(condition="direct") == [1] and run.image(0).size == sample_image().size
    mtime = (tmp_path / "r" / "trace-00000.safetensors").stat().st_mtime_ns
    again = capture_run(lm, reqs, tmp_path / "r", layers=[0], max_new_tokens=2, progress=False)  # resumes: no work
    assert (tmp_path / "r" / "trace-00000.safetensors").stat().st_mtime_ns == mtime and len(again) == 2
    with pytest.raises(AttentionStoreError, match="different configuration"):
        capture_run(lm, reqs, tmp_path / "r", layers=[1], max_new_tokens=2, progress=False)
    half = capture_run(
        lm, reqs, tmp_path / "r", layers=[1], max_new_tokens=2, store_dtype="float16", overwrite=True, progress=False
    )
    assert half.trace(1).rows.dtype == np.float16 and half.manifest["store_dtype"] == "float16"
    AttentionRun(tmp_path / "r", verify=True)


def test_reference_vlm_matches_hf(tmp_path):
    """The trained reference VLM (embedded:smolvlm), when its weights are present."""
    try:
        from cotscope.probes.models.reference_vlm import reference_vlm_dir

        d = reference_vlm_dir()
    except Exception as e:  # weights not shipped yet, or the module is not there
        pytest.skip(f"reference VLM not available yet ({type(e).__name__}: {str(e)[:120]})")
    from cotscope.probes.models.loading import load_model
    from cotscope.probes.stimuli.visual import generate_visual_items

    lm = load_model(d)
    item = generate_visual_items(1, seed=3)[0]
    run = capture_run(
        lm,
        [CaptureRequest("x", item.cot_prompt, image=item.image, question=item.question)],
        tmp_path / "ref",
        layers=[0, 15, 29],
        heads=[0, 4, 8],
        max_new_tokens=4,
        min_new_tokens=4,
        progress=False,
    )
    tr = run.trace(0)
    enc_img = item.image
    lm.hf.set_attn_implementation("eager")
    try:
        from cotscope.probes.collect import encode_batch

        enc = dict(encode_batch(lm, [tr.record["prompt_text"]], [enc_img]))
        enc["input_ids"] = torch.as_tensor(tr.token_ids[: tr.prompt_len + 3])[None]
        enc["attention_mask"] = torch.ones_like(enc["input_ids"])
        with torch.no_grad():
            att = [a[0].numpy() for a in lm.hf(**enc, output_attentions=True).attentions]
    finally:
        lm.hf.set_attn_implementation("sdpa")
    P = tr.prompt_len
    tm = token_metrics(tr)
    m = tr.key_types == IMAGE
    for s in range(4):
        ref = np.stack([att[l][[0, 4, 8], P - 1 + s, : P + s] for l in (0, 15, 29)]).mean((0, 1)).astype(np.float64)
        mm = m[: P + s]
        p = ref[ref > 0] / ref.sum()
        assert tm.R[s] == pytest.approx(ref[mm].sum() / ref[~mm].sum(), rel=1e-4)
        assert tm.F[s] == pytest.approx(1 / (-(p * np.log(p)).sum() + 1e-6), rel=1e-4)


def test_latent_patch_map_equals_perceiver_attention():
    """Idefics2's resampler latents: the stored latent → patch map is the perceiver's eager attention (depth 1)."""
    from cotscope.probes.attention import latent_patch_map

    v = build_tiny_vlm("idefics2")  # eager everywhere
    lm = wrap_model(v.model, processor=v.processor)
    img = sample_image()
    perceiver = lm.adapter.projector(lm.hf).perceiver_resampler
    assert len(perceiver.layers) == 1
    got = []
    h = perceiver.layers[0].self_attn.register_forward_hook(lambda _m, _a, out: got.append(out[1]))
    try:
        px = lm.processor.image_processor(images=[[img]], return_tensors="pt")
        with torch.no_grad():
            lm.hf.model.get_image_features(
                pixel_values=px["pixel_values"], pixel_attention_mask=px["pixel_attention_mask"]
            )
    finally:
        h.remove()
    v.model.set_attn_implementation("sdpa")  # the map must not depend on the model's own kernel
    lmap = latent_patch_map(lm, img)
    n_lat = lmap.shape[0]
    ref = got[0][0].mean(0)[:, : got[0].shape[-1] - n_lat].numpy()
    np.testing.assert_allclose(lmap.reshape(n_lat, -1), ref, atol=1e-6)
    assert lmap.shape == (4, 4, 4) and latent_patch_map(lm, None) is None


def test_demo_end_to_end_on_a_tiny_vlm(tmp_path):
    from cotscope.probes.stimuli.visual import generate_visual_items
    from cotscope.stages.attention import run_attention_demo

    v = build_tiny_vlm("llava")
    lm = wrap_model(v.model, processor=v.processor)
    s = run_attention_demo(lm, generate_visual_items(2, seed=0), tmp_path, max_new_tokens=6, progress=False)
    for cond in ("cot", "direct"):
        assert s[cond]["n_traces"] == 2 and len(s[cond]["R_per_step"]) >= 1
        assert all(0 <= r < 1e3 for r in s[cond]["R_per_step"] if r is not None)
    assert s["k"] >= 1 and "ivt_lr" in s and s["report"].count("|") > 10 and s["title"].startswith("Attention shift")
    names = {p.rsplit("/", 1)[-1] for p in s["figures"]}
    assert {"attention_ratio_focus.png", "attention_layer_step.html", "selected_patches.png"} <= names
    assert (tmp_path / "analysis" / "attention_shift.json").is_file()
    with pytest.raises(ValueError, match="text-only"):
        run_attention_demo(wrap_model(_text_lm(v), tokenizer=v.tokenizer), None, tmp_path / "text")


def _text_lm(v):
    """A tiny text-only Llama with the VLM's tokenizer."""
    from tiny_vlms import TEXT
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(**{**TEXT, "vocab_size": len(v.tokenizer)})).eval()
