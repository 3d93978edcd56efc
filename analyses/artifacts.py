"""Direction file v1: one safetensors file whose header carries the full provenance as JSON.

Tensors are ``direction.<layer>`` (float32, 1-D, length ``hidden_size``), one per layer, where
``<layer>`` follows the *block_output* convention: index ``i`` is the output of decoder block
``model.layers[i]`` (0-based), i.e. HF ``hidden_states[i + 1]``. See :mod:`analyses.layers`.

>>> ds = DirectionSet({3: np.ones(8, np.float32)}, DirectionMeta(model_id="toy", hidden_size=8, n_layers=4))
>>> ds.save("toy.safetensors")                        # doctest: +SKIP
>>> DirectionSet.load("toy.safetensors").vectors[3]   # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np

FORMAT_NAME = "cotscope.direction"
FORMAT_VERSION = 1
LAYER_CONVENTION = "block_output"
UNKNOWN = "unknown"


class DirectionFileError(ValueError):
    """A direction file is missing, corrupt, or does not fit the model it is used with."""


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape a direction (recorded in every artifact)."""
    import importlib.metadata as md

    out = {}
    for name in ("cotscope", "numpy", "torch", "transformers", "nnsight", "scikit-learn", "safetensors"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


@dataclasses.dataclass
class DirectionMeta:
    """Provenance of a direction. Fields a source format lacks are ``"unknown"``."""

    model_id: str = UNKNOWN
    model_revision: str = UNKNOWN          # commit, file hash or "unknown"
    model_type: str = UNKNOWN              # HF config.model_type, e.g. "llama"
    hidden_size: int = 0
    n_layers: int = 0                      # decoder blocks in the source model (0 = unknown)
    layer_convention: str = LAYER_CONVENTION
    token_rule: str = UNKNOWN              # last_prompt | last | answer_mean | image_mean ...
    pairing: str = UNKNOWN                 # cue | answer
    method: str = UNKNOWN                  # mean_diff | lat | probe | imported
    normalisation: str = "none"            # none | unit
    sign: str = UNKNOWN                    # e.g. "cot_positive"
    filter: dict[str, Any] = dataclasses.field(default_factory=lambda: {"kind": "none"})
    stimulus_hash: str = UNKNOWN
    n_pairs: int = 0
    resampled_from: int | None = None      # original hidden size if Fourier-resampled
    library: dict[str, str] = dataclasses.field(default_factory=library_versions)
    created: str = dataclasses.field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "DirectionMeta":
        names = {f.name for f in dataclasses.fields(cls)}
        known = {k: v for k, v in d.items() if k in names}
        extra = dict(known.get("extra") or {})
        extra.update({k: v for k, v in d.items() if k not in names})
        known["extra"] = extra
        return cls(**known)


@dataclasses.dataclass
class DirectionSet:
    """Per-layer direction vectors plus provenance."""

    vectors: dict[int, np.ndarray]
    meta: DirectionMeta

    def __post_init__(self) -> None:
        if not self.vectors:
            raise DirectionFileError("a direction set needs at least one layer")
        vecs = {}
        for layer, v in self.vectors.items():
            a = np.asarray(v, dtype=np.float32)
            if a.ndim != 1:
                raise DirectionFileError(f"direction for layer {layer} has shape {a.shape}; expected 1-D [hidden_size]")
            if not np.all(np.isfinite(a)):
                raise DirectionFileError(f"direction for layer {layer} contains NaN or inf")
            vecs[int(layer)] = a
        sizes = {a.shape[0] for a in vecs.values()}
        if len(sizes) != 1:
            raise DirectionFileError(f"layers have different hidden sizes {sorted(sizes)}")
        size = sizes.pop()
        if self.meta.hidden_size and self.meta.hidden_size != size:
            raise DirectionFileError(f"metadata says hidden_size={self.meta.hidden_size} but vectors have {size}")
        self.meta.hidden_size = size
        self.vectors = dict(sorted(vecs.items()))

    @property
    def layers(self) -> list[int]:
        return list(self.vectors)

    @property
    def hidden_size(self) -> int:
        return self.meta.hidden_size

    def __getitem__(self, layer: int) -> np.ndarray:
        if layer not in self.vectors:
            raise KeyError(f"layer {layer} not in this direction set (has {self.layers})")
        return self.vectors[layer]

    def check_fits(self, hidden_size: int, n_layers: int | None = None, what: str = "the model") -> None:
        """Raise a clear error if this direction cannot be applied to a model of that shape."""
        if hidden_size != self.hidden_size:
            raise DirectionFileError(
                f"hidden-size mismatch: the direction has {self.hidden_size} dims, {what} has {hidden_size}. "
                "Fix: resample it with analyses.spectral.resample(..., n_out) (Fourier resampling) or use a "
                "direction read from a model of the same width.")
        if n_layers is not None:
            bad = [l for l in self.layers if not 0 <= l < n_layers]
            if bad:
                raise DirectionFileError(f"layers {bad} are out of range for {what} with {n_layers} decoder blocks "
                                         f"(valid 0..{n_layers - 1}); map layers by relative depth first.")

    def select(self, layers) -> "DirectionSet":
        return DirectionSet({l: self[l] for l in layers}, dataclasses.replace(self.meta))

    def save(self, path: str | Path) -> Path:
        """Write atomically; returns the path."""
        from safetensors.numpy import save_file
        from cotscope.analyses.atomic import atomic_path

        path = Path(path)
        tensors = {f"direction.{l}": np.ascontiguousarray(v, dtype=np.float32) for l, v in self.vectors.items()}
        header = {"format": FORMAT_NAME, "format_version": str(FORMAT_VERSION), "cotscope": self.meta.to_json()}
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=header)
        return path

    @classmethod
    def load(cls, path: str | Path, expect_hidden_size: int | None = None, expect_n_layers: int | None = None) -> "DirectionSet":
        """Read and validate a direction file."""
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise DirectionFileError(f"direction file {path} does not exist")
        try:
            with safe_open(str(path), framework="numpy") as fh:
                header = fh.metadata() or {}
                tensors = {k: fh.get_tensor(k) for k in fh.keys()}
        except Exception as e:  # safetensors raises several types for truncated/corrupt headers
            raise DirectionFileError(f"{path} is not a readable safetensors file ({e}); it may be truncated or corrupt. "
                                     "Re-export it, or import foreign formats with analyses.export.") from None
        if header.get("format") != FORMAT_NAME:
            raise DirectionFileError(f"{path} is not a cotscope direction file (header format={header.get('format')!r}); "
                                     "use analyses.export.import_* for GGUF/npz files from other tools")
        if int(header.get("format_version", 0)) > FORMAT_VERSION:
            raise DirectionFileError(f"{path} has format version {header['format_version']}, newer than this cotscope "
                                     f"({FORMAT_VERSION}); upgrade cotscope")
        try:
            meta = DirectionMeta.from_dict(json.loads(header["cotscope"]))
        except (KeyError, json.JSONDecodeError, TypeError) as e:
            raise DirectionFileError(f"{path}: provenance metadata is corrupt ({e})") from None
        vectors = {}
        for k, v in tensors.items():
            if not k.startswith("direction."):
                raise DirectionFileError(f"{path}: unexpected tensor {k!r}")
            vectors[int(k.split(".", 1)[1])] = v
        ds = cls(vectors, meta)
        if expect_hidden_size is not None:
            ds.check_fits(expect_hidden_size, expect_n_layers)
        return ds
