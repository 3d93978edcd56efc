"""Where a chat template puts the assistant's answer and the end-of-turn token after it.

The released L2V-CoT code reads its direction from ``apply_chat_template([user, assistant], tokenize=False)``
at the **last token of that text** (``latent[:, -1]``). What that token is depends on the template:

==================  ============================================  =======================================
family              what the template appends after the answer    last token of the templated turn
==================  ============================================  =======================================
ChatML (Qwen2,      ``<|im_end|>`` + ``\\n``                      ``\\n`` (the end-of-turn token is 2nd
InternLM2, SmolLM2)                                               to last)
Llama 3             ``<|eot_id|>``                                ``<|eot_id|>``
Gemma               ``<end_of_turn>`` + ``\\n``                   ``\\n``
==================  ============================================  =======================================

So cotscope has two token rules, both found from the model's own template (never from a hard-coded string):

* ``eot``      — the end-of-turn token itself: the first special token the template writes after the answer;
* ``turn_end`` — the last token of the templated turn, exactly what the released code reads.

:func:`turn_layout` renders a conversation once with a sentinel answer to learn the template's text around the
answer, then with the real answer, and returns the token counts that locate the answer, the end-of-turn token
and the last prompt token from the end of the sequence (left padding keeps those offsets valid).

>>> from transformers import AutoTokenizer                                    # doctest: +SKIP
>>> lay = turn_layout(tok, [{"role": "user", "content": "2+2?"}], "4")         # doctest: +SKIP
>>> lay.eot_token, lay.eot_from_end, lay.n_suffix_tokens                       # doctest: +SKIP
('<|im_end|>', 1, 2)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from cotscope.errors import CotscopeError

TURN_RULES = ("eot", "turn_end")
_SENTINEL = "QQCOTSCOPESENTINELQQ"


class TemplateLayoutError(CotscopeError):
    """The model's chat template does not have the layout a token rule needs."""


@dataclasses.dataclass(frozen=True)
class TurnLayout:
    """One templated ``[…, user, assistant]`` conversation and where its parts are, counted in tokens.

    ``head`` is everything before the assistant's content (it ends with the assistant header),
    ``answer`` the content as the template rendered it, ``suffix`` what the template appends after it.
    Offsets count from the end: ``eot_from_end = 0`` is the last token.
    """

    head: str
    answer: str
    suffix: str
    n_answer_tokens: int
    n_suffix_tokens: int
    eot_from_end: int | None
    eot_token: str | None
    eot_token_id: int | None

    @property
    def text(self) -> str:
        return self.head + self.answer + self.suffix

    def offsets(self) -> dict[str, int]:
        """Token offsets from the end for every rule (``last_prompt`` = last token before the answer)."""
        out = {"turn_end": 0, "last_prompt": self.n_suffix_tokens + self.n_answer_tokens}
        if self.eot_from_end is not None:
            out["eot"] = self.eot_from_end
        return out


def _tokenizer(encoder: Any) -> Any:
    return getattr(encoder, "tokenizer", None) or encoder


def _apply(encoder: Any, messages: Sequence[dict[str, Any]]) -> str:
    try:
        return encoder.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=False)
    except Exception as e:  # no template, or a template that refuses this conversation
        raise TemplateLayoutError(
            f"the chat template of {type(encoder).__name__} cannot render a [user, assistant] conversation ({e}); "
            "token rules 'eot'/'turn_end' need a chat template with an assistant turn"
        ) from None


def special_ids(tokenizer: Any) -> set[int]:
    """Ids the tokenizer treats as special (declared special tokens and special added tokens)."""
    ids = {int(i) for i in getattr(tokenizer, "all_special_ids", []) or []}
    for i, tok in (getattr(tokenizer, "added_tokens_decoder", None) or {}).items():
        if getattr(tok, "special", False):
            ids.add(int(i))
    return ids


def _ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def template_suffix(encoder: Any, messages: Sequence[dict[str, Any]]) -> tuple[str, str]:
    """``(head, suffix)``: the template's text before and after the assistant's content for ``messages``."""
    full = _apply(encoder, list(messages) + [{"role": "assistant", "content": _SENTINEL}])
    if full.count(_SENTINEL) != 1:
        raise TemplateLayoutError(
            "the chat template does not render the assistant's content exactly once; cannot "
            "locate the end of the assistant turn"
        )
    i = full.index(_SENTINEL)
    return full[:i], full[i + len(_SENTINEL) :]


