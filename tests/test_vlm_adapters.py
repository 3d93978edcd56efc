"""Every VLM family adapter against plain HF, through cotscope's collector, on tiny random models.

Per family: residuals stored by :func:`probes.collect.collect_pairs` equal HF ``output_hidden_states``
(``hidden_states[i+1] == layers[i].output``); the stored image-token mask equals the processor's own;
a padded batch of image+text items equals per-item collection; text-only input through the VLM's
language model matches HF too. Then the clear errors: unknown family, placeholder mismatches, bad images.
The last test prints the family × check table (``pytest -s`` or ``-rA`` shows it).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_vlms import FAMILIES, sample_image, scratch_dir, tiny_vlm, tiny_vlm_dir

from cotscope.probes.collect import collect_pairs
from cotscope.probes.models import UnsupportedModelError, adapter_for, registered_families
from cotscope.probes.models import processors as P
from cotscope.probes.models.loading import load_model, wrap_model
from cotscope.probes.stimuli.arithmetic import generate_problems
from cotscope.probes.stimuli.pairs import Prompt, PromptPair, short_answer, worked_answer
from cotscope.probes.stimuli.visual import generate_visual_items

torch.set_num_threads(2)
POSITIONS = ("last_prompt", "answer_mean", "image_mean")
CHECKS = ("residuals==HF", "image mask==processor", "batched==per-item", "text-only==HF", "load_model(dir)")
RESULTS: dict[str, dict[str, str]] = {}


def _close(a, b, rel: float = 1e-5) -> float:
    """Max abs difference, asserted below ``rel`` × the magnitude of ``b``."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    diff = float(np.abs(a - b).max())
    assert diff <= rel * max(1.0, float(np.abs(b).max())), diff
    return diff


def _record(family: str, check: str, detail: str = "ok") -> None:
    RESULTS.setdefault(family, {})[check] = detail


def _pairs(family: str, with_images: bool = True) -> list[PromptPair]:
    """Two pairs; images of different sizes so rows differ in image-token count and length."""
    proc = tiny_vlm(family).processor
    items = generate_visual_items(2, seed=3, kinds=("expression", "bars"))
    out = []
    for i, (prob, item) in enumerate(zip(generate_problems(2, seed=3), items)):

        def member(prompt: str, answer: str, image) -> Prompt:
            text = P.image_prompt(proc, "<image>\n" + prompt) if with_images else prompt
            return Prompt([{"role": "user", "content": text}], answer, image if with_images else None)

        other = sample_image(*((48, 64), (80, 40))[i], seed=i)
        out.append(
            PromptPair(
                i,
                prob,
                "cue",
                member(item.cot_prompt, worked_answer(prob), item.image),
                member(item.direct_prompt, short_answer(prob), other),
            )
        )
    return out


@functools.cache
def _collected(family: str, with_images: bool = True):
    """Stores collected per item (batch 1) and as one padded batch (batch 4), every token kept."""
    vlm = tiny_vlm(family)
    loaded = wrap_model(vlm.model, processor=vlm.processor, model_id=f"tiny-{family}")
    pairs = _pairs(family, with_images)
    root = scratch_dir(f"vlmcollect-{family}-")
    pos = POSITIONS if with_images else ("last_prompt", "answer_mean")
    one = collect_pairs(loaded, pairs, root / "b1", positions=pos, batch_size=1, all_tokens=True, progress=False)
    four = collect_pairs(loaded, pairs, root / "b4", positions=pos, batch_size=4, all_tokens=True, progress=False)
    return loaded, pairs, one, four


def _hf_item(family: str, text: str, image):
    """Independent HF reference: the processor on one item, then ``output_hidden_states``."""
    vlm = tiny_vlm(family)
    adapter = adapter_for(vlm.model)
    if image is None:
        enc = vlm.tokenizer([text], return_tensors="pt", add_special_tokens=False)
    else:
        enc = vlm.processor(text=[text], images=[[image]], return_tensors="pt", **adapter.processor_kwargs)
    with torch.no_grad():
        hs = vlm.model(**enc, output_hidden_states=True).hidden_states
    return enc, hs


@functools.cache
def _hf_rows(family: str, with_images: bool = True) -> list:
    """``(encoding, hidden_states)`` of every collected row, computed once per family."""
    loaded, pairs, _, _ = _collected(family, with_images)
    return [_hf_item(family, pr.render(loaded.processor)[1], pr.image) for pair in pairs for _, pr in pair.members()]


