"""``cotscope.steer``: the context manager adds λ·v to block outputs, equals a hand-written hook, and cleans up."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import cotscope as cs


@pytest.fixture(scope="module")
def vec():
    return np.random.default_rng(0).standard_normal(576).astype(np.float32)


def _logits(lm, text="What is 12 + 7?"):
    enc = lm.tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        return lm.hf(**enc).logits


def test_steer_equals_a_plain_forward_hook(smollm2, vec):
    """Same code path as the reference (a forward hook adding λ·v to block 10's output): exact equality."""

    def ref(module, args, out):
        return out + 2.0 * torch.from_numpy(vec)

    h = smollm2.layers()[10].register_forward_hook(ref)
    try:
        want = _logits(smollm2)
    finally:
        h.remove()
    with cs.steer(smollm2, vec, 2.0, layers=[10]) as steered:
        got = _logits(smollm2)
    assert steered == [10]
    assert torch.equal(got, want)


def test_hooks_are_removed_on_exit_and_on_error(smollm2, vec):
    hooks_before = [len(blk._forward_hooks) for blk in smollm2.layers()]  # the shared model may carry others' hooks
    before = _logits(smollm2)
    with cs.steer(smollm2, vec, 3.0, layers=[-1]):
        assert not torch.equal(_logits(smollm2), before)
    assert torch.equal(_logits(smollm2), before)
    with pytest.raises(RuntimeError, match="boom"):
        with cs.steer(smollm2, vec, 3.0, layers=[5]):
            raise RuntimeError("boom")
    assert [len(blk._forward_hooks) for blk in smollm2.layers()] == hooks_before


def _block_output(lm, layer, enc):
    """Block ``layer``'s output as the next block sees it (a hook registered after any steering hook)."""
    seen = []
    h = lm.layers()[layer].register_forward_hook(lambda m, a, out: seen.append(out[0].detach().clone()))
    try:
        with torch.no_grad():
            lm.hf(**enc)
    finally:
        h.remove()
    return seen[0]


def test_last_position_only_changes_the_last_token(smollm2, vec):
    enc = smollm2.tokenizer("What is 12 + 7?", return_tensors="pt")
    base = _block_output(smollm2, 10, enc)
    with cs.steer(smollm2, vec, 1.0, layers=[10], positions="last"):
        st = _block_output(smollm2, 10, enc)
    assert torch.equal(st[:-1], base[:-1])
    torch.testing.assert_close(st[-1] - base[-1], torch.from_numpy(vec), rtol=0, atol=1e-5)  # float32 add: |h|·eps


def test_steered_generation_differs_and_bad_input_is_refused(smollm2, vec):
    plain = cs.generate(smollm2, "What is 12 + 7?", max_new_tokens=8)
    with cs.steer(smollm2, vec, 40.0, layers=[8]):
        steered = cs.generate(smollm2, "What is 12 + 7?", max_new_tokens=8)
    assert isinstance(plain, str) and plain != steered
    with pytest.raises(ValueError, match="not finite"):
        with cs.steer(smollm2, vec, float("nan"), layers=[8]):
            pass
    with pytest.raises(ValueError, match="positions"):
        with cs.steer(smollm2, vec, 1.0, layers=[8], positions="middle"):
            pass
    with pytest.raises(ValueError, match="576|hidden"):
        with cs.steer(smollm2, np.ones(10, np.float32), 1.0, layers=[8]):
            _logits(smollm2)
