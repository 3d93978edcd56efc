"""Layer-index conventions and explicit converters between them.

cotscope's own convention is **block_output**: layer ``i`` is the output of decoder block
``model.layers[i]`` (0-based), i.e. the residual stream after block ``i``'s MLP residual add.
Every other tool counts differently; convert at the boundary with these functions, never by hand.

llama.cpp ``direction.k`` is added to the output of block ``k`` (0-based), so ``k`` equals the
cotscope index, except that ``k = 0`` is rejected. Evidence, read in llama.cpp's source
(ggml-org/llama.cpp): ``src/models/llama.cpp`` ends each layer-``il`` loop iteration with
``cur = ggml_add(ctx0, cur, ffn_inp); cur = build_cvec(cur, il); cb(cur, "l_out", il)``, and
``src/llama-adapter.cpp`` (``llama_adapter_cvec::apply_to`` / ``init``) adds ``tensors[il]``, a tensor
that exists only for ``1 <= il < n_layer`` ("there's never a tensor for layer 0"). The loader in
``common/common.cpp`` (``common_control_vector_load_one``) rejects ``direction.0`` ("invalid (zero)
direction tensor layer index"), and any tensor that is not F32 or not 1-D. repeng uses the same
numbering: its ``ControlModel`` wraps ``model.layers[k]`` and ``read_representations`` reads
``hidden_states[k + 1]``.

>>> block_to_hf_hidden_index(3, n_layers=30)
4
>>> normalize_layer(-1, 30)
29
>>> block_to_llamacpp(29, 30), llamacpp_to_block(29, 30)
(29, 29)
"""

from __future__ import annotations

import operator

from cotscope.errors import CotscopeError

__all__ = [
    "LayerIndexError",
    "CONVENTIONS",
    "CONVENTIONS_TABLE",
    "normalize_layer",
    "hf_hidden_index_to_block",
    "block_to_hf_hidden_index",
    "block_to_llamacpp",
    "llamacpp_to_block",
    "block_to_tl_hook",
    "convert_layer",
]

CONVENTIONS = ("block_output", "hf_hidden", "llamacpp", "negative")


class LayerIndexError(CotscopeError):
    """A layer index does not exist in the given convention for a model of this depth."""


def _int(i: object, what: str) -> int:
    try:
        return operator.index(i)  # accepts int and numpy integers, refuses floats and bools-as-strings
    except TypeError:
        raise LayerIndexError(f"{what} must be an integer, got {i!r} ({type(i).__name__})") from None


def _check_n_layers(n_layers: object) -> int:
    n = _int(n_layers, "n_layers")
    if n < 1:
        raise LayerIndexError(f"n_layers must be the number of decoder blocks (>= 1), got {n}")
    return n


def normalize_layer(i: int, n_layers: int) -> int:
    """Block index ``i`` (negative counts from the end, RepE/repeng style) → a 0-based block index.

    ``-1`` is the last block, ``-n_layers`` the first. Out of range → :class:`LayerIndexError` listing the valid range.

    >>> normalize_layer(-2, 30), normalize_layer(5, 30)
    (28, 5)
    """
    n = _check_n_layers(n_layers)
    i = _int(i, "layer index")
    if not -n <= i < n:
        raise LayerIndexError(
            f"layer {i} is out of range for a model with {n} decoder blocks: valid block indices "
            f"are 0..{n - 1}, or {-n}..-1 counted from the end"
        )
    return i + n if i < 0 else i


def hf_hidden_index_to_block(j: int, n_layers: int) -> int:
    """HF ``hidden_states[j]`` → the block whose output it is (``j - 1``).

    ``hidden_states`` has ``n_layers + 1`` entries; negative ``j`` counts from its end, so ``-k`` is
    block ``n_layers - k`` just like :func:`normalize_layer`. ``j = 0`` (the embeddings) is no block's
    output and raises. Caveat: for most HF decoders (Llama, Qwen, Gemma, SmolLM2) the last entry
    ``hidden_states[n_layers]`` has the final norm applied, so it is *not* numerically the raw output of
    block ``n_layers - 1``; this function maps the index only.

    >>> hf_hidden_index_to_block(1, 30), hf_hidden_index_to_block(-1, 30)
    (0, 29)
    """
    n = _check_n_layers(n_layers)
    j = _int(j, "hidden_states index")
    if not -(n + 1) <= j <= n:
        raise LayerIndexError(
            f"hidden_states[{j}] does not exist for a model with {n} decoder blocks: valid indices "
            f"are 0..{n} (0 = embeddings), or {-(n + 1)}..-1 counted from the end"
        )
    if j < 0:
        j += n + 1
    if j == 0:
        raise LayerIndexError(
            "hidden_states[0] is the embedding output, not the output of any decoder block; "
            "cotscope directions live at block outputs (hidden_states[1..n_layers])"
        )
    return j - 1


