"""Answer extraction, normalisation, accuracy, response length and forced-answer tokens (SmolLM2 tokenizer)."""

from __future__ import annotations

import pytest

from cotscope.probes.evaluate import (
    AnswerTemplateError,
    accuracy,
    extract_answer,
    forced_answer,
    is_correct,
    normalize_answer,
    response_length,
    summarize,
)


@pytest.fixture(scope="module")
def tok(smollm2_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_path)


@pytest.mark.parametrize(
    "text,expected",
    [
        ("The answer is \\boxed{42}.", "42"),
        ("first \\boxed{3} then \\boxed{ 1,204.0 }", "1204"),  # last box wins, normalised
        ("\\boxed{\\frac{1}{2}} and 7", "\\frac{1}{2}"),  # nested braces kept intact
        ("\\boxed{} but the total is 19 apples.", "19"),  # empty box → number fallback
        ("She has $1,250 left", "1250"),
        ("so 12 + 7 = 19.", "19"),
        ("x = -5", "-5"),
        ("It costs 3.50 dollars", "3.5"),
        ("The result is 7.0", "7"),
        ("no numbers here", None),
        ("\\boxed{\\text{12}}", "12"),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_normalize_and_correct():
    assert normalize_answer("$ 1,000 ") == "1000"
    assert normalize_answer("+3") == "3"
    assert normalize_answer("007") == "7"
    assert normalize_answer(12.0) == "12"
    assert normalize_answer(None) is None
    assert is_correct("The answer is \\boxed{19}", 19)
    assert is_correct("so 19.00", "19")
    assert not is_correct("so 91", 19)
    assert not is_correct("", 19)
    assert is_correct("19", 19, extracted=True)


def test_accuracy_and_summary():
    assert accuracy(["\\boxed{4}", "5", "nothing"], [4, 6, 1]) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="gold"):
        accuracy(["1"], [1, 2])
    with pytest.raises(ValueError, match="empty"):
        accuracy([], [])
    assert summarize([True, False, True]) == {"n": 3, "correct": 2, "accuracy": pytest.approx(2 / 3)}


def test_forced_answer_marks_exactly_the_gold_tokens(tok):
    fa = forced_answer(tok, 1204)
    assert fa.text == " The answer is \\boxed{1204}."
    assert tok.decode(list(fa.ids)) == fa.text
    assert tok.decode([t for t, g in zip(fa.ids, fa.gold_mask) if g]) == "1204"
    assert fa.n_gold == 4  # SmolLM2 splits digits
    short = forced_answer(tok, "7", template="Answer: {answer}")
    assert tok.decode([t for t, g in zip(short.ids, short.gold_mask) if g]).strip() == "7"
    with pytest.raises(AnswerTemplateError, match="answer"):
        forced_answer(tok, 3, template="no field here")
    with pytest.raises(AnswerTemplateError, match="empty"):
        forced_answer(tok, "", template="{answer}")


def test_response_length(tok):
    assert response_length(tok, "") == 0
    assert response_length(tok, "12 + 7 = 19") == len(tok("12 + 7 = 19", add_special_tokens=False)["input_ids"])
