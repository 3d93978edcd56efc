"""The five per-family VLM checks behind the compatibility table (tests/test_vlm_families.py and
scripts/compat_table.py both run these on the tiny models of tests/tiny_vlms.py).

Each ``check_*`` function asserts (raising ``AssertionError`` with the measured numbers) and returns the table cell:
the worst difference it saw, a count, or ``"n/a: …"`` where the check does not apply to the family (Mllama has no
image tokens; the function then asserts that cotscope refuses with :class:`NoImageTokensError`).

Tolerances. "Collection = HF" and "injection = hook" compare one computation with itself (the same forward over
the same inputs), so they are held to float32 reordering noise only. "Batched = per-item" compares two computations
(left padding shifts shapes, absolute RoPE positions and kernel blocking), so it gets :func:`fp32_tolerance`.

>>> from family_checks import CHECKS                  # doctest: +SKIP
>>> CHECKS["collection = HF hidden states"]("llava")  # doctest: +SKIP
'2e-07'
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np
import torch
from tiny_vlms import sample_image, scratch_dir, tiny_vlm

from cotscope.probes.collect import collect_pairs
from cotscope.probes.models import adapter_for
from cotscope.probes.models import processors as P
from cotscope.probes.models.loading import wrap_model
from cotscope.probes.models.registry import NoImageTokensError
from cotscope.probes.stimuli.arithmetic import generate_problems
from cotscope.probes.stimuli.pairs import Prompt, PromptPair, short_answer, worked_answer
from cotscope.probes.stimuli.visual import generate_visual_items

EPS32 = float(np.finfo(np.float32).eps)


def fp32_tolerance(ref: np.ndarray, n_layers: int, width: int) -> float:
    """Allowed max |difference| between two float32 computations of the same residual stream ``ref``.

    A reordered float32 sum of ``n`` terms moves by about ``sqrt(n)·eps`` of its magnitude; every layer adds such
    sums over the width (and the sequence, for attention), and softmax/exp and the norms amplify it by a small
    factor. We allow ``64 · n_layers · sqrt(width) · eps · max|ref|``: for the tiny models (4 layers, width 64)
    that is 2.4e-4 of the largest activation, while a real indexing or masking error moves values by O(1).
    """
    return 64.0 * n_layers * math.sqrt(width) * EPS32 * max(1.0, float(np.abs(ref).max()))


def max_diff(a, b, tol: float, what: str) -> float:
    """Max |a - b|, asserted ``<= tol``."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, f"{what}: shapes {a.shape} vs {b.shape}"
    d = float(np.abs(a - b).max())
    assert d <= tol, f"{what}: max |diff| {d:.3g} > tolerance {tol:.3g}"
    return d


def in_sequence(family: str) -> bool:
    return adapter_for(tiny_vlm(family).model).image_tokens_in_sequence


def positions_for(family: str) -> tuple[str, ...]:
    return ("last_prompt", "answer_mean", "image_mean") if in_sequence(family) else ("last_prompt", "answer_mean")


def loaded_for(family: str):
    vlm = tiny_vlm(family)
    return wrap_model(vlm.model, processor=vlm.processor, model_id=f"tiny-{family}")


def make_pairs(family: str) -> list[PromptPair]:
    """Two pairs with images of different sizes, so rows differ in length (padding is exercised)."""
    proc = tiny_vlm(family).processor
    items = generate_visual_items(2, seed=3, kinds=("expression", "bars"))
    out = []
    for i, (prob, item) in enumerate(zip(generate_problems(2, seed=3), items)):

        def member(prompt: str, answer: str, image) -> Prompt:
            return Prompt([{"role": "user", "content": P.image_prompt(proc, "<image>\n" + prompt)}], answer, image)

        other = sample_image(*((48, 64), (80, 40))[i], seed=i)
        q = "What is shown?" if i else item.direct_prompt  # a shorter prompt: rows differ in text length too
        out.append(
            PromptPair(
                i,
                prob,
                "cue",
                member(item.cot_prompt, worked_answer(prob), item.image),
                member(q, short_answer(prob), other),
            )
        )
    return out


