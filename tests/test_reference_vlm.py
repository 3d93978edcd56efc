"""cotscope-smolvlm: offline loading, the recorded LM delta, reading floor, eval machinery, ablation, bad input."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from cotscope.probes.models import reference_vlm as R
from cotscope.probes.models.embedded import EmbeddedModelVersionError

pytestmark = pytest.mark.skipif(
    not (R.WEIGHTS_DIR / R.SUMS_FILE).is_file(), reason="weights/cotscope-smolvlm not shipped yet"
)


@pytest.fixture(scope="module")
def vlm():
    torch.set_num_threads(2)
    return R.load_reference_vlm()


def _card_floors() -> dict:
    return json.loads((R.WEIGHTS_DIR / R.META_FILE).read_text())["floors"]


def test_loads_offline_through_auto_classes(vlm):
    from transformers import LlavaForConditionalGeneration, LlavaProcessor

    from cotscope.probes.stimuli.visual import generate_visual_items

    model, proc = vlm
    assert model.config.text_config.vocab_size == 49152 and model.get_input_embeddings().weight.shape[0] == 49152
    it = generate_visual_items(1, seed=1)[0]
    enc = R.vlm_batch(proc, [it.image], [it.direct_prompt])
    ids = enc["input_ids"][0].tolist()
    assert ids.count(R.IMAGE_TOKEN_ID) == R.N_IMAGE_TOKENS
    assert isinstance(model, LlavaForConditionalGeneration) and isinstance(proc, LlavaProcessor)
    assert len(proc.tokenizer) == 49152 and model.config.image_token_index == R.IMAGE_TOKEN_ID
    with torch.no_grad():
        out = model(**enc)
    assert out.logits.shape[-1] == 49152 and torch.isfinite(out.logits).all()


def test_fast_pixel_path_equals_processor(vlm):
    from cotscope.probes.stimuli.visual import generate_visual_items

    _, proc = vlm
    imgs = [it.image for it in generate_visual_items(6, seed=3)]
    pv = R.vlm_batch(proc, imgs, ["x"] * 6)["pixel_values"]
    assert pv.numel() == 6 * 3 * R.IMAGE_SIDE**2  # one 96x96 image per row, no splitting
    assert torch.equal(R.pixel_tensor(imgs), pv.reshape(6, 3, R.IMAGE_SIDE, R.IMAGE_SIDE))


def test_lm_equals_smollm2_plus_recorded_delta(vlm):
    from safetensors.torch import load_file

    from cotscope.probes.models.embedded import smollm2_dir

    model, _ = vlm
    base = load_file(str(smollm2_dir() / "model.safetensors"))
    deltas = R.lm_deltas()
    lm = R.text_model(model).state_dict()
    assert deltas and all(float(d.abs().max()) > 0 for d in deltas.values())
    # Same code path, so exact: the assembly added lm_deltas() (the same function, here recomputed) with one IEEE
    # add per element; the rank-r matmul inside gives the same bits at 1, 2 and 4 threads (checked 2026-11-29).
    for name, w in lm.items():
        b = base[f"model.{name}"]
        if name in deltas:
            assert torch.equal(w, b + deltas[name]), name
        else:
            assert torch.equal(w, b), name


def _eval_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "eval_reference_vlm", R.WEIGHTS_DIR.parents[1] / "scripts" / "eval_reference_vlm.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_reading_floor_on_50_heldout_images(vlm):
    from cotscope.probes.stimuli.visual import generate_visual_items

    ev = _eval_module()
    model, proc = vlm
    items = generate_visual_items(50, seed=ev.EVAL_SEED)
    r = ev.reading_scores(model, proc, items)
    floors = _card_floors()
    assert r["exact_match"] >= floors["reading_exact_match"], r
    assert r["token_accuracy"] >= floors["reading_token_accuracy"], r


@pytest.mark.slow
def test_blank_image_drops_agreement(vlm):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cotscope.probes.models.embedded import smollm2_dir
    from cotscope.probes.stimuli.visual import generate_visual_items, text_prompt

    ev = _eval_module()
    model, proc = vlm
    items = generate_visual_items(24, seed=ev.EVAL_SEED + 1)
    d = smollm2_dir()
    tok = AutoTokenizer.from_pretrained(d)
    lm = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    prompts = [it.direct_prompt for it in items]
    llm = [
        ev.extract_answer(t) for t in ev.generate_text(lm, tok, [text_prompt(it, False) for it in items], 8, 24, "llm")
    ]
    img = [
        ev.extract_answer(t) for t in ev.generate_vlm(model, proc, [it.image for it in items], prompts, 8, 24, "vlm")
    ]
    from PIL import Image

    blank = [
        ev.extract_answer(t)
        for t in ev.generate_vlm(model, proc, [Image.new("RGB", (96, 96), "white")] * 24, prompts, 8, 24, "blank")
    ]
    agree = sum(a == b for a, b in zip(img, llm)) / 24
    agree_blank = sum(a == b for a, b in zip(blank, llm)) / 24
    assert agree >= agree_blank + 0.1, (agree, agree_blank)  # measured on 96 items: 0.365 vs 0.135


def test_extract_answer():
    ev = _eval_module()
    assert ev.extract_answer("so 3 + 4 = 7. The answer is \\boxed{7}.") == "7"
    assert ev.extract_answer("The answer is 12.") == "12"
    assert ev.extract_answer("There are 3 red and 2 blue, 5 in all") == "5"
    assert ev.extract_answer("no number") is None


def test_slot_path_equals_stock_image_path(vlm):
    """The ceiling's route (features scattered into the template by hand) is the stock forward's route."""
    from cotscope.probes.stimuli.visual import generate_visual_items

    ev = _eval_module()
    model, proc = vlm
    items = generate_visual_items(3, seed=5)
    enc = R.vlm_batch(proc, [it.image for it in items], [it.direct_prompt for it in items])
    with torch.no_grad():
        stock = model(**enc).logits
        feats = R.image_features(model, enc["pixel_values"])
        emb = ev.slot_embeds(model.get_input_embeddings(), enc["input_ids"], feats)
        manual = model(inputs_embeds=emb, attention_mask=enc["attention_mask"]).logits
    # same ops in the same order (masked_scatter into the token embeddings, then the text model): identical
    assert torch.equal(stock, manual)


def test_oracle_slots_hold_the_depicted_text(vlm):
    from cotscope.probes.stimuli.visual import generate_visual_items

    ev = _eval_module()
    model, proc = vlm
    tok = proc.tokenizer
    items = generate_visual_items(6, seed=9)
    E = model.get_input_embeddings().weight
    slots = ev.oracle_slots(tok, E, items)
    ids = (torch.nn.functional.normalize(slots, dim=-1) @ torch.nn.functional.normalize(E, dim=-1).T).argmax(-1)
    for it, row in zip(items, ids.tolist()):
        n = len(tok(it.description, add_special_tokens=False).input_ids)
        assert tok.decode(row[R.read_slots(n, R.read_alignment())]) == it.description
        assert set(row) - set(row[R.read_slots(n, R.read_alignment())]) <= set(
            tok(R.READ_PAD_TOKEN, add_special_tokens=False).input_ids
        )


def test_answer_ids_score_only_the_number(vlm):
    ev = _eval_module()
    tok = vlm[1].tokenizer
    for gold in (7, 42, -3, 105):
        ids, k = ev.answer_ids(tok, gold)
        assert tok.decode(ids) == ev.ANSWER_PREFIX + str(gold)
        assert tok.decode(ids[k:]).strip() == str(gold) and 0 < k < len(ids)
    assert abs(ev.pearson([1.0, 2.0, 4.0], [3.0, 5.0, 9.0]) - 1.0) < 1e-12
    assert abs(ev.pearson([1.0, 2.0, 4.0], [-1.0, -2.0, -4.0]) + 1.0) < 1e-12


def _train_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "train_reference_vlm", R.WEIGHTS_DIR.parents[1] / "scripts" / "train_reference_vlm.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_onehot_projector_turns_hidden_units_into_token_embeddings(vlm):
    """After the one-hot init, hidden unit k at 1 (others at 0) gives exactly reading-vocabulary token k's embedding,
    and the hidden-unit cross-entropy sees the projector's pre-activations through the hook."""
    from cotscope.probes.models.embedded import smollm2_dir
    from cotscope.probes.stimuli.visual import generate_visual_items

    tr = _train_module()
    _, proc = vlm
    model = R.build_model(smollm2_dir())
    reader = tr.Reader(proc.tokenizer, R.text_model(model).embed_tokens.weight.detach().clone(), "left")
    tr.init_onehot_projector(model, reader)
    proj = model.model.multi_modal_projector
    n = len(reader.cand)
    h = torch.zeros(n, proj.linear_1.out_features)
    h[torch.arange(n), torch.arange(n)] = 1.0
    with torch.no_grad():
        out = proj.linear_2(proj.act(h))
    # GELU(1) is rounded to float32 once in the init and once here: a few ulps of the embeddings' scale
    assert torch.allclose(out, reader.E[reader.cand], rtol=0, atol=1e-6)
    cap = tr.HiddenCapture(model)
    items = generate_visual_items(2, seed=5)
    feat = R.image_features(model, R.pixel_tensor([it.image for it in items]))
    loss, m = tr.reading_loss(feat, reader.targets([it.description for it in items]), reader, hidden=cap.z)
    loss0, _ = tr.reading_loss(feat, reader.targets([it.description for it in items]), reader)
    cap.remove()
    assert cap.z.shape == (2, R.N_IMAGE_TOKENS, proj.linear_1.out_features) and loss > loss0
    assert tr.read_kinds("expression, bars,expression") == ["expression", "bars", "expression"]
    with pytest.raises(SystemExit, match="unknown kinds"):
        tr.read_kinds("expression,photos")


