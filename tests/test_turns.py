"""Token rules `eot` / `turn_end`: the end of the assistant turn, found from each family's chat template."""

import numpy as np
import pytest
from tiny_vlms import BUILDERS, FAMILIES, smol_tokenizer

from cotscope.probes.stimuli.turns import TemplateLayoutError, template_suffix, turn_layout

USER = [{"role": "user", "content": "Ava has 3 apples and gets 4 more. How many now?"}]
ANSWER = "Ava starts with 3. 3 + 4 = 7. The answer is \\boxed{7}."

# Minimal templates with each family's turn format (written for these tests; special tokens are added to a copy of
# the SmolLM2 tokenizer). Each entry: template, the end-of-turn token, the last token of the templated turn.
FAMILY_TEMPLATES = {
    "chatml (qwen2, internlm2, smollm2)": (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
        "<|im_end|>",
        "\n",
    ),
    "llama3": (
        "<|begin_of_text|>{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
        "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
        "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}",
        "<|eot_id|>",
        "<|eot_id|>",
    ),
    "gemma": (
        "<bos>{% for m in messages %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n"
        "{{ m['content'] | trim }}<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n"
        "{% endif %}",
        "<end_of_turn>",
        "\n",
    ),
    "mistral": (
        "<s>{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]"
        "{% else %}{{ m['content'] }}</s>{% endif %}{% endfor %}",
        "</s>",
        "</s>",
    ),
    "phi3": (
        "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>\n{% endif %}",
        "<|end|>",
        "\n",
    ),
    "idefics2": (
        "{% for m in messages %}{{ m['role'] | capitalize }}: {{ m['content'] }}<end_of_utterance>\n{% endfor %}"
        "{% if add_generation_prompt %}Assistant:{% endif %}",
        "<end_of_utterance>",
        "\n",
    ),
    "deepseek-r1-distill": (
        "<｜begin▁of▁sentence｜>{% for m in messages %}{% if m['role'] == 'user' %}<｜User｜>{{ m['content'] }}"
        "{% else %}<｜Assistant｜>{{ m['content'].split('</think>')[-1] }}<｜end▁of▁sentence｜>{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}<｜Assistant｜><think>\n{% endif %}",
        "<｜end▁of▁sentence｜>",
        "<｜end▁of▁sentence｜>",
    ),
}
SPECIALS = [
    "<|begin_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<bos>",
    "<start_of_turn>",
    "<end_of_turn>",
    "<s>",
    "</s>",
    "<|end|>",
    "<|user|>",
    "<|assistant|>",
    "<end_of_utterance>",
    "<｜begin▁of▁sentence｜>",
    "<｜User｜>",
    "<｜Assistant｜>",
    "<｜end▁of▁sentence｜>",
]


@pytest.fixture(scope="module")
def family_tok():
    tok = smol_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": SPECIALS})
    return tok


def _check(tok, lay, eot, last):
    ids = tok(lay.text, add_special_tokens=False)["input_ids"]
    toks = tok.convert_ids_to_tokens(ids)
    assert tok.decode(ids[-1:]) == last  # `turn_end` = last token of the turn
    assert toks[len(ids) - 1 - lay.eot_from_end] == eot == lay.eot_token  # `eot` = the end-of-turn token
    # the answer tokens sit right before the suffix, the prompt's last token right before them
    n_a, n_s = lay.n_answer_tokens, lay.n_suffix_tokens
    assert tok.decode(ids[len(ids) - n_s - n_a : len(ids) - n_s]).strip() == lay.answer.strip()
    assert lay.text.startswith(lay.head) and lay.head.startswith(tok.decode(ids[: len(ids) - n_s - n_a]))


@pytest.mark.parametrize("family", sorted(FAMILY_TEMPLATES))
def test_family_templates(family_tok, family):
    template, eot, last = FAMILY_TEMPLATES[family]
    family_tok.chat_template = template
    lay = turn_layout(family_tok, USER, ANSWER)
    _check(family_tok, lay, eot, last)