def _matches_hidden_states(family: str, stored: np.ndarray, hs) -> float:
    """``stored[i] == hidden_states[i+1]``; HF's last entry is after the final norm, so norm ours first."""
    model = tiny_vlm(family).model
    assert stored.shape[0] == len(hs) - 1
    worst = max(_close(stored[li], hs[li + 1][0].numpy()) for li in range(stored.shape[0] - 1))
    with torch.no_grad():
        normed = adapter_for(model).final_norm(model)(torch.from_numpy(stored[-1])[None])[0]
    return max(worst, _close(normed.numpy(), hs[-1][0].numpy()))


def processor_image_mask(processor, enc) -> np.ndarray:
    """The processor's own image-token mask: its modality type ids when it returns them, else its token id."""
    for key in ("mm_token_type_ids", "token_type_ids"):
        if key in enc:
            return (np.asarray(enc[key]) == 1)[0]
    return (np.asarray(enc["input_ids"]) == processor.image_token_id)[0]


# ----------------------------------------------------------------------------------------------- per family


def test_every_family_has_an_adapter():
    fams = set(registered_families())
    assert {
        "llava",
        "llava_next",
        "llava_onevision",
        "qwen2_vl",
        "qwen2_5_vl",
        "idefics2",
        "idefics3",
        "smolvlm",
        "gemma3",
        "internvl",
    } <= fams
    for f in FAMILIES:
        a = adapter_for(tiny_vlm(f).model)
        assert a.family == f and a.is_vlm
        m = tiny_vlm(f).model
        assert len(a.layers(m)) == 4
        assert a.text_config(m.config).hidden_size == 64
        for get in (a.vision, a.projector, a.final_norm):
            assert isinstance(get(m), torch.nn.Module)


@pytest.mark.parametrize("family", FAMILIES)
def test_residuals_equal_hf_hidden_states(family):
    _, _, one, _ = _collected(family)
    worst = 0.0
    for row, (enc, hs) in enumerate(_hf_rows(family)):
        stored = one.all_tokens(row)  # [L, T, d]
        worst = max(worst, _matches_hidden_states(family, stored, hs))
        T = enc["input_ids"].shape[1]
        lp = one.get("last_prompt")[row]  # [L, d]
        k = T - 1 - int(one.items[row]["n_answer_tokens"])
        assert k > 0
        _close(lp[:-1], np.stack([h[0, k].numpy() for h in hs[1:-1]]))  # the token rule picks row k
        _close(lp, stored[:, k])
    _record(family, "residuals==HF", f"{worst:.0e}")


@pytest.mark.parametrize("family", FAMILIES)
def test_image_mask_equals_processor_mask(family):
    loaded, _, one, four = _collected(family)
    counts = []
    for row, (enc, _) in enumerate(_hf_rows(family)):
        own = processor_image_mask(loaded.processor, enc)
        assert own.sum() > 0
        np.testing.assert_array_equal(one.image_masks()[row], own)
        np.testing.assert_array_equal(four.image_masks()[row], own)
        counts.append(int(own.sum()))
    # the image mean is the mean over exactly those positions
    L = one.get("image_mean").shape[1]
    for row in range(one.n_items):
        m = one.image_masks()[row]
        _close(one.get("image_mean")[row], one.all_tokens(row)[:, m].mean(1))
    assert L == 4
    _record(family, "image mask==processor", "n=" + "/".join(map(str, counts)))


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_equals_per_item(family):
    _, _, one, four = _collected(family)
    lens = [len(m) for m in four.image_masks()]
    assert len(set(lens)) > 1, "the batch must mix lengths so that padding is exercised"
    worst = 0.0
    for p in POSITIONS:
        worst = max(worst, _close(four.get(p), one.get(p), rel=1e-4))
    for row in range(4):
        worst = max(worst, _close(four.all_tokens(row), one.all_tokens(row), rel=1e-4))
    _record(family, "batched==per-item", f"{worst:.0e}")


@pytest.mark.parametrize("family", FAMILIES)
def test_text_only_through_vlm_language_model(family):
    _, _, one, four = _collected(family, with_images=False)
    assert one.manifest["has_images"] is False and all(it["image_sha256"] is None for it in one.items)
    worst = 0.0
    for row, (_, hs) in enumerate(_hf_rows(family, with_images=False)):
        worst = max(worst, _matches_hidden_states(family, one.all_tokens(row), hs))
    _close(four.get("last_prompt"), one.get("last_prompt"), rel=1e-4)
    _record(family, "text-only==HF", f"{worst:.0e}")


