"""Plain arrays for people who just want numbers: ``.npz`` or plain safetensors, plus a JSON sidecar.

Both formats hold two arrays: ``directions`` (float32 ``[n, hidden]``) and ``layers`` (int64 ``[n]``, cotscope's
block_output indices; see :mod:`analyses.layers`). The provenance goes to ``<file>.json`` next to the file
(and, for safetensors, also into the header). Importing also accepts arrays written by other tools.

>>> export_npz(ds, "cot.npz")     # also writes cot.npz.json  # doctest: +SKIP
>>> z = np.load("cot.npz"); z["directions"][list(z["layers"]).index(12)]   # doctest: +SKIP
>>> import_arrays("theirs.npz", layers=[-1], layer_convention="negative", n_layers=30)   # doctest: +SKIP
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cotscope.analyses.artifacts import LAYER_CONVENTION, DirectionFileError, DirectionMeta, DirectionSet
from cotscope.analyses.atomic import atomic_path, write_json_atomic
from cotscope.analyses.export.common import TargetLike, check_export_fits, imported_meta
from cotscope.analyses.layers import CONVENTIONS, LayerIndexError, convert_layer, llamacpp_to_block

SIDECAR_FORMAT = "cotscope.arrays"
_PER_LAYER = re.compile(r"(?:direction|layer|layers|blocks?)[._]?(-?\d+)|(-?\d+)")


def sidecar_path(path: str | Path) -> Path:
    """``cot.npz`` → ``cot.npz.json``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def _sidecar(ds: DirectionSet, fmt: str) -> dict:
    return {
        "format": SIDECAR_FORMAT,
        "format_version": 1,
        "file_format": fmt,
        "layer_convention": LAYER_CONVENTION,
        "layers": ds.layers,
        "arrays": {
            "directions": f"float32 [{len(ds.layers)}, {ds.hidden_size}]",
            "layers": f"int64 [{len(ds.layers)}]",
        },
        "meta": json.loads(ds.meta.to_json()),
    }


def _arrays(ds: DirectionSet) -> dict[str, np.ndarray]:
    return {
        "directions": np.stack([ds.vectors[l] for l in ds.layers]).astype(np.float32),
        "layers": np.asarray(ds.layers, dtype=np.int64),
    }


def export_npz(ds: DirectionSet, path: str | Path, *, target: TargetLike = None) -> Path:
    """Write ``directions``/``layers`` to ``path`` (.npz) and the provenance to ``path + '.json'``."""
    check_export_fits(ds, target)
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:  # a file object, so numpy does not append ".npz" to the name
            np.savez(fh, **_arrays(ds))
    write_json_atomic(sidecar_path(path), _sidecar(ds, "npz"))
    return path


def export_safetensors_arrays(ds: DirectionSet, path: str | Path, *, target: TargetLike = None) -> Path:
    """Write ``directions``/``layers`` as a plain safetensors file (provenance in header and ``path + '.json'``)."""
    from cotscope.analyses.safetensors_io import save_file  # deterministic header bytes

    check_export_fits(ds, target)
    path = Path(path)
    header = {"layer_convention": LAYER_CONVENTION, "layers": json.dumps(ds.layers), "cotscope": ds.meta.to_json()}
    with atomic_path(path) as tmp:
        save_file(_arrays(ds), str(tmp), metadata=header)
    write_json_atomic(sidecar_path(path), _sidecar(ds, "safetensors"))
    return path