@functools.cache
def collected(family: str):
    """``(loaded, pairs, per-item store, batched store)``: every token kept, batch 1 and batch 4."""
    loaded, pairs = loaded_for(family), make_pairs(family)
    root = scratch_dir(f"families-{family}-")
    pos = positions_for(family)
    kw = dict(positions=pos, all_tokens=True, progress=False)
    one = collect_pairs(loaded, pairs, root / "b1", batch_size=1, **kw)
    four = collect_pairs(loaded, pairs, root / "b4", batch_size=4, **kw)
    return loaded, pairs, one, four


def hf_item(family: str, text: str, image):
    """Independent reference: the family's processor on one item, then HF ``output_hidden_states``."""
    vlm = tiny_vlm(family)
    kw = adapter_for(vlm.model).processor_kwargs
    enc = vlm.processor(text=[text], images=[[image]], return_tensors="pt", **kw)
    enc.pop("labels", None)
    with torch.no_grad():
        hs = lm_outputs(vlm.model(**enc, output_hidden_states=True)).hidden_states
    return enc, hs


def lm_outputs(out):
    """The language model's part of a forward's outputs (BLIP-2-style models nest it in ``language_model_outputs``)."""
    nested = getattr(out, "language_model_outputs", None)
    return nested if nested is not None and getattr(out, "hidden_states", None) is None else out


@functools.cache
def hf_rows(family: str) -> list:
    loaded, pairs, _, _ = collected(family)
    return [hf_item(family, pr.render(loaded.processor)[1], pr.image) for pair in pairs for _, pr in pair.members()]


# ------------------------------------------------------------------------------------------------- checks


def check_hidden_states(family: str) -> str:
    """Stored residuals (all tokens, every layer) equal HF ``hidden_states[i+1]``; ``last_prompt`` picks the token
    before the answer (and before any processor suffix)."""
    loaded, _, one, _ = collected(family)
    model = tiny_vlm(family).model
    norm = adapter_for(model).final_norm(model)
    worst = 0.0
    for row, (enc, hs) in enumerate(hf_rows(family)):
        stored = one.all_tokens(row)
        assert stored.shape[0] == len(hs) - 1
        tol = 1e-5 * max(1.0, float(np.abs(stored).max()))  # one code path: reordering noise only
        for li in range(stored.shape[0] - 1):
            worst = max(worst, max_diff(stored[li], hs[li + 1][0].numpy(), tol, f"{family} row {row} layer {li}"))
        with torch.no_grad():
            normed = norm(torch.from_numpy(stored[-1])[None])[0].numpy()
        worst = max(worst, max_diff(normed, hs[-1][0].numpy(), tol, f"{family} row {row} final norm"))
        it = one.items[row]
        T = enc["input_ids"].shape[1]
        k = T - 1 - int(it["n_answer_tokens"]) - int(it.get("n_suffix_tokens", 0))
        max_diff(one.get("last_prompt")[row], stored[:, k], 0.0, f"{family} row {row} last_prompt")
        # the processor adds nothing after the text beyond the declared suffix (e.g. no chat separator token)
        last_text = loaded.tokenizer(it["text"], add_special_tokens=False)["input_ids"][-1]
        n_sfx = int(it.get("n_suffix_tokens", 0))
        assert int(enc["input_ids"][0, T - 1 - n_sfx]) == last_text, f"{family}: tokens appended after the text"
        assert loaded.tokenizer.decode(enc["input_ids"][0, k + 1 : T - int(it.get("n_suffix_tokens", 0))]).strip()
    return f"{worst:.0e}"


def processor_image_mask(family: str, enc) -> np.ndarray:
    """The processor's own account of which positions carry image features: its modality type ids when it returns
    them (PaliGemma's ``token_type_ids`` mark prefix vs suffix instead, so not for it), else its image token id."""
    proc = tiny_vlm(family).processor
    keys = ("mm_token_type_ids",) if family == "paligemma" else ("mm_token_type_ids", "token_type_ids")
    for key in keys:
        if key in enc:
            return (np.asarray(enc[key]) == 1)[0]
    token = EXPANDED_TOKEN.get(family, str(proc.image_token))
    tid = (
        proc.tokenizer.convert_tokens_to_ids(token)
        if family in EXPANDED_TOKEN
        else getattr(proc, "image_token_id", None)
    )
    tid = proc.tokenizer.convert_tokens_to_ids(token) if tid is None else tid  # Janus keeps only the token string
    return np.asarray(enc["input_ids"])[0] == tid