@pytest.mark.parametrize("family", FAMILIES)
def test_load_model_from_saved_dir(family):
    lm = load_model(tiny_vlm_dir(family), attn_implementation="eager")
    vlm = tiny_vlm(family)
    assert lm.adapter.family == family and lm.is_vlm and lm.n_layers == 4
    text, img = vlm.prompt(), sample_image()
    kw = lm.adapter.processor_kwargs
    a = lm.processor(text=[text], images=[[img]], return_tensors="pt", **kw)
    b = vlm.processor(text=[text], images=[[img]], return_tensors="pt", **kw)
    assert torch.equal(a["input_ids"], b["input_ids"])
    with torch.no_grad():
        la, lb = lm.hf(**a).logits, vlm.model(**b).logits
    _close(la.numpy(), lb.numpy())
    _record(family, "load_model(dir)", type(lm.processor).__name__.replace("ImageOnly", "ImageOnly "))


# --------------------------------------------------------------------------------------------- clear errors


def test_unknown_family_error_lists_families_and_how_to_add():
    from transformers import PretrainedConfig

    class MadeUpConfig(PretrainedConfig):
        model_type = "made_up_vlm"

    with pytest.raises(UnsupportedModelError) as e:
        adapter_for(MadeUpConfig())
    msg = str(e.value)
    assert "made_up_vlm" in msg and "llava" in msg and "qwen2_vl" in msg and "internvl" in msg
    assert "register" in msg and "ModelAdapter" in msg


@pytest.mark.parametrize("family", ["llava", "qwen2_vl", "gemma3"])
def test_prompt_placeholder_errors(family):
    vlm = tiny_vlm(family)
    loaded = wrap_model(vlm.model, processor=vlm.processor)
    ph, img = vlm.placeholder, sample_image()
    with pytest.raises(P.PromptImageError, match="no image placeholder") as e:
        P.validate_batch(loaded, ["What is shown?"], [img])
    assert repr(ph) in str(e.value) and "Fix" in str(e.value)
    with pytest.raises(P.PromptImageError, match="2 image placeholders .* only 1 image"):
        P.validate_batch(loaded, [f"{ph}{ph} What?"], [img])
    with pytest.raises(P.PromptImageError, match="only 0 image"):
        P.check_prompts([f"{ph} What?", "plain"], [None, None], vlm.processor.image_token)
    with pytest.raises(P.PromptImageError, match="2 prompts but 1 image"):
        P.validate_batch(loaded, ["a", "b"], [img])
    # a prompt that is already expanded (16 tokens for one image) is refused as well
    with pytest.raises(P.PromptImageError):
        P.validate_batch(loaded, [vlm.processor.image_token * 16], [img])
    # valid: one placeholder per image, text-only rows allowed alongside
    assert len(P.check_prompts([f"{ph} a", "b"], [img, None], vlm.processor.image_token)) == 2


def test_collector_refuses_prompt_without_placeholder_before_the_processor():
    vlm = tiny_vlm("llava")
    loaded = wrap_model(vlm.model, processor=vlm.processor)
    prob = generate_problems(1, seed=0)[0]
    img = sample_image()
    bad = [
        PromptPair(
            0,
            prob,
            "cue",
            Prompt([{"role": "user", "content": "no image here"}], "x", img),
            Prompt([{"role": "user", "content": "none here either"}], "y", img),
        )
    ]
    with pytest.raises(P.PromptImageError, match="no image placeholder"):
        collect_pairs(loaded, bad, scratch_dir("vlmbad-"), positions=("last_prompt",), progress=False)


def test_collector_refuses_stray_placeholder_in_text_only_rows():
    """A text-only row that still carries an image placeholder would be expanded into nothing: refuse it."""
    vlm = tiny_vlm("llava")
    loaded = wrap_model(vlm.model, processor=vlm.processor)
    prob = generate_problems(1, seed=0)[0]
    text = P.image_prompt(vlm.processor, "What is 2+2?")
    bad = [
        PromptPair(
            0,
            prob,
            "cue",
            Prompt([{"role": "user", "content": text}], "x"),
            Prompt([{"role": "user", "content": "fine"}], "y"),
        )
    ]
    with pytest.raises(P.PromptImageError, match="image placeholder"):
        collect_pairs(loaded, bad, scratch_dir("vlmstray-"), positions=("last_prompt",), progress=False)


