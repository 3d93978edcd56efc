"""Add ``lam * direction`` to block outputs: inside an nnsight trace (:func:`apply`) or as TransformerLens hooks (:func:`tl_hooks`).

Both use cotscope's layer convention: layer ``i`` is the output of ``model.layers[i]`` (nnsight
``model.model.layers[i].output``, TransformerLens ``blocks.{i}.hook_out``); negative layers count from the end.
The result equals a PyTorch forward hook on ``model.layers[i]`` that returns ``output + lam * v``.

>>> with lm.trace("The answer is"):                               # doctest: +SKIP
...     apply(ds, lm, 4.0, positions="last")
...     logits = lm.output.logits.save()
>>> bridge.run_with_hooks(ids, fwd_hooks=tl_hooks(ds, 4.0, model=bridge))   # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from cotscope.analyses.artifacts import DirectionFileError, DirectionSet
from cotscope.analyses.layers import LayerIndexError, normalize_layer
from cotscope.probes.models.registry import FALLBACK_LAYER_PATHS as LAYER_PATHS  # noqa: F401  (the old name)
from cotscope.probes.positions import Positions, PositionsError, PositionsLike


def steering_vectors(
    direction: DirectionSet | np.ndarray | Any,
    layers: Sequence[int] | None = None,
    *,
    n_layers: int | None = None,
    hidden_size: int | None = None,
    normalize: bool = False,
) -> dict[int, np.ndarray]:
    """Resolve ``direction`` + ``layers`` into ``{block index: float32 vector}`` (checked, optionally unit-norm).

    ``direction``: a :class:`DirectionSet` (``layers=None`` → all its layers), a 1-D vector (``layers`` required),
    or a 2-D array with one row per block. Negative layers need ``n_layers``.

    >>> steering_vectors(np.ones(4), layers=[-1], n_layers=3)
    {2: array([1., 1., 1., 1.], dtype=float32)}
    """

    def block(i: int) -> int:
        if n_layers is None:
            if i < 0:
                raise DirectionFileError(f"layer {i} is negative; pass the model (or n_layers) so it can be resolved")
            return int(i)
        try:
            return normalize_layer(i, n_layers)
        except LayerIndexError as e:
            raise DirectionFileError(str(e)) from None

    if isinstance(direction, DirectionSet):
        if n_layers is None and direction.meta.n_layers:
            n_layers = direction.meta.n_layers
        if n_layers is not None:
            direction = direction.resolved(n_layers)  # a key -1 is the last block
        if layers is None:
            vecs = {block(l): direction.vectors[l] for l in direction.layers}
        else:
            vecs = {}
            for l in layers:
                b = block(l)
                if b not in direction.vectors:
                    raise DirectionFileError(
                        f"layer {l} is not in this direction set (it has layers {direction.layers})"
                    )
                vecs[b] = direction.vectors[b]
    else:
        arr = direction.detach().cpu().numpy() if isinstance(direction, torch.Tensor) else np.asarray(direction)
        if arr.ndim == 1:
            if layers is None:
                raise DirectionFileError("a single direction vector needs layers=[...] naming the block(s) to steer")
            vecs = {block(l): arr for l in layers}
        elif arr.ndim == 2:
            if n_layers is not None and arr.shape[0] != n_layers:
                raise DirectionFileError(
                    f"a 2-D direction must have one row per block: got {arr.shape[0]} rows for a "
                    f"model with {n_layers} blocks"
                )
            chosen = range(arr.shape[0]) if layers is None else layers
            vecs = {block(l): arr[block(l)] for l in chosen}
        else:
            raise DirectionFileError(f"direction has shape {arr.shape}; expected [hidden] or [n_layers, hidden]")
    out = {}
    for b, v in sorted(vecs.items()):
        v = np.asarray(v, dtype=np.float32).reshape(-1)
        if hidden_size is not None and v.shape[0] != hidden_size:
            raise DirectionFileError(
                f"hidden-size mismatch: the direction has {v.shape[0]} dims, the model has {hidden_size}. "
                "Fix: use a direction read from a model of the same width, or resample it "
                "(analyses.spectral.resample)"
            )
        if n_layers is not None and not 0 <= b < n_layers:
            raise DirectionFileError(
                f"layer {b} is out of range for a model with {n_layers} blocks (valid 0..{n_layers - 1})"
            )
        if normalize:
            norm = float(np.linalg.norm(v))
            if norm == 0.0:
                raise DirectionFileError(f"cannot normalise the direction at layer {b}: it is all zeros")
            v = v / norm
        out[b] = v
    if not out:
        raise DirectionFileError("no layers to steer: layers=[] selects nothing")
    return out


def _check_positions(positions: PositionsLike) -> str | int | slice | list[int]:
    """The one-forward-pass mask spec (``"all"``, ``"last"`` or token indices) of any :class:`Positions` spelling."""
    return Positions.parse(positions).forward()


def _delta(out: torch.Tensor, vec: np.ndarray, lam: float, positions: Any) -> torch.Tensor:
    """``lam * vec`` placed at ``positions`` of a ``[batch, seq, hidden]`` tensor (zeros elsewhere)."""
    if out.shape[-1] != vec.shape[0]:
        raise DirectionFileError(
            f"hidden-size mismatch: the direction has {vec.shape[0]} dims, the block output has {out.shape[-1]}"
        )
    v = torch.as_tensor(vec, dtype=out.dtype, device=out.device) * lam
    if isinstance(positions, str) and positions == "all":
        return v
    seq = out.shape[-2]
    mask = torch.zeros(seq, 1, dtype=out.dtype, device=out.device)
    if isinstance(positions, str):
        if positions != "last":
            raise PositionsError(f"positions={positions!r}; use 'all', 'last', an int, a slice or a list of ints")
        mask[-1] = 1
    else:
        idx = [int(positions)] if isinstance(positions, (int, np.integer)) else positions
        try:
            mask[idx if isinstance(idx, slice) else list(idx)] = 1
        except IndexError:
            raise PositionsError(f"positions {positions!r} out of range for a sequence of length {seq}") from None
    return mask * v


def _with_delta(out: Any, vec: np.ndarray, lam: float, positions: Any) -> Any:
    """Block output plus the steering term; handles tuple outputs (older transformers) too."""
    if isinstance(out, tuple):
        return (out[0] + _delta(out[0], vec, lam, positions),) + tuple(out[1:])
    return out + _delta(out, vec, lam, positions)


def decoder_layers(model: Any, layers_path: str | None = None) -> Any:
    """The decoder-block list of an nnsight-wrapped (or plain HF) model (:meth:`ModelAdapter.find_layers`)."""
    from cotscope.probes.models.registry import ModelAdapter

    return ModelAdapter.find_layers(model, layers_path)[1]


def _hidden_size(model: Any) -> int | None:
    """Width of the (language) model from its HF config, or ``None`` if it cannot be told (checked at run time then)."""
    cfg = getattr(model, "config", None)
    try:
        cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    except Exception:
        pass
    size = getattr(cfg, "hidden_size", None)
    return size if isinstance(size, int) else None


@dataclasses.dataclass
class Applied:
    """What :func:`apply` did. Also a (no-op) context manager: ``with apply(...):`` reads naturally in a trace."""

    layers: list[int]
    lam: float
    positions: str | int | slice | list[int]

    def __enter__(self) -> Applied:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def apply(
    direction: DirectionSet | np.ndarray | Any,
    model: Any,
    lam: float,
    positions: PositionsLike = "all",
    layers: Sequence[int] | None = None,
    normalize: bool = False,
    layers_path: str | None = None,
) -> Applied:
    """Inside an nnsight trace, add ``lam * v[l]`` to the output of each block ``l`` at ``positions``.

    Call it before reading any later module (nnsight runs requests in execution order); it edits the
    blocks in ascending order. ``positions`` (a :class:`probes.positions.Positions` spelling): ``"all"``,
    ``"last"`` (or ``"last_prompt"``), an int, a slice or a list of ints (with left padding, ``"last"`` is every
    row's last real token). Names that need generation (``"first"``, ``"generated"``) are refused: use
    :func:`probes.intervene.generate_steered`. ``normalize`` scales each vector to
    unit norm first. Inside ``lm.generate`` wrap it in ``for step in tracer.iter[:n]`` to steer every step.
    Returns an :class:`Applied` record (already ``nnsight.save``-d, so it is readable after the trace).

    >>> with lm.trace("Q: 2+2?") as tr:                          # doctest: +SKIP
    ...     apply(ds, lm, 4.0, positions="last", layers=[12])
    ...     logits = lm.output.logits.save()
    """
    import nnsight

    positions = _check_positions(positions)
    blocks = decoder_layers(model, layers_path)
    vecs = steering_vectors(
        direction, layers, n_layers=len(blocks), hidden_size=_hidden_size(model), normalize=normalize
    )
    for b, vec in vecs.items():
        blocks[b].output = _with_delta(blocks[b].output, vec, lam, positions)
    return nnsight.save(Applied(list(vecs), lam, positions))  # saved, so the record outlives the trace


def tl_hooks(
    direction: DirectionSet | np.ndarray | Any,
    lam: float,
    layers: Sequence[int] | None = None,
    positions: PositionsLike = "all",
    normalize: bool = False,
    model: Any = None,
) -> list[tuple[str, Callable[..., torch.Tensor]]]:
    """``[(hook_name, fn)]`` for ``TransformerBridge.run_with_hooks`` adding ``lam * v[l]`` at ``blocks.{l}.hook_out``.

    Pass ``model`` (the bridge) to check width and depth up front and to resolve negative layers.

    >>> logits = bridge.run_with_hooks(ids, fwd_hooks=tl_hooks(ds, 4.0, model=bridge))   # doctest: +SKIP
    """
    positions = _check_positions(positions)
    cfg = getattr(model, "cfg", None)
    vecs = steering_vectors(
        direction,
        layers,
        n_layers=getattr(cfg, "n_layers", None),
        hidden_size=getattr(cfg, "d_model", None),
        normalize=normalize,
    )

    def make(vec: np.ndarray) -> Callable[..., torch.Tensor]:
        def hook(x: torch.Tensor, hook: Any = None) -> torch.Tensor:
            return x + _delta(x, vec, lam, positions)

        return hook

    hooks = [(f"blocks.{b}.hook_out", make(v)) for b, v in vecs.items()]
    names = getattr(model, "hook_dict", None)
    if names is not None:
        missing = [n for n, _ in hooks if n not in names]
        if missing:
            raise ValueError(
                f"the model has no hook point(s) {missing}; is it a TransformerLens 4.x TransformerBridge?"
            )
    return hooks
