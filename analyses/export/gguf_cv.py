"""llama.cpp control vectors (GGUF): export a :class:`DirectionSet`, and import one back.

File layout (what llama.cpp's ``common_control_vector_load_one`` accepts): tensors ``direction.<k>``, F32,
1-D, all of length ``n_embd``, ``k >= 1``; ``direction.k`` is added to the output of block ``k``, so ``k``
equals the cotscope block index (see :mod:`analyses.layers`). Metadata: ``general.architecture =
controlvector``, ``controlvector.model_hint`` (HF ``model_type``), ``controlvector.layer_count`` (number of
direction tensors, as llama.cpp's generator and repeng write it), plus ``cotscope.provenance`` (the full
:class:`DirectionMeta` as JSON; llama.cpp ignores unknown keys, cotscope reads it back).

>>> export_gguf_cv(ds, "cot.gguf", target="embedded:smollm2")          # doctest: +SKIP
>>> # llama-cli -m SmolLM2-135M-Instruct.gguf --control-vector-scaled cot.gguf 4.0
>>> import_gguf_cv("cot.gguf").vectors.keys()                          # doctest: +SKIP
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import gguf
import numpy as np

from cotscope.analyses.artifacts import UNKNOWN, DirectionFileError, DirectionMeta, DirectionSet
from cotscope.analyses.atomic import atomic_path
from cotscope.analyses.export.common import TargetLike, check_export_fits, imported_meta
from cotscope.analyses.layers import LayerIndexError, block_to_llamacpp, llamacpp_to_block

ARCH = "controlvector"
KEY_MODEL_HINT = f"{ARCH}.model_hint"
KEY_LAYER_COUNT = f"{ARCH}.layer_count"
KEY_PROVENANCE = "cotscope.provenance"
KEY_CONVENTION = "cotscope.layer_convention"
KEY_NORMALISATION = "cotscope.normalisation"  # "none" | "unit" (also inside the provenance JSON)
_NAME = re.compile(r"direction\.(\d+)")


def export_gguf_cv(
    ds: DirectionSet,
    path: str | Path,
    *,
    target: TargetLike = None,
    model_hint: str | None = None,
    allow_block0: bool = False,
) -> Path:
    """Write ``ds`` as a llama.cpp control vector; refuses block 0 and directions that do not fit ``target``.

    ``target``: a known name (``"embedded:smollm2"``), a model folder / ``config.json``, an HF config or a
    :class:`~analyses.export.common.TargetModel`. Without it the direction is checked against its own source model.
    ``model_hint`` defaults to the target's ``model_type``, else the direction's. ``allow_block0`` is for
    repeng-only files (:mod:`analyses.export.repeng_cv`); llama.cpp rejects a file holding ``direction.0``.

    >>> export_gguf_cv(ds, "cot.gguf", target="embedded:smollm2")      # doctest: +SKIP
    PosixPath('cot.gguf')
    """
    t = check_export_fits(ds, target)
    n_layers = t.n_layers if t else (ds.meta.n_layers or None)
    tensors: dict[str, np.ndarray] = {}
    for layer, vec in ds.vectors.items():
        if layer == 0:
            if not allow_block0:
                keep = [l for l in ds.layers if l != 0]
                raise DirectionFileError(
                    "refusing to export layer 0: block 0's output cannot be steered by llama.cpp (its loader rejects "
                    f"direction.0 and then skips the whole file). Fix: export ds.steerable() (= ds.select({keep or '[...]'})) instead"
                )
            k = 0
        else:
            try:
                k = block_to_llamacpp(layer, n_layers) if n_layers else llamacpp_to_block(layer)
            except LayerIndexError as e:
                raise DirectionFileError(f"cannot export layer {layer}: {e}") from None
        tensors[f"direction.{k}"] = np.ascontiguousarray(vec, dtype=np.float32)
    hint = model_hint or (t.model_type if t and t.model_type != UNKNOWN else None) or ds.meta.model_type
    path = Path(path)
    with atomic_path(path) as tmp:
        writer = gguf.GGUFWriter(str(tmp), ARCH)  # writes general.architecture = controlvector
        writer.add_string(KEY_MODEL_HINT, str(hint))
        writer.add_uint32(KEY_LAYER_COUNT, len(tensors))
        writer.add_string(KEY_CONVENTION, ds.meta.layer_convention)
        writer.add_string(KEY_NORMALISATION, ds.meta.normalisation)
        writer.add_string(KEY_PROVENANCE, ds.meta.to_json())
        for name, arr in tensors.items():
            writer.add_tensor(name, arr)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return path


def read_gguf_cv(path: str | Path, *, allow_block0: bool = False) -> tuple[dict[int, np.ndarray], dict[str, str]]:
    """Read a control-vector GGUF with llama.cpp's loader rules; returns ``({k: vector}, string metadata)``.

    Raises :class:`DirectionFileError` naming the problem if the file is not a GGUF, is another kind of GGUF
    (e.g. a model), or has a tensor llama.cpp would reject (bad name, ``direction.0``, non-F32, non-1-D,
    mismatched lengths). ``allow_block0`` accepts ``direction.0`` (repeng reads it; llama.cpp does not).
    """
    path = Path(path)
    if not path.is_file():
        raise DirectionFileError(f"control-vector file {path} does not exist")
    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as e:  # the reader raises ValueError/struct/numpy errors for foreign or truncated files
        raise DirectionFileError(f"{path} is not a readable GGUF file ({type(e).__name__}: {e})") from None

    strings: dict[str, str] = {}
    for key, field in reader.fields.items():
        if field.types and field.types[0] == gguf.GGUFValueType.STRING:
            strings[key] = field.contents()
    arch = strings.get("general.architecture")
    names = [t.name for t in reader.tensors]
    if arch is not None and arch != ARCH:
        raise DirectionFileError(
            f"{path} is a GGUF with general.architecture={arch!r}, not a control vector "
            f"(expected {ARCH!r}); is it a model file? Export directions with export_gguf_cv"
        )
    if arch is None and not all(_NAME.fullmatch(n) for n in names):
        raise DirectionFileError(
            f"{path} has no general.architecture key and tensors other than direction.<k> "
            f"({names[:5]}...); it is not a control vector"
        )
    if not names:
        raise DirectionFileError(f"{path} holds no direction tensors")

    vectors: dict[int, np.ndarray] = {}
    n_embd = None
    for t in reader.tensors:
        m = _NAME.fullmatch(t.name)
        if not m:
            raise DirectionFileError(
                f"{path}: tensor {t.name!r} is not named direction.<k> with k a non-negative integer; "
                "llama.cpp would skip this file"
            )
        k = int(m.group(1))
        if k == 0 and not allow_block0:
            raise DirectionFileError(
                f"{path}: tensor direction.0 is invalid for llama.cpp (block 0 cannot be steered; its "
                "loader skips the file). Import it with repeng's importer if it is a repeng file"
            )
        if t.tensor_type != gguf.GGMLQuantizationType.F32:
            raise DirectionFileError(
                f"{path}: tensor {t.name} is {t.tensor_type.name}, but control vectors must be F32 "
                "(llama.cpp rejects other types); re-export it as float32"
            )
        dims = [int(d) for d in t.shape]
        n_dims = max([i + 1 for i, d in enumerate(dims) if d > 1], default=1)  # ggml_n_dims: trailing 1s don't count
        if n_dims != 1:
            raise DirectionFileError(
                f"{path}: tensor {t.name} has shape {dims[::-1]}, but control-vector tensors must be "
                "1-D of length n_embd (llama.cpp rejects others)"
            )
        if n_embd is not None and t.n_elements != n_embd:
            raise DirectionFileError(
                f"{path}: tensor {t.name} has {t.n_elements} elements but earlier tensors have {n_embd}; "
                "all directions in one file must have the model's n_embd"
            )
        if k in vectors:
            raise DirectionFileError(f"{path}: duplicate tensor direction.{k}")
        n_embd = t.n_elements
        vectors[k] = np.array(t.data, dtype=np.float32).reshape(-1)  # copy: the reader's arrays are memory-mapped
    return vectors, strings


def import_gguf_cv(
    path: str | Path,
    *,
    n_layers: int | None = None,
    expect_hidden_size: int | None = None,
    allow_block0: bool = False,
    source_format: str = "llama.cpp control vector (GGUF)",
) -> DirectionSet:
    """Read a llama.cpp/repeng control-vector GGUF into a :class:`DirectionSet` (``direction.k`` → layer ``k``).

    cotscope-written files carry their full provenance; for others every field the file lacks is
    ``"unknown"`` (model_type comes from ``controlvector.model_hint``). ``n_layers`` (the target model's depth,
    if you know it) is recorded and checked. ``source_format`` names the format in imported provenance;
    ``allow_block0`` as in :func:`read_gguf_cv`.

    >>> import_gguf_cv("happy.gguf", n_layers=30).layers[:3]          # doctest: +SKIP
    [1, 2, 3]
    """
    vectors, strings = read_gguf_cv(path, allow_block0=allow_block0)
    if KEY_PROVENANCE in strings:
        try:
            meta = DirectionMeta.from_dict(json.loads(strings[KEY_PROVENANCE]))
        except (json.JSONDecodeError, TypeError) as e:
            raise DirectionFileError(f"{path}: {KEY_PROVENANCE} metadata is corrupt ({e})") from None
        if n_layers is not None and meta.n_layers and meta.n_layers != n_layers:
            raise DirectionFileError(
                f"{path}: the direction was read from a model with {meta.n_layers} blocks, not {n_layers}"
            )
    else:
        meta = imported_meta(
            source_format, path, model_type=strings.get(KEY_MODEL_HINT, UNKNOWN), n_layers=n_layers or 0
        )
    try:
        layers = {
            k if k == 0 else llamacpp_to_block(k, n_layers or meta.n_layers or None): v for k, v in vectors.items()
        }
    except LayerIndexError as e:
        raise DirectionFileError(f"{path}: {e}") from None
    ds = DirectionSet(layers, meta)
    if expect_hidden_size is not None:
        ds.check_fits(expect_hidden_size, n_layers)
    return ds