def test_image_prompt_uses_family_placeholder():
    for f in ("llava", "qwen2_vl", "gemma3", "internvl", "idefics3"):
        proc = tiny_vlm(f).processor
        out = P.image_prompt(proc, "<image>\nWhat is 2+2?")
        assert out.count(proc.image_token) == 1 and out.endswith("What is 2+2?")
    assert P.image_prompt(tiny_vlm("qwen2_vl").processor, "hi").startswith("<|vision_start|><|image_pad|>")


def _png(path: Path, img: Image.Image) -> Path:
    img.save(path)
    return path


def test_bad_images_are_converted_or_refused(tmp_path):
    rgba = Image.new("RGBA", (40, 30), (255, 0, 0, 0))  # fully transparent red → white
    pal = Image.new("RGB", (40, 30), (10, 200, 30)).convert("P")
    gray = Image.new("L", (40, 30), 77)
    conv = P.check_images([rgba, pal, gray, _png(tmp_path / "g.png", gray)])
    assert all(im.mode == "RGB" and im.size == (40, 30) for im in conv)
    assert conv[0].getpixel((0, 0)) == (255, 255, 255) and conv[2].getpixel((3, 3)) == (77, 77, 77)
    with pytest.raises(P.ImageInputError, match="1x1"):
        P.check_images([Image.new("RGB", (1, 1))])
    with pytest.raises(P.ImageInputError, match="10000x10000"):
        P.check_images([Image.new("1", (10000, 10000))])
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(P.ImageInputError, match="empty"):
        P.check_images([tmp_path / "empty.png"])
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    with pytest.raises(P.ImageInputError, match="cannot read"):
        P.check_images([tmp_path / "junk.png"])
    with pytest.raises(P.ImageInputError, match="not found"):
        P.check_images([tmp_path / "missing.png"])
    with pytest.raises(P.ImageInputError, match="None"):
        P.check_images([None])
    with pytest.raises(P.ImageInputError, match="expected a PIL.Image"):
        P.check_images([np.zeros((8, 8, 3))])


@pytest.mark.parametrize("family", ["llava_next", "qwen2_vl", "idefics3"])
def test_odd_images_collect_through_every_processor(family, tmp_path):
    """RGBA / palette / grayscale images reach the model as RGB; a 1×1 image stops with ImageInputError."""
    vlm = tiny_vlm(family)
    loaded = wrap_model(vlm.model, processor=vlm.processor)
    prob = generate_problems(1, seed=0)[0]
    text = P.image_prompt(vlm.processor, "What is this?")
    rgba = sample_image().convert("RGBA")
    gray = sample_image(seed=1).convert("L")
    pairs = [
        PromptPair(
            0,
            prob,
            "cue",
            Prompt([{"role": "user", "content": text}], "a", rgba),
            Prompt([{"role": "user", "content": text}], "b", gray),
        )
    ]
    store = collect_pairs(loaded, pairs, tmp_path / "ok", positions=("image_mean",), progress=False)
    assert np.isfinite(store.get("image_mean")).all()
    tiny = [
        PromptPair(
            0,
            prob,
            "cue",
            Prompt([{"role": "user", "content": text}], "a", Image.new("RGB", (1, 1))),
            Prompt([{"role": "user", "content": text}], "b", gray),
        )
    ]
    with pytest.raises(P.ImageInputError, match="1x1"):
        collect_pairs(loaded, tiny, tmp_path / "bad", positions=("image_mean",), progress=False)


def test_add_image_tokens_round_trips_named_tokens(tmp_path):
    from tiny_vlms import smol_tokenizer
    from transformers import AutoTokenizer

    tok = smol_tokenizer()
    n0 = len(tok)
    P.add_image_tokens(tok, ["<a-tok>"], named={"image_token": "<img-tok>"})
    P.add_image_tokens(tok, ["<a-tok>"], named={"image_token": "<img-tok>"})  # idempotent
    assert len(tok) == n0 + 2 and tok.image_token == "<img-tok>"
    tok.save_pretrained(tmp_path)
    back = AutoTokenizer.from_pretrained(tmp_path)
    assert back.image_token_id == tok.image_token_id == tok.convert_tokens_to_ids("<img-tok>")
    assert back("x<a-tok>y")["input_ids"] == tok("x<a-tok>y")["input_ids"]


