"""One entry point for scripts and the CLI: export a direction file to a named format.

Scale. A mean-difference direction is exported as measured (``normalise=False``): its per-layer norm is the
distance between the mean CoT and mean direct activations. Measured on SmolLM2-135M (32 cue pairs, last prompt
token) it is 1.2 at block 1, 10 at block 10, 48 at block 20 and 195 at block 29, against residual-stream norms
of about 50, 130, 200 and 800 there (``DirectionSet.norms()`` gives a file's norms). llama.cpp's cvector
generator and repeng write unit vectors instead, and their strengths (``--control-vector-scaled FILE S``,
``set_control(cv, S)``) are chosen for those. The same ``S`` adds ``S·|v|`` at each layer of an unnormalised
file, so ``S = 0.3`` with the raw mean difference already floods SmolLM2's answers with "Let's think…"; to
match a raw file at strength ``S`` a unit file needs ``S·|v|`` per layer. Export with ``normalise=True`` (CLI
``--normalise``) to write unit vectors. The file's provenance records ``normalisation`` (``"none"`` or
``"unit"``) and, for unit files, the original norms in ``history``, so either scale can be recovered. LAT
directions are unit already.

>>> export_direction("runs/demo/directions/llm_mean_diff.safetensors", "gguf", "cot.gguf")   # doctest: +SKIP
(PosixPath('cot.gguf'), [1, 2, ..., 29])
>>> export_direction("runs/demo/directions/llm_mean_diff.safetensors", "gguf", "cot-unit.gguf",
...                  normalise=True)                                                         # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cotscope.analyses.artifacts import DirectionFileError, DirectionSet

FORMATS = ("gguf", "repeng", "npz", "safetensors")
STEERING_FORMATS = ("gguf", "repeng")  # llama.cpp control vectors: block 0 cannot be steered


def export_direction(
    direction: str | Path | DirectionSet,
    fmt: str,
    out: str | Path,
    *,
    layers: Sequence[int] | None = None,
    target: Any = None,
    model_hint: str | None = None,
    normalise: bool = False,
) -> tuple[Path, list[int]]:
    """Export ``direction`` as ``fmt`` (one of :data:`FORMATS`) to ``out``; returns ``(path, layers written)``.

    ``layers=None`` exports every layer, except block 0 for the control-vector formats (llama.cpp refuses a file
    holding ``direction.0``). An explicit ``layers`` list is exported as given (and block 0 is refused there).
    ``normalise=True`` scales each layer to unit norm first (as llama.cpp's cvector generator and repeng do) and
    records it in the exported provenance (``normalisation="unit"``, original norms in ``history``).
    """
    from cotscope.analyses.export.arrays import export_npz, export_safetensors_arrays
    from cotscope.analyses.export.gguf_cv import export_gguf_cv
    from cotscope.analyses.export.repeng_cv import export_repeng_cv

    if fmt not in FORMATS:
        raise DirectionFileError(f"unknown export format {fmt!r}; choose from {FORMATS}")
    ds = direction if isinstance(direction, DirectionSet) else DirectionSet.load(direction)
    if layers is None:
        layers = [l for l in ds.layers if not (fmt in STEERING_FORMATS and l == 0)]
    missing = [l for l in layers if l not in ds.vectors]
    if missing:
        raise DirectionFileError(
            f"layers {missing} are not in the direction file (it has {ds.layers}); pick from those"
        )
    if not layers:
        raise DirectionFileError(f"nothing to export: the direction file has only layers {ds.layers}")
    sub = ds.select(list(layers))
    if normalise:
        sub = sub.normalised()
    if fmt == "gguf":
        path = export_gguf_cv(sub, out, target=target, model_hint=model_hint)
    elif fmt == "repeng":
        path = export_repeng_cv(sub, out, target=target, model_hint=model_hint)
    elif fmt == "npz":
        path = export_npz(sub, out, target=target)
    else:
        path = export_safetensors_arrays(sub, out, target=target)
    return Path(path), list(sub.layers)


def parse_layers(spec: str | None) -> list[int] | None:
    """``"1-29"``, ``"4,8,12"`` or ``"1-5,20"`` (cotscope block indices) → a sorted list; empty/None → None (all)."""
    if not spec:
        return None
    out: set[int] = set()
    for part in spec.split(","):
        a, _, b = part.strip().partition("-")
        try:
            lo, hi = int(a), (int(b) if b else None)
        except ValueError:
            raise DirectionFileError(
                f"cannot read layer spec {spec!r}: use block indices such as '1-29' or '4,8,12'"
            ) from None
        if hi is not None and hi < lo:
            raise DirectionFileError(f"layer range '{part.strip()}' is reversed; write '{hi}-{lo}'")
        out.update(range(lo, hi + 1) if hi is not None else [lo])
    return sorted(out)