EXPANDED_TOKEN = {"ovis2": "<IMG_ATOM>"}
"""Families whose processor's ``image_token_id`` is the prompt placeholder, not the expanded feature token."""


def check_image_mask(family: str) -> str:
    """The stored image mask equals the processor's image-token positions (batch 1 and 4); ``image_mean`` is the
    mean over exactly those positions. Cross-attention families: every image-token request is refused."""
    loaded, pairs, one, four = collected(family)
    if not in_sequence(family):
        for call in (
            lambda: loaded.adapter.image_token_mask(torch.zeros(1, 3, dtype=torch.long), loaded.config),
            lambda: collect_pairs(loaded, pairs, scratch_dir("nomask-"), positions=("image_mean",), progress=False),
        ):
            try:
                call()
            except NoImageTokensError as e:
                assert "cross-attention" in str(e) and "Use instead" in str(e)
            else:
                raise AssertionError(f"{family}: image-token request was not refused")
        assert "image_mask" not in one.shard_keys() if hasattr(one, "shard_keys") else True
        return "n/a: cross-attention (refused)"
    counts = []
    for row, (enc, _) in enumerate(hf_rows(family)):
        own = processor_image_mask(family, enc)
        assert own.sum() > 0
        np.testing.assert_array_equal(one.image_masks()[row], own)
        np.testing.assert_array_equal(four.image_masks()[row], own)
        counts.append(int(own.sum()))
        m = one.image_masks()[row].astype(bool)
        max_diff(one.get("image_mean")[row], one.all_tokens(row)[:, m].mean(1), 1e-5 * 100, f"{family} image_mean")
    return "n=" + "/".join(map(str, counts))


def check_batched(family: str) -> str:
    """A left-padded batch of 4 (mixed lengths) equals per-item collection within :func:`fp32_tolerance`."""
    loaded, _, one, four = collected(family)
    assert len({four.all_tokens(r).shape[1] for r in range(four.n_items)}) > 1, "the batch must mix lengths"
    worst = 0.0
    L, d = loaded.n_layers, loaded.hidden_size
    for p in positions_for(family):
        ref = one.get(p)
        worst = max(worst, max_diff(four.get(p), ref, fp32_tolerance(ref, L, d), f"{family} {p}"))
    for row in range(one.n_items):
        ref = one.all_tokens(row)
        worst = max(worst, max_diff(four.all_tokens(row), ref, fp32_tolerance(ref, L, d), f"{family} row {row}"))
    return f"{worst:.0e}"


def check_injection(family: str) -> str:
    """Steered generation with an image (cotscope's nnsight injection) gives the same tokens as plain forward hooks
    on the HF model, and the injection changes the output."""
    from test_intervene import reference_generate

    from cotscope.probes.intervene import RowSteer, generate_steered

    vlm = tiny_vlm(family)
    lm = loaded_for(family)
    v = (np.random.default_rng(0).standard_normal(lm.hidden_size) * 8).astype(np.float32)
    rows = [RowSteer.none(), RowSteer({1: v}, 2.0), RowSteer({1: v, 2: v}, 1.0)]
    img, prompt = sample_image(), vlm.prompt()
    for positions in ("first", "prompt"):
        got = generate_steered(lm, [prompt] * 3, rows, images=[img] * 3, positions=positions, budget=4)
        ref = reference_generate(lm, [prompt] * 3, rows, positions, 4, images=[img] * 3)
        assert [r.token_ids for r in got] == ref, f"{family} {positions}: {[r.token_ids for r in got]} vs {ref}"
    changed = got[1].token_ids != got[0].token_ids or got[2].token_ids != got[0].token_ids
    assert changed, f"{family}: the injection left every row's tokens unchanged"
    return "tokens equal"


def attention_layers(lm) -> list[int]:
    """The blocks with attention rows: linear-attention and convolution blocks (hybrid models) have none."""
    kinds = getattr(lm.adapter.text_config(lm.config), "layer_types", None) or ["full_attention"] * lm.n_layers
    return [i for i, k in enumerate(kinds) if "attention" in k and "linear" not in k]


