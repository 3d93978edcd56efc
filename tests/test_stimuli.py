import json

import pytest

from cotscope.probes.stimuli import generate_problems, load_problems_jsonl, make_pairs
from cotscope.probes.stimuli.jsonl import StimulusFormatError
from cotscope.probes.stimuli.pairs import COT_CUE, DIRECT_CUE


def test_at_least_500_distinct_problems_with_exact_answers():
    probs = generate_problems(600, seed=0)
    assert len({p.question for p in probs}) == 600
    assert len({p.template for p in probs}) >= 5 and len({p.difficulty for p in probs}) == 3
    for p in probs:
        assert p.answer == eval(p.expression)
        assert str(p.answer) in p.steps[-1]


def test_generation_is_deterministic_for_a_seed():
    assert generate_problems(50, seed=3) == generate_problems(50, seed=3)
    assert generate_problems(50, seed=3) != generate_problems(50, seed=4)


def test_pairings_and_chat_template(smollm2):
    probs = generate_problems(4, seed=0)
    cue = make_pairs(probs, "cue")
    ans = make_pairs(probs, "answer")
    assert cue[0].cot.messages[0]["content"].endswith(COT_CUE)
    assert cue[0].direct.messages[0]["content"].endswith(DIRECT_CUE)
    assert ans[0].cot.messages == ans[0].direct.messages
    assert len(ans[0].cot.answer) > len(ans[0].direct.answer)
    prompt, full = cue[0].cot.render(smollm2.tokenizer)
    assert prompt.startswith("<|im_start|>system") and prompt.endswith("<|im_start|>assistant\n")
    assert full.startswith(prompt) and full.endswith("}.")
    with pytest.raises(ValueError, match="unknown pairing"):
        make_pairs(probs, "other")
    with pytest.raises(ValueError, match="empty stimulus set"):
        make_pairs([], "cue")


def test_jsonl_loader_and_line_numbers(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text(
        json.dumps({"question": "2+3?", "answer": 5}) + "\n\n" + json.dumps({"question": "1+1?", "answer": "2"}) + "\n"
    )
    probs = load_problems_jsonl(good)
    assert [p.answer for p in probs] == [5, 2]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "a", "answer": 1}) + "\n{not json\n")
    with pytest.raises(StimulusFormatError, match=r"bad.jsonl:2: not valid JSON"):
        load_problems_jsonl(bad)
    missing = tmp_path / "missing.jsonl"
    missing.write_text(json.dumps({"question": "a"}) + "\n")
    with pytest.raises(StimulusFormatError, match=":1: needs keys"):
        load_problems_jsonl(missing)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(StimulusFormatError, match="empty stimulus set"):
        load_problems_jsonl(empty)