def test_smollm2_own_template(smollm2):
    lay = turn_layout(smollm2.tokenizer, USER, ANSWER)
    assert (lay.eot_token, lay.eot_from_end, lay.n_suffix_tokens) == ("<|im_end|>", 1, 2)
    _check(smollm2.tokenizer, lay, "<|im_end|>", "\n")


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_vlm_processor_templates(family):
    _, proc = BUILDERS[family](smol_tokenizer())
    from cotscope.probes.models.processors import image_placeholder

    msgs = [{"role": "user", "content": image_placeholder(proc) + "\nWhat is 3 + 4?"}]
    lay = turn_layout(proc, msgs, "3 + 4 = 7. The answer is 7.")
    _check(proc.tokenizer, lay, "<|im_end|>", "\n")


def test_no_special_token_after_the_answer(family_tok):
    family_tok.chat_template = (
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }} END\n{% endfor %}"
        "{% if add_generation_prompt %}assistant:{% endif %}"
    )
    with pytest.raises(TemplateLayoutError, match="turn_end"):
        turn_layout(family_tok, USER, ANSWER)
    lay = turn_layout(family_tok, USER, ANSWER, require_eot=False)
    assert lay.eot_from_end is None and lay.offsets()["turn_end"] == 0 and "eot" not in lay.offsets()


def test_bad_inputs(family_tok):
    family_tok.chat_template = FAMILY_TEMPLATES["deepseek-r1-distill"][0]
    with pytest.raises(TemplateLayoutError, match="dropped"):
        turn_layout(family_tok, USER, "long thought</think>")
    with pytest.raises(TemplateLayoutError, match="need an assistant answer"):
        turn_layout(family_tok, USER, None)
    family_tok.chat_template = FAMILY_TEMPLATES["mistral"][0]
    head, suffix = template_suffix(family_tok, USER)
    assert head.endswith("[/INST]") and suffix == "</s>"


def test_collect_reads_the_eot_token_like_a_plain_forward(smollm2, tmp_path):
    import torch

    from cotscope.probes.collect import collect_pairs
    from cotscope.probes.stimuli import generate_problems, make_pairs

    pairs = make_pairs(generate_problems(3, seed=5), pairing="answer")
    layers = [0, 14, 29]
    store = collect_pairs(
        smollm2,
        pairs,
        tmp_path / "s",
        layers=layers,
        batch_size=6,
        progress=False,
        positions=("eot", "turn_end", "last_prompt", "answer_mean"),
    )
    items = store.items
    eot_id = smollm2.tokenizer.convert_tokens_to_ids("<|im_end|>")
    for r in (0, 3):  # one CoT and one direct row, each alone (no padding)
        ids = smollm2.tokenizer(items[r]["text"], add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            hs = smollm2.hf(input_ids=ids, output_hidden_states=True).hidden_states
        pos_eot = int(np.flatnonzero(ids[0].numpy() == eot_id)[-1])  # the last <|im_end|> ends the assistant
        assert pos_eot == ids.shape[1] - 2
        n_a = items[r]["n_answer_tokens"]
        for k, l in enumerate(layers):
            if l == smollm2.n_layers - 1:
                continue  # HF applies the final norm to hidden_states[n]
            ref = hs[l + 1][0]
            # batch of 6 rows, left-padded: equal to the unpadded forward within float32 noise
            got = lambda pos: store.paired(pos, l)[0 if items[r]["label"] == 1 else 1][items[r]["pair_id"]]
            assert np.allclose(got("eot"), ref[pos_eot].numpy(), atol=2e-4)
            assert np.allclose(got("turn_end"), ref[-1].numpy(), atol=2e-4)
            assert np.allclose(got("last_prompt"), ref[pos_eot - n_a - 1].numpy(), atol=2e-4)
            assert np.allclose(got("answer_mean"), ref[pos_eot - n_a : pos_eot].mean(0).numpy(), atol=2e-4)