def _split_counts(tok: Any, head: str, answer: str, suffix: str) -> tuple[int, int, list[int]]:
    """``(n_answer_tokens, n_suffix_tokens, suffix ids)`` of ``head + answer + suffix`` tokenized as one text.

    A token that straddles the head/answer boundary (e.g. ``" " + "Ava"`` → ``"ĠAva"``) counts as an answer token;
    one that straddles the answer/suffix boundary makes the split ambiguous and is refused.
    """
    full = head + answer + suffix
    a0, a1 = len(head), len(head) + len(answer)
    bad = TemplateLayoutError(
        "the tokens of the templated turn do not split at the end of the answer (its last "
        "characters merge with the template's suffix); end the answer with punctuation or a "
        "space, or use token rule 'last'"
    )
    try:
        enc = tok(full, add_special_tokens=False, return_offsets_mapping=True)
        offsets = enc["offset_mapping"]
    except (NotImplementedError, KeyError, TypeError, ValueError):
        offsets = None
    ids = list(enc["input_ids"]) if offsets is not None else _ids(tok, full)
    if offsets is not None and len(offsets) == len(ids):
        n_suf = sum(1 for a, b in offsets if a >= a1 and b > a)  # zero-width tokens never start a suffix
        n_ans = sum(1 for a, b in offsets if a < a1 and b > a0)
        if any(a < a1 < b for a, b in offsets):
            raise bad
        if n_suf and ids[-n_suf:] != _ids(tok, suffix):
            raise bad
        return n_ans, n_suf, ids[len(ids) - n_suf :]
    # slow tokenizer: prefix counts (a head/answer merge makes the first answer token look like part of the head)
    body = _ids(tok, head + answer)
    ids_suffix = _ids(tok, suffix)
    n_suf = len(ids) - len(body)
    if ids[: len(body)] != body or n_suf != len(ids_suffix) or (n_suf and ids[-n_suf:] != ids_suffix):
        raise bad
    head_ids = _ids(tok, head)
    k = 0
    while k < min(len(head_ids), len(body)) and head_ids[k] == body[k]:
        k += 1
    return len(body) - k, n_suf, ids_suffix


def turn_layout(
    encoder: Any, messages: Sequence[dict[str, Any]], answer: str, *, require_eot: bool = True
) -> TurnLayout:
    """Template ``messages + [assistant: answer]`` with ``encoder``'s chat template and locate its parts.

    ``encoder`` is a tokenizer or a processor (its ``apply_chat_template`` is used; counts use its tokenizer).
    Raises :class:`TemplateLayoutError` when the template appends no special token after the assistant turn (with
    ``require_eot=False`` the layout is returned with ``eot_*`` set to ``None``: ``turn_end`` still works) or when
    its tokens do not split cleanly at the answer's end.
    """
    if answer is None or not str(answer).strip():
        raise TemplateLayoutError(
            "token rules 'eot'/'turn_end' need an assistant answer; build pairs with answers "
            "(make_pairs(..., with_answers=True) or pairing='answer')"
        )
    tok = _tokenizer(encoder)
    head, suffix = template_suffix(encoder, messages)
    full = _apply(encoder, list(messages) + [{"role": "assistant", "content": str(answer)}])
    if not (full.startswith(head) and full.endswith(suffix)) or len(full) < len(head) + len(suffix):
        raise TemplateLayoutError(
            "the chat template renders the assistant turn differently for different answers "
            "(it does not keep a fixed text before and after the content); cannot use 'eot'"
        )
    rendered = full[len(head) : len(full) - len(suffix)]
    if not rendered.strip():
        raise TemplateLayoutError(
            f"the chat template dropped the assistant's answer {str(answer)[:40]!r} (some "
            "reasoning templates strip the thought before '</think>'); pass the answer "
            "without the part the template removes"
        )
    n_ans, n_suf, ids_suffix = _split_counts(tok, head, rendered, suffix)
    if n_suf == 0:
        raise TemplateLayoutError(
            "the chat template appends nothing after the assistant's answer, so there is no "
            "end-of-turn token; use token rule 'last'"
        )
    special = special_ids(tok)
    k = next((j for j, t in enumerate(ids_suffix) if t in special), None)
    if k is None and not require_eot:
        return TurnLayout(
            head=head,
            answer=rendered,
            suffix=suffix,
            n_answer_tokens=n_ans,
            n_suffix_tokens=n_suf,
            eot_from_end=None,
            eot_token=None,
            eot_token_id=None,
        )
    if k is None:
        raise TemplateLayoutError(
            f"the chat template appends {suffix!r} after the assistant's answer, which holds no special token, so "
            "there is no end-of-turn token to read; use token rule 'turn_end' (the last token of the turn)"
        )
    return TurnLayout(
        head=head,
        answer=rendered,
        suffix=suffix,
        n_answer_tokens=n_ans,
        n_suffix_tokens=n_suf,
        eot_from_end=n_suf - 1 - k,
        eot_token=tok.convert_ids_to_tokens(ids_suffix[k]),
        eot_token_id=int(ids_suffix[k]),
    )