def block_to_hf_hidden_index(i: int, n_layers: int) -> int:
    """Block index (negative allowed) → the HF ``hidden_states`` index holding its output (``i + 1``).

    >>> block_to_hf_hidden_index(0, 30), block_to_hf_hidden_index(-1, 30)
    (1, 30)
    """
    return normalize_layer(i, n_layers) + 1


def block_to_llamacpp(i: int, n_layers: int) -> int:
    """Block index (negative allowed) → llama.cpp control-vector index ``k`` (tensor ``direction.k``).

    The mapping is the identity, but block 0 cannot be steered by llama.cpp (its loader rejects
    ``direction.0``), so ``i = 0`` raises.

    >>> block_to_llamacpp(-1, 30)
    29
    """
    b = normalize_layer(i, n_layers)
    if b == 0:
        raise LayerIndexError(
            f"block 0's output cannot be steered by llama.cpp: its loader rejects direction.0. "
            f"Valid llama.cpp indices for this model are 1..{_int(n_layers, 'n_layers') - 1}; "
            "drop layer 0 (DirectionSet.select) before exporting"
        )
    return b


def llamacpp_to_block(k: int, n_layers: int | None = None) -> int:
    """llama.cpp ``direction.k`` → block index ``k``. ``n_layers`` (if known) bounds ``k`` above.

    >>> llamacpp_to_block(12)
    12
    """
    k = _int(k, "llama.cpp direction index")
    hi = f"{_check_n_layers(n_layers) - 1}" if n_layers is not None else "n_layers-1"
    if k < 1 or (n_layers is not None and k >= n_layers):
        raise LayerIndexError(
            f"direction.{k} is not a valid llama.cpp control-vector index: valid indices are 1..{hi} "
            "(0 is rejected by llama.cpp's loader; negative indices do not exist in GGUF files)"
        )
    return k


def block_to_tl_hook(i: int, n_layers: int) -> str:
    """Block index → the TransformerLens 4.x ``TransformerBridge`` hook that sees its output.

    ``blocks.{i}.hook_out`` (alias ``blocks.{i}.hook_resid_post``).

    >>> block_to_tl_hook(-1, 30)
    'blocks.29.hook_out'
    """
    return f"blocks.{normalize_layer(i, n_layers)}.hook_out"


def convert_layer(i: int, src: str, dst: str, n_layers: int) -> int:
    """Convert index ``i`` from convention ``src`` to ``dst`` (names in :data:`CONVENTIONS`).

    >>> convert_layer(4, "hf_hidden", "llamacpp", 30)
    3
    """
    for c in (src, dst):
        if c not in CONVENTIONS:
            raise LayerIndexError(f"unknown layer convention {c!r}; known: {', '.join(CONVENTIONS)}")
    if src == "hf_hidden":
        b = hf_hidden_index_to_block(i, n_layers)
    elif src == "llamacpp":
        b = llamacpp_to_block(i, n_layers)
    else:  # block_output and negative are both plain block indices, negative counted from the end
        b = normalize_layer(i, n_layers)
    if dst == "hf_hidden":
        return block_to_hf_hidden_index(b, n_layers)
    if dst == "llamacpp":
        return block_to_llamacpp(b, n_layers)
    if dst == "negative":
        return b - _check_n_layers(n_layers)
    return b


CONVENTIONS_TABLE = """\
| convention | where it is used | index of the output of block `model.layers[i]` | valid range (`n` = decoder blocks) | converter (in `analyses.layers`) |
|---|---|---|---|---|
| `block_output` (cotscope) | cotscope direction files, `DirectionSet` keys; nnsight `model.layers[i].output`; PyTorch forward hook on `model.layers[i]` | `i` | `0 .. n-1` | `normalize_layer(i, n)` |
| `hf_hidden` | HF `output_hidden_states=True` → `hidden_states[j]` | `j = i + 1` (`j = 0` is the embeddings) | `0 .. n`; `hidden_states[n]` has the final norm applied in most HF decoders | `hf_hidden_index_to_block(j, n)`, `block_to_hf_hidden_index(i, n)` |
| `llamacpp` | llama.cpp control vectors (`--control-vector`), tensor `direction.k`; repeng `ControlVector.directions[k]` | `k = i` | `1 .. n-1` (block 0 cannot be steered: `direction.0` is rejected) | `block_to_llamacpp(i, n)`, `llamacpp_to_block(k, n)` |
| `negative` | RepE / repeng `hidden_layers=-1, -2, …`; Python indexing of `model.layers` | `i - n` | `-n .. -1` (`-1` = last block) | `normalize_layer(-k, n)`, `convert_layer(i, "block_output", "negative", n)` |
| TransformerLens 4.x | `TransformerBridge` hooks | `blocks.{i}.hook_out` (alias `hook_resid_post`) | `0 .. n-1` | `block_to_tl_hook(i, n)` |

Example for SmolLM2-135M (`n = 30`): the output of the last block is cotscope `29` = llama.cpp `direction.29` =
RepE `-1` = `blocks.29.hook_out`, and its HF index is `hidden_states[30]` (which HF returns after the final norm).
cotscope layer `0` has no llama.cpp index.
"""