def check_attention(family: str) -> str:
    """Captured attention rows (generation with an image) equal HF ``output_attentions`` of a teacher-forced eager
    forward over the same tokens. Cross-attention families: capture with images is refused."""
    from cotscope.probes.attention import CaptureRequest, capture_batch
    from cotscope.probes.collect import encode_batch

    lm = loaded_for(family)
    vlm = tiny_vlm(family)
    req = CaptureRequest("a", "What is in this picture?", image=sample_image())
    if not in_sequence(family):
        try:
            capture_batch(lm, [req], layers=[0], max_new_tokens=2)
        except NoImageTokensError as e:
            assert "attention shift" in str(e)
            return "n/a: cross-attention (refused)"
        raise AssertionError(f"{family}: attention capture with an image was not refused")
    full = attention_layers(lm)
    layers = [full[0], full[-1]] if len(full) > 1 else full
    tr = capture_batch(lm, [req], layers=layers, max_new_tokens=3, min_new_tokens=3)[0]
    rec, ten = tr["record"], tr["tensors"]
    assert rec["question_found"], f"{family}: the question's tokens were not located among the prompt tokens"
    P_, n = rec["prompt_len"], rec["n_steps"]
    enc = dict(encode_batch(lm, [rec["prompt_text"]], [req.image]))
    enc.pop("labels", None)
    ids = torch.as_tensor(ten["token_ids"])[None][:, : P_ + n - 1]
    assert torch.equal(ids[:, :P_], enc["input_ids"])
    extra = ids.shape[1] - P_
    enc["input_ids"], enc["attention_mask"] = ids, torch.ones_like(ids)
    for key in ("mm_token_type_ids", "token_type_ids", "moe_mm_token_type_ids"):  # generated tokens are text
        if key in enc:
            fill = 1 if family == "paligemma" else 0  # PaliGemma: generated tokens are suffix (causal), type 1
            enc[key] = torch.cat([enc[key], torch.full((1, extra), fill, dtype=enc[key].dtype)], 1)
    with torch.no_grad():
        att = lm_outputs(vlm.model(**enc, output_attentions=True)).attentions
    worst = 0.0
    off = ten["row_offsets"]
    rows = ten["rows"]
    for s in range(n):
        got = rows[..., off[s] : off[s + 1]]  # [L, h, K]
        # hybrid models return attentions for their full-attention layers only, in layer order
        at = {l: att[full.index(l) if len(att) == len(full) else l] for l in layers}
        ref = np.stack([at[l][0, :, P_ - 1 + s, : P_ + s].numpy() for l in layers])
        worst = max(worst, max_diff(got, ref, 2e-6, f"{family} step {s}"))
    return f"{worst:.0e}"


def check_remote_attention(family: str) -> str:
    """Attention capture through nnsight's simulation of NDIF (``remote="local"``: ``switch="traced"``, rows computed
    inside the trace from the attention-interface inputs) equals the local ``switch="rows"`` capture bit for bit
    (tokens, records, rows, key-type masses): the same eager function on the same tensors."""
    from cotscope.probes.attention import CaptureRequest, capture_batch

    if not in_sequence(family):
        return "n/a: cross-attention (refused)"
    lm = loaded_for(family)
    full = attention_layers(lm)
    layers = [full[0], full[-1]] if len(full) > 1 else full
    req = [CaptureRequest("a", "What is in this picture?", image=sample_image())]
    kw = dict(layers=layers, max_new_tokens=3, min_new_tokens=3)
    a = capture_batch(lm, req, switch="rows", **kw)[0]
    b = capture_batch(lm, req, remote="local", **kw)[0]
    assert a["record"] == b["record"], f"{family}: records differ"
    for k in a["tensors"]:
        assert np.array_equal(a["tensors"][k], b["tensors"][k]), f"{family}: {k} differs"
    return "equal"


CHECKS: dict[str, Callable[[str], str]] = {
    "collection = HF hidden states": check_hidden_states,
    "image mask": check_image_mask,
    "batched = per-item": check_batched,
    "injection = hook": check_injection,
    "attention rows = HF": check_attention,
    "attention remote = local": check_remote_attention,
}
