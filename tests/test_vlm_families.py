"""Every VLM family beyond the original ten (tests/tiny_vlms.py EXTRA_FAMILIES), on tiny random models.

Each family runs the five checks of the compatibility table (tests/family_checks.py: collection = HF hidden states,
image mask, batched = per-item, injection = hook, attention rows = HF) and loads from a saved directory; then come the
family-specific facts those checks rest on (PaliGemma's suffix, Mistral3's break tokens, Chameleon's VQ codes, the
cross-attention families' refusals, BLIP-2's query-first layout, Fuyu's patch rows) and the refusals where image
tokens do not exist.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from family_checks import CHECKS, collected, loaded_for, make_pairs
from tiny_vlms import EXTRA_FAMILIES, sample_image, save_tiny, scratch_dir, tiny_vlm

from cotscope.probes.collect import collect_pairs
from cotscope.probes.models import adapter_for
from cotscope.probes.models.loading import load_model
from cotscope.probes.models.registry import NoImageTokensError, UnsupportedModelError
from cotscope.probes.stimuli.pairs import Prompt, PromptPair

torch.set_num_threads(1)


@pytest.mark.parametrize("family", EXTRA_FAMILIES)
def test_adapter_finds_layers_vision_and_projector(family):
    m = tiny_vlm(family).model
    a = adapter_for(m)
    assert a.family == family and a.is_vlm and len(a.layers(m)) == 4
    assert a.text_config(m.config).hidden_size == 64
    for get in (a.vision, a.projector, a.final_norm):
        assert isinstance(get(m), torch.nn.Module)


@pytest.mark.parametrize("check", list(CHECKS))
@pytest.mark.parametrize("family", EXTRA_FAMILIES)
def test_family_check(family, check):
    cell = CHECKS[check](family)
    assert cell and not cell.startswith("FAIL")


# ------------------------------------------------------------------------------------------ family facts


def test_paligemma_last_prompt_skips_the_processor_newline():
    """PaliGemma's processor appends "\\n" after the text; the collector counts it as a suffix token."""
    loaded, pairs, one, _ = collected("paligemma")
    tok = loaded.tokenizer
    for row, it in enumerate(one.items):
        assert it["n_suffix_tokens"] == 1
        text = it["text"]
        enc = loaded.processor(text=[text], images=[[pairs[row // 2].cot.image]], return_tensors="pt")
        ids = enc["input_ids"][0]
        assert tok.decode(ids[-1:]) == "\n"
        ans = tok.decode(ids[-1 - it["n_answer_tokens"] : -1])
        assert ans.strip() and ans.strip() in text
        # prefix-LM: the whole prompt (image + text) is token type 0, attended bidirectionally
        assert int(enc["token_type_ids"].sum()) == 0


def test_mistral3_image_mask_is_img_tokens_only():
    """Rows of [IMG] closed by [IMG_BREAK], the last by [IMG_END]; only [IMG] carries image features."""
    vlm = tiny_vlm("mistral3")
    _, _, one, _ = collected("mistral3")
    tok = vlm.tokenizer
    brk, end = tok.convert_tokens_to_ids("[IMG_BREAK]"), tok.convert_tokens_to_ids("[IMG_END]")
    enc = vlm.processor(text=[vlm.prompt()], images=[[sample_image(80, 40)]], return_tensors="pt")
    ids = enc["input_ids"][0]
    h, w = (int(x) for x in enc["image_sizes"][0])
    rows, cols = h // 16, w // 16  # patch 8 x spatial merge 2
    assert rows != cols and int((ids == vlm.processor.image_token_id).sum()) == rows * cols
    assert int((ids == brk).sum()) == rows - 1 and int((ids == end).sum()) == 1
    for row in range(one.n_items):  # stored masks never cover the break/end tokens
        assert one.image_masks()[row].sum() == int(one.image_masks()[row].sum()) > 0
    _, _, one, _ = collected("mistral3")
    enc1 = vlm.processor(text=[one.items[0]["text"]], images=[[make_pairs("mistral3")[0].cot.image]])
    ids1 = np.asarray(enc1["input_ids"][0])
    m = one.image_masks()[0].astype(bool)
    assert not np.isin(ids1[m], [brk, end]).any() and np.isin(ids1[~m], [brk, end]).sum() >= 1


def test_chameleon_image_positions_hold_vq_code_embeddings():
    """Early fusion: the model swaps the <image> positions for codebook tokens of its own vocabulary."""
    vlm = tiny_vlm("chameleon")
    m = vlm.model
    enc = vlm.processor(text=[vlm.prompt()], images=[[sample_image()]], return_tensors="pt")
    with torch.no_grad():
        codes = m.model.get_image_tokens(enc["pixel_values"])
        got = {}

        def grab(mod, args, kw):
            got["x"] = args[0] if args else kw["hidden_states"]

        h = m.model.layers[0].register_forward_pre_hook(grab, with_kwargs=True)
        try:
            m(**enc)
        finally:
            h.remove()
    mask = adapter_for(m).image_token_mask(enc["input_ids"], m.config)[0]
    assert int(mask.sum()) == codes.shape[1] == 16
    assert set(codes[0].tolist()) <= set(m.model.vocabulary_mapping.image_tokens)
    torch.testing.assert_close(got["x"][0, mask], m.model.embed_tokens(codes[0]), rtol=0, atol=0)


def test_mllama_image_enters_only_through_cross_attention_layers():
    """Two different images: residuals agree before the first cross-attention layer and differ from it on."""
    vlm = tiny_vlm("mllama")
    loaded = loaded_for("mllama")
    xattn = vlm.model.config.text_config.cross_attention_layers
    assert xattn == [1]
    p = make_pairs("mllama")[0]
    pairs = [PromptPair(0, p.problem, "cue", p.cot, Prompt(p.cot.messages, p.cot.answer, sample_image(seed=7)))]
    store = collect_pairs(loaded, pairs, scratch_dir("mllama-x-"), positions=("last_prompt",), progress=False)
    lp = store.get("last_prompt")  # [2, L, d]
    np.testing.assert_array_equal(lp[0, 0], lp[1, 0])  # layer 0: self-attention only, the image is not seen yet
    assert np.abs(lp[0, 1:] - lp[1, 1:]).max() > 1e-4  # the cross-attention layer reads the image


def test_mllama_refuses_every_image_token_measure():
    loaded = loaded_for("mllama")
    a = loaded.adapter
    assert not a.image_tokens_in_sequence
    with pytest.raises(NoImageTokensError, match="cross-attention") as e:
        a.image_token_mask(torch.zeros(1, 4, dtype=torch.long), loaded.config)
    assert isinstance(e.value, UnsupportedModelError) and isinstance(e.value, ValueError)
    assert "Use instead" in str(e.value) and "last_prompt" in str(e.value)
    with pytest.raises(NoImageTokensError, match="position 'image_mean'"):
        collect_pairs(
            loaded, make_pairs("mllama"), scratch_dir("mllama-im-"), positions=("image_mean",), progress=False
        )
    from cotscope.probes.attention import CaptureRequest, capture_batch

    with pytest.raises(NoImageTokensError, match="attention shift R/F"):
        capture_batch(loaded, [CaptureRequest("a", "Hi", image=sample_image())], layers=[0], max_new_tokens=1)
    # text-only capture has no image tokens to need: it still runs
    tr = capture_batch(loaded, [CaptureRequest("t", "Say hi.")], layers=[0], max_new_tokens=2, min_new_tokens=2)[0]
    assert tr["record"]["n_keys_by_type"]["image"] == 0


@pytest.mark.parametrize("family", EXTRA_FAMILIES)
def test_load_model_from_saved_dir(family):
    """A saved tiny model + processor loads offline through the adapter and gives the same logits."""
    vlm = tiny_vlm(family)
    d = save_tiny(vlm, scratch_dir(f"saved-{family}-"))
    lm = load_model(d, attn_implementation="eager")
    assert lm.adapter.family == family and lm.is_vlm and lm.n_layers == 4
    text, img = vlm.prompt(), sample_image()
    kw = lm.adapter.processor_kwargs  # what cotscope passes to every processor call
    a = lm.processor(text=[text], images=[[img]], return_tensors="pt", **kw)
    b = vlm.processor(text=[text], images=[[img]], return_tensors="pt", **kw)
    assert torch.equal(a["input_ids"], b["input_ids"])
    a.pop("labels", None), b.pop("labels", None)
    with torch.no_grad():
        la, lb = lm.hf(**a).logits, vlm.model(**b).logits
    torch.testing.assert_close(la, lb, rtol=0, atol=0)  # same weights, same inputs, same code path


def test_qwen3_5_linear_attention_layers_have_no_attention_rows():
    """Hybrid Qwen3.5: capture on a Gated-DeltaNet layer stops with a clear error; full-attention layers work
    (test_family_check covers them)."""
    from cotscope.probes.attention import CaptureRequest, EagerAttentionUnavailable, capture_batch

    lm = loaded_for("qwen3_5")
    kinds = lm.config.text_config.layer_types
    assert kinds[0] == "linear_attention"
    with pytest.raises(EagerAttentionUnavailable, match="layer 0"):
        capture_batch(lm, [CaptureRequest("a", "Hi", image=sample_image())], layers=[0], max_new_tokens=1)


def test_mllama_vision_latents_refuse_image_mean():
    from cotscope.probes.vision_latents import collect_vision_latents

    vlm = tiny_vlm("mllama")
    img = [sample_image()]
    with pytest.raises(NoImageTokensError, match="token_rule='image_mean'"):
        collect_vision_latents(
            vlm.model, vlm.processor, img, vlm.prompt(), "model.multi_modal_projector", token_rule="image_mean"
        )


def test_idefics_image_enters_only_through_gated_cross_attention():
    """IDEFICS v1: two different images change the residuals after the image marker; with the cross-attention gates
    closed (tanh(0) = 0, HF's initial value) they change nothing."""
    from tiny_vlms import build_tiny_vlm

    vlm = tiny_vlm("idefics")
    text = vlm.prompt()
    enc = [vlm.processor(text=[text], images=[[sample_image(seed=s)]], return_tensors="pt") for s in (0, 7)]
    assert torch.equal(enc[0]["input_ids"], enc[1]["input_ids"])
    marker = int((enc[0]["input_ids"][0] == vlm.tokenizer.convert_tokens_to_ids("<image>")).nonzero()[0, 0])

    def last_hidden(model):
        with torch.no_grad():
            return [model(**e, output_hidden_states=True).hidden_states[1][0] for e in enc]

    a, b = last_hidden(vlm.model)
    torch.testing.assert_close(a[:marker], b[:marker], rtol=0, atol=0)  # before the image: nothing to see
    # random tiny weights make image features small (|diff| ~1e-4 here); closed gates below give exactly 0
    assert (a[marker:] - b[marker:]).abs().max() > 1e-6
    closed = build_tiny_vlm("idefics")
    with torch.no_grad():
        for name, p in closed.model.named_parameters():
            if name.endswith(("alpha_cross_attn", "alpha_dense")):
                p.zero_()
    a, b = last_hidden(closed.model)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_blip2_rows_match_the_stock_processor_with_padding_on_the_left():
    """One row: the same tokens and pixels as transformers' Blip2Processor (query tokens first, wherever the prompt's
    placeholder was). A left-padded batch: the stock processor leaves pads between the query tokens and the text;
    cotscope's pads sit left of the whole row, so each row's tokens are contiguous."""
    from transformers import Blip2Processor

    vlm = tiny_vlm("blip-2")
    proc, tok = vlm.processor, vlm.tokenizer
    from transformers import AddedToken

    stock = Blip2Processor(proc.image_processor, tok, num_query_tokens=proc.num_query_tokens)
    stock.image_token = AddedToken("<image>", normalized=False, special=True)  # stock reads .content of it
    texts = [vlm.prompt(), vlm.prompt("Describe the picture in a long sentence, please.")]
    ims = [sample_image(), sample_image(seed=2)]
    tok.padding_side = "left"
    for t, im in zip(texts, ims):
        ours = proc(text=[t], images=[[im]], return_tensors="pt")
        ref = stock(text=[t.replace("<image>", "")], images=[im], return_tensors="pt")
        assert torch.equal(ours["input_ids"], ref["input_ids"])
        assert torch.equal(ours["pixel_values"], ref["pixel_values"])
    ours = proc(text=texts, images=[[im] for im in ims], padding=True, return_tensors="pt")
    ref = stock(text=[t.replace("<image>", "") for t in texts], images=ims, padding=True, return_tensors="pt")
    q, pad = proc.num_query_tokens, tok.pad_token_id
    assert (ref["input_ids"][0, :q] == proc.image_token_id).all() and ref["input_ids"][0, q] == pad  # pads inside
    n_pad = int((ours["attention_mask"][0] == 0).sum())
    assert n_pad > 0 and (ours["input_ids"][0, n_pad : n_pad + q] == proc.image_token_id).all()
    assert (ours["attention_mask"][0, n_pad:] == 1).all()


def test_fuyu_layout_image_rows_first_and_answer_marker_last():
    """Fuyu rows: |SPEAKER| x cols + |NEWLINE| per patch row, BOS, the text, <0x04>; the patches are the image's
    pixels in unfold order (the model embeds them linearly). The stock FuyuProcessor cannot run on the PIL image
    processor in this transformers (it patchifies torch tensors with numpy calls), hence cotscope's layout class."""
    from transformers import FuyuProcessor

    vlm = tiny_vlm("fuyu")
    proc, tok = vlm.processor, vlm.tokenizer
    img = sample_image(80, 40)
    enc = proc(text=[vlm.prompt()], images=[[img]], return_tensors="pt")
    ids = tok.convert_ids_to_tokens(enc["input_ids"][0])
    rows = ids.index("<s>") // 5  # 32 px wide / 8-px patches = 4 columns + |NEWLINE|
    assert ids[: rows * 5] == (["|SPEAKER|"] * 4 + ["|NEWLINE|"]) * rows and ids[-1] == "<0x04>"
    assert enc["pixel_values"].shape == (rows * 4, 3 * 8 * 8)
    px = np.asarray(proc.image_processor([img])["images"][0][0])[:, : rows * 8, :32]
    ref = torch.from_numpy(px)[None].unfold(2, 8, 8).unfold(3, 8, 8).permute(0, 2, 3, 4, 5, 1).reshape(-1, 192)
    torch.testing.assert_close(enc["pixel_values"], ref.to(enc["pixel_values"].dtype), rtol=0, atol=0)
    with pytest.raises(TypeError, match="transpose"):
        FuyuProcessor(proc.image_processor, tok)(text=["hi"], images=[img])