def test_training_layout_equals_processor(vlm):
    """The adaptation stage builds its sequences by hand; they must be the processor's."""
    from cotscope.probes.stimuli.visual import generate_visual_items

    tr = _train_module()
    _, proc = vlm
    tok = proc.tokenizer
    it = generate_visual_items(1, seed=2)[0]
    ids = tok.apply_chat_template(
        R.vlm_messages(it.direct_prompt),
        tokenize=True,
        add_generation_prompt=True,
        return_dict=False,
        chat_template=R.CHAT_TEMPLATE,
    )
    assert (
        tr._expand_image(ids, tr.image_expansion(tok))
        == R.vlm_batch(proc, [it.image], [it.direct_prompt])["input_ids"][0].tolist()
    )


# ----------------------------------------------------------------------------------------------- bad input
def _copy_weights(tmp_path):
    wd = tmp_path / "w"
    shutil.copytree(R.WEIGHTS_DIR, wd)
    return wd


def test_corrupted_or_missing_weights_raise(tmp_path):
    wd = _copy_weights(tmp_path)
    f = wd / R.LORA_FILE
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(R.ReferenceVLMWeightsError, match="corrupted"):
        R.reference_vlm_dir(cache_dir=tmp_path / "cache", weights_dir=wd)
    f.unlink()
    with pytest.raises(R.ReferenceVLMWeightsError, match="missing"):
        R.reference_vlm_dir(cache_dir=tmp_path / "cache", weights_dir=wd)
    (wd / R.SUMS_FILE).unlink()
    with pytest.raises(R.ReferenceVLMWeightsError, match="missing"):
        R.reference_vlm_dir(cache_dir=tmp_path / "cache", weights_dir=wd)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_wrong_embedded_llm_version_raises(tmp_path):
    from cotscope.probes.models.embedded import file_sha256

    wd = _copy_weights(tmp_path)
    meta = json.loads((wd / R.META_FILE).read_text())
    meta["base_gguf_sha256"] = "0" * 64
    (wd / R.META_FILE).write_text(json.dumps(meta))
    (wd / R.SUMS_FILE).write_text("".join(f"{file_sha256(wd / n)}  {n}\n" for n in R.SHIPPED_FILES))
    with pytest.raises(EmbeddedModelVersionError, match="embedded LLM"):
        R.reference_vlm_dir(cache_dir=tmp_path / "cache", weights_dir=wd)
    assert not any(p.name.startswith(R.NAME) for p in (tmp_path / "cache").iterdir())


def test_unusable_image_gives_clear_error(vlm):
    from PIL import Image

    from cotscope.probes.stimuli.visual import ImageInputError

    _, proc = vlm
    with pytest.raises(ImageInputError, match="smaller"):
        R.vlm_batch(proc, [Image.new("RGB", (1, 1))], ["What is this?"])
    with pytest.raises(ImageInputError, match="PIL.Image"):
        R.vlm_batch(proc, ["not-an-image.png"], ["What is this?"])
    with pytest.raises(ValueError, match="one image per prompt"):
        R.vlm_batch(proc, [], ["What is this?"])
