"""``steer``: a context manager that adds ``lam * v[l]`` to block outputs of a loaded model (plain PyTorch hooks).

Inside the ``with`` block every forward, ``generate`` included, is steered; on exit the hooks are gone,
also after an exception. The vector for block ``l`` is created on that block's own device and in its
dtype, so it works with ``device_map="auto"`` over several GPUs. Same layer convention and the same
result as :func:`cotscope.probes.apply.apply` inside an nnsight trace.

>>> with steer(lm, directions, 4.0, layers=[12]):                    # doctest: +SKIP
...     out = lm.hf.generate(**lm.tokenizer("Q: 12 + 7?", return_tensors="pt"), max_new_tokens=20)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from cotscope.probes.apply import Positions, _check_positions, _with_delta, steering_vectors


@contextlib.contextmanager
def steer(
    lm: Any,
    direction: Any,
    lam: float,
    *,
    layers: Sequence[int] | None = None,
    positions: Positions = "all",
    normalize: bool = False,
) -> Iterator[list[int]]:
    """Steer ``lm`` (a :class:`~cotscope.probes.models.loading.LoadedModel`) while the block is open.

    ``direction``: a DirectionSet (``layers=None`` → all its layers), a 1-D vector (``layers`` required) or one row
    per block. Yields the steered block indices.
    """
    from cotscope.probes.intervene import check_lam

    lam = check_lam(lam)
    positions = _check_positions(positions)  # any Positions spelling -> this forward pass's mask spec
    blocks = lm.layers()
    vecs = steering_vectors(direction, layers, n_layers=len(blocks), hidden_size=lm.hidden_size, normalize=normalize)
    handles = []
    try:
        for b, vec in vecs.items():

            def hook(module: Any, args: Any, output: Any, vec=vec) -> Any:
                return _with_delta(output, vec, lam, positions)

            handles.append(blocks[b].register_forward_hook(hook))
        yield sorted(vecs)
    finally:
        for h in handles:
            h.remove()