def _load(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    if not path.is_file():
        raise DirectionFileError(f"array file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="numpy") as fh:
                return {k: fh.get_tensor(k) for k in fh.keys()}, dict(fh.metadata() or {})
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):  # a bare .npy array
            return {"directions": np.asarray(z)}, {}
        with z:
            return {k: z[k] for k in z.files}, {}
    except DirectionFileError:
        raise
    except Exception as e:
        raise DirectionFileError(
            f"{path} is not a readable .npz/.npy/.safetensors file ({type(e).__name__}: {e})"
        ) from None


def _rows(arrays: dict[str, np.ndarray], path: Path) -> tuple[np.ndarray, list[int] | None]:
    """The direction matrix and, if the file names them, the layer of each row."""
    if "directions" in arrays:
        d = np.asarray(arrays["directions"])
        d = d[None] if d.ndim == 1 else d
        layers = [int(x) for x in np.asarray(arrays["layers"]).reshape(-1)] if "layers" in arrays else None
        return d, layers
    if len(arrays) == 1 and not _PER_LAYER.fullmatch(next(iter(arrays))):
        d = np.asarray(next(iter(arrays.values())))
        return (d[None] if d.ndim == 1 else d), None
    per_layer = {}
    for k, v in arrays.items():
        m = _PER_LAYER.fullmatch(k)
        if not m or np.asarray(v).ndim != 1:
            raise DirectionFileError(
                f"{path}: cannot tell which layer array {k!r} belongs to. Expected 'directions' "
                "(+ 'layers'), one array, or 1-D arrays named like 'direction.12' / 'layer_12'"
            )
        per_layer[int(m.group(1) or m.group(2))] = np.asarray(v)
    ks = sorted(per_layer)
    if len({per_layer[k].shape for k in ks}) != 1:
        raise DirectionFileError(
            f"{path}: per-layer arrays have different lengths {sorted({per_layer[k].size for k in ks})}"
        )
    return np.stack([per_layer[k] for k in ks]), ks


def import_arrays(
    path: str | Path,
    *,
    layers: Sequence[int] | None = None,
    layer_convention: str | None = None,
    n_layers: int | None = None,
    meta_path: str | Path | None = None,
) -> DirectionSet:
    """Read an ``.npz`` / ``.npy`` / plain safetensors file of direction vectors into a :class:`DirectionSet`.

    The layer of each row comes from the file (``layers`` array or per-layer array names) or from ``layers``.
    ``layer_convention`` (``block_output``, ``hf_hidden``, ``llamacpp`` or ``negative``; default: the sidecar's,
    else ``block_output``) says how those indices count; they are converted to cotscope's. ``n_layers`` is the
    source model's depth (needed for negative and HF indices). Provenance comes from the sidecar
    ``<file>.json`` (or ``meta_path``), else the safetensors header, else it is marked unknown.
    """
    path = Path(path)
    arrays, header = _load(path)
    d, file_layers = _rows(arrays, path)
    if d.ndim != 2:
        raise DirectionFileError(f"{path}: directions have shape {d.shape}; expected [n_layers, hidden] or [hidden]")

    side_file = Path(meta_path) if meta_path else sidecar_path(path)
    side = None
    if side_file.is_file():
        try:
            side = json.loads(side_file.read_text())
            meta = DirectionMeta.from_dict(side["meta"])
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise DirectionFileError(f"{side_file}: metadata sidecar is corrupt ({e}); delete it or fix it") from None
    elif "cotscope" in header:
        meta = DirectionMeta.from_dict(json.loads(header["cotscope"]))
    else:
        meta = imported_meta(f"plain arrays ({path.suffix or 'npz'})", path, n_layers=n_layers or 0)

    if file_layers is None and side is not None:
        file_layers = list(side.get("layers") or []) or None
    if file_layers is not None and layers is not None and list(layers) != file_layers:
        raise DirectionFileError(
            f"{path} already names its layers {file_layers}; do not pass a different layers={list(layers)}"
        )
    rows = file_layers if file_layers is not None else (list(layers) if layers is not None else None)
    if rows is None:
        raise DirectionFileError(
            f"{path} does not say which layer each of its {d.shape[0]} rows belongs to. "
            "Fix: pass layers=[...] (and layer_convention= if they are not cotscope block indices)"
        )
    if len(rows) != d.shape[0]:
        raise DirectionFileError(f"{path}: {d.shape[0]} direction rows but {len(rows)} layer indices {rows}")

    conv = (
        layer_convention or (side or {}).get("layer_convention") or header.get("layer_convention") or LAYER_CONVENTION
    )
    if conv not in CONVENTIONS:
        raise DirectionFileError(f"unknown layer_convention {conv!r}; use one of {', '.join(CONVENTIONS)}")
    depth = n_layers or meta.n_layers or None
    blocks = []
    for r in rows:
        try:
            if depth is not None:
                blocks.append(convert_layer(r, conv, LAYER_CONVENTION, depth))
            elif conv == "llamacpp":
                blocks.append(llamacpp_to_block(r))
            elif conv == LAYER_CONVENTION and r >= 0:
                blocks.append(int(r))
            else:
                raise DirectionFileError(
                    f"{path}: layer {r} in convention {conv!r} needs the model depth; pass n_layers="
                )
        except LayerIndexError as e:
            raise DirectionFileError(f"{path}: {e}") from None
    if len(set(blocks)) != len(blocks):
        raise DirectionFileError(f"{path}: layers {rows} name the same block twice")
    if conv != LAYER_CONVENTION:
        meta.extra["source_layer_convention"] = conv
        meta.extra["source_layers"] = [int(r) for r in rows]
    if n_layers and not meta.n_layers:
        meta.n_layers = int(n_layers)
    ds = DirectionSet({b: d[i] for i, b in enumerate(blocks)}, meta)
    if depth is not None:
        ds.check_fits(ds.hidden_size, depth, what="the source model")
    return ds
