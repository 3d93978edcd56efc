"""Layer-index converters: round trips, the llama.cpp block-0 rule, clear errors for out-of-range indices."""

import numpy as np
import pytest

from cotscope.analyses.layers import (
    CONVENTIONS,
    CONVENTIONS_TABLE,
    LayerIndexError,
    block_to_hf_hidden_index,
    block_to_llamacpp,
    block_to_tl_hook,
    convert_layer,
    hf_hidden_index_to_block,
    llamacpp_to_block,
    normalize_layer,
)

N = 30


def test_normalize_negative_and_positive():
    assert normalize_layer(-1, N) == 29
    assert normalize_layer(-N, N) == 0
    assert normalize_layer(7, N) == 7
    assert normalize_layer(np.int64(3), N) == 3


@pytest.mark.parametrize("bad", [N, -N - 1, 100])
def test_normalize_out_of_range_lists_valid_range(bad):
    with pytest.raises(LayerIndexError, match=r"0\.\.29.*-30\.\.-1"):
        normalize_layer(bad, N)


def test_normalize_rejects_non_integers():
    with pytest.raises(LayerIndexError, match="integer"):
        normalize_layer(1.5, N)
    with pytest.raises(LayerIndexError, match="n_layers"):
        normalize_layer(0, 0)


def test_hf_hidden_round_trip_and_embeddings():
    for i in range(N):
        assert hf_hidden_index_to_block(block_to_hf_hidden_index(i, N), N) == i
    assert block_to_hf_hidden_index(0, N) == 1
    assert hf_hidden_index_to_block(-1, N) == N - 1  # hidden_states[-1] is the last block (post-norm in HF)
    assert hf_hidden_index_to_block(-N, N) == 0  # hidden_states[-N] == hidden_states[1]
    with pytest.raises(LayerIndexError, match="embedding"):
        hf_hidden_index_to_block(0, N)
    with pytest.raises(LayerIndexError, match="embedding"):
        hf_hidden_index_to_block(-(N + 1), N)
    with pytest.raises(LayerIndexError, match=r"0\.\.30"):
        hf_hidden_index_to_block(N + 1, N)


def test_negative_index_means_the_same_block_in_hidden_states_and_layers():
    # RepE reads hidden_states[-k] and steers model.layers[-k]; both must be the same block.
    for k in range(1, N + 1):
        assert hf_hidden_index_to_block(-k, N) == normalize_layer(-k, N)


def test_llamacpp_is_identity_except_block0():
    for i in range(1, N):
        assert block_to_llamacpp(i, N) == i
        assert llamacpp_to_block(i, N) == i
    assert block_to_llamacpp(-1, N) == N - 1
    with pytest.raises(LayerIndexError, match="block 0.*cannot be steered.*1\\.\\.29"):
        block_to_llamacpp(0, N)
    with pytest.raises(LayerIndexError, match="block 0"):
        block_to_llamacpp(-N, N)
    with pytest.raises(LayerIndexError, match="1\\.\\.29"):
        llamacpp_to_block(0, N)
    with pytest.raises(LayerIndexError, match="1\\.\\.29"):
        llamacpp_to_block(N, N)
    assert llamacpp_to_block(500) == 500  # depth unknown: only k >= 1 is enforced
    with pytest.raises(LayerIndexError):
        llamacpp_to_block(-2)


def test_convert_layer_all_pairs_round_trip():
    for src in CONVENTIONS:
        for dst in CONVENTIONS:
            for b in range(1, N):
                x = convert_layer(b, "block_output", src, N)
                y = convert_layer(x, src, dst, N)
                assert convert_layer(y, dst, "block_output", N) == b, (src, dst, b)
    assert convert_layer(4, "hf_hidden", "llamacpp", N) == 3
    assert convert_layer(29, "block_output", "negative", N) == -1
    with pytest.raises(LayerIndexError, match="unknown layer convention"):
        convert_layer(1, "hf", "block_output", N)


def test_tl_hook_name_and_table():
    assert block_to_tl_hook(-1, N) == "blocks.29.hook_out"
    assert CONVENTIONS_TABLE.startswith("| convention")
    for word in ("block_output", "hidden_states", "direction.k", "hook_out", "-1"):
        assert word in CONVENTIONS_TABLE
    rows = [l for l in CONVENTIONS_TABLE.splitlines() if l.startswith("|")]
    assert len({r.count("|") for r in rows}) == 1  # a well-formed markdown table
