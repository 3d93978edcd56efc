"""repeng (``repeng.ControlVector``): files it reads with ``import_gguf`` and in-memory conversion both ways.

repeng's GGUF is llama.cpp's control-vector layout, keyed the same way (``direction.k`` = output of
``model.layers[k]``), and ``ControlVector.import_gguf`` additionally *requires* ``controlvector.model_hint``.
This module never imports repeng; :func:`to_repeng` / :func:`from_repeng` work on its plain fields.

>>> export_repeng_cv(ds, "cot.gguf", target="embedded:smollm2")      # doctest: +SKIP
>>> # repeng: cv = ControlVector.import_gguf("cot.gguf"); model.set_control(cv, 4.0)
>>> ds2 = from_repeng(cv)                                            # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cotscope.analyses.artifacts import UNKNOWN, DirectionFileError, DirectionSet
from cotscope.analyses.export.common import TargetLike, check_export_fits, imported_meta
from cotscope.analyses.export.gguf_cv import export_gguf_cv, import_gguf_cv
from cotscope.analyses.layers import LayerIndexError, normalize_layer

SOURCE = "repeng ControlVector"


def export_repeng_cv(
    ds: DirectionSet,
    path: str | Path,
    *,
    target: TargetLike = None,
    model_hint: str | None = None,
    allow_block0: bool = False,
) -> Path:
    """Write a GGUF that ``repeng.ControlVector.import_gguf`` reads back with the same directions.

    By default the file is also a valid llama.cpp control vector (layer 0 refused). ``allow_block0=True`` keeps
    layer 0 for repeng, which can steer it, at the price of a file llama.cpp will skip.
    """
    return export_gguf_cv(ds, path, target=target, model_hint=model_hint, allow_block0=allow_block0)


def import_repeng_cv(path: str | Path, *, n_layers: int | None = None) -> DirectionSet:
    """Read a repeng-exported GGUF (``ControlVector.export_gguf``) into a :class:`DirectionSet`; accepts ``direction.0``.

    Files with non-F32 tensors are refused; load those with repeng and convert with :func:`from_repeng`.
    """
    return import_gguf_cv(path, n_layers=n_layers, allow_block0=True, source_format=SOURCE + " (GGUF)")


def to_repeng(ds: DirectionSet, *, target: TargetLike = None) -> dict[str, Any]:
    """Keyword arguments for ``repeng.ControlVector(**to_repeng(ds))``: ``model_type`` and ``directions``.

    >>> cv = ControlVector(**to_repeng(ds))                          # doctest: +SKIP
    """
    t = check_export_fits(ds, target)
    model_type = t.model_type if t and t.model_type != UNKNOWN else ds.meta.model_type
    return {"model_type": model_type, "directions": {int(l): v.copy() for l, v in ds.vectors.items()}}


def from_repeng(cv: Any, *, n_layers: int | None = None) -> DirectionSet:
    """A :class:`DirectionSet` from a ``repeng.ControlVector`` (anything with ``model_type`` and ``directions``).

    repeng keys are block indices (negative ones count from the end and need ``n_layers``); vectors are cast to float32.
    """
    directions = getattr(cv, "directions", None)
    if not isinstance(directions, dict) or not directions:
        raise DirectionFileError(
            f"expected a repeng ControlVector with a non-empty .directions dict, got {type(cv).__name__}"
        )
    vectors = {}
    for k, v in directions.items():
        k = int(k)
        if k < 0:
            if n_layers is None:
                raise DirectionFileError(f"repeng layer {k} is negative; pass n_layers= to resolve it")
            try:
                k = normalize_layer(k, n_layers)
            except LayerIndexError as e:
                raise DirectionFileError(f"repeng layer {k}: {e}") from None
        vectors[k] = np.asarray(v, dtype=np.float32).reshape(-1)
    meta = imported_meta(
        SOURCE, "<in memory>", model_type=str(getattr(cv, "model_type", UNKNOWN)), n_layers=n_layers or 0
    )
    ds = DirectionSet(vectors, meta)
    if n_layers is not None:
        ds.check_fits(ds.hidden_size, n_layers, what="the model")
    return ds