# ----------------------------------------------------------------------------------------- LLaVA-SmolLM2


def _fp32_noise_floor(model, enc, ref: torch.Tensor) -> float:
    """Tolerance for logits compared across two code paths that do the same float32 math.

    Measured in the same run on the reference path itself: the same tokens as row 1 of a batch of two differ
    from the batch of one only by how the kernels block their sums for that shape. Another path may reorder sums
    like that, so allow 8x the measured difference, with a floor of 64 float32 ulps of the largest logit (the
    kernels often agree exactly across these shapes, and ~30 layers of reordering can still differ by a few ulps).
    """
    with torch.no_grad():
        two = model(**{k: v.repeat(2, 1) for k, v in enc.items()}).logits[1]
    measured = float((two - ref[0]).abs().max())
    ulp = float(np.spacing(np.float32(ref.abs().max())))
    return max(8 * measured, 64 * ulp)


def test_llava_smol_is_smollm2_on_text_and_collects_images(tmp_path):
    from transformers import AutoModelForCausalLM

    from cotscope.probes.models.embedded import smollm2_dir
    from cotscope.probes.models.llava_smol import IMAGE_TOKEN, llava_smol_dir

    d = llava_smol_dir(tmp_path)
    assert llava_smol_dir(tmp_path) == d and not list(tmp_path.glob(".build-*"))
    lm = load_model(d)
    assert lm.adapter.family == "llava" and lm.n_layers == 30 and lm.hidden_size == 576
    assert lm.processor.image_token == IMAGE_TOKEN and lm.config.image_token_index == 16
    smol = AutoModelForCausalLM.from_pretrained(smollm2_dir(), dtype=torch.float32).eval()
    enc = lm.tokenizer(["What is 12 plus 30?"], return_tensors="pt")
    with torch.no_grad():
        got, ref = lm.hf(**enc).logits, smol(**enc).logits
    # two code paths (LlavaForConditionalGeneration → its language model, vs LlamaForCausalLM) over the same
    # weights: equal up to float32 reordering noise, not necessarily bit for bit (see _fp32_noise_floor)
    torch.testing.assert_close(got, ref, rtol=0, atol=_fp32_noise_floor(smol, enc, ref))
    assert torch.equal(got.argmax(-1), ref.argmax(-1))
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "\nWhat is shown?"}]}]
    prob = generate_problems(1, seed=0)[0]
    item = generate_visual_items(1, seed=0)[0]
    pairs = [PromptPair(0, prob, "cue", Prompt(msgs, None, item.image), Prompt(msgs, None, sample_image()))]
    store = collect_pairs(
        lm, pairs, tmp_path / "store", layers=[0, 15, 29], positions=("last_prompt", "image_mean"), progress=False
    )
    assert [int(m.sum()) for m in store.image_masks()] == [16, 16]
    assert store.get("image_mean").shape == (2, 3, 576)


@pytest.mark.slow
def test_llava_smol_is_deterministic_for_a_seed(tmp_path):
    from safetensors import safe_open

    from cotscope.probes.models.llava_smol import llava_smol_dir

    def vision(d):
        with safe_open(str(d / "model.safetensors"), framework="pt") as fh:
            return {k: fh.get_tensor(k) for k in fh.keys() if "vision_tower" in k or "projector" in k}

    a, b = vision(llava_smol_dir(tmp_path / "a")), vision(llava_smol_dir(tmp_path / "b"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    c = vision(llava_smol_dir(tmp_path / "c", seed=1))
    assert any(not torch.equal(a[k], c[k]) for k in a)


# ------------------------------------------------------------------------------------------- the table


def test_zz_compatibility_table():
    """Print family × check (run after the per-family tests; cells show max |diff| or the detail)."""
    if not RESULTS:
        pytest.skip("no per-family results in this session (run the whole module)")
    w = max(len(f) for f in FAMILIES)
    lines = ["family".ljust(w) + " | " + " | ".join(CHECKS)]
    for f in FAMILIES:
        row = RESULTS.get(f, {})
        lines.append(f.ljust(w) + " | " + " | ".join(row.get(c, "-").ljust(len(c)) for c in CHECKS))
    print("\n" + "\n".join(lines))
    failed = [(f, c) for f in RESULTS for c, v in RESULTS[f].items() if v.startswith("FAIL")]
    assert not failed
    assert set(RESULTS) <= set(FAMILIES)
