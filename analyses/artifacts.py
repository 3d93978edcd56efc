"""Direction file v1: one safetensors file whose header carries the full provenance as JSON.

Tensors are ``direction.<layer>`` (float32, 1-D, length ``hidden_size``), one per layer, where
``<layer>`` follows the *block_output* convention: index ``i`` is the output of decoder block
``model.layers[i]`` (0-based), i.e. HF ``hidden_states[i + 1]``. Negative keys count from the end
(``-1`` is the last block, never "every layer"). See :mod:`analyses.layers`.

A :class:`DirectionSet` is also the API for working with directions: arithmetic (``a + b``, ``a - b``,
``2 * a``, ``-a``), spectral edits (:meth:`~DirectionSet.lowpass`, :meth:`~DirectionSet.resample`),
:meth:`~DirectionSet.steerable` (drops block 0), :meth:`~DirectionSet.normalised` (unit norm per layer) and
conversions to other tools (:meth:`~DirectionSet.to_gguf`, :meth:`~DirectionSet.to_repeng`,
:meth:`~DirectionSet.to_steering_vector`). Every operation returns a new set whose provenance
(:attr:`DirectionMeta.history`) records what was done.

>>> meta = DirectionMeta(model_id="toy", hidden_size=8, n_layers=4, normalisation="none")
>>> ds = DirectionSet({0: np.ones(8), 3: np.full(8, 2.0)}, meta)
>>> both = (ds + 0.5 * ds).steerable()
>>> both.layers, float(both[3][0])
([3], 3.0)
>>> [step["op"] for step in both.meta.history]           # the right operand's own history is inside "add"
['add', 'select']
>>> both.meta.history[0]["other"]["history"]
[{'op': 'scale', 'factor': 0.5}]
>>> round(float(np.linalg.norm(ds.normalised()[3])), 6), ds.normalised().meta.normalisation
(1.0, 'unit')
>>> ds.save("toy.safetensors")                        # doctest: +SKIP
>>> DirectionSet.load("toy.safetensors").vectors[3]   # doctest: +SKIP
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as _dt
import json
import math
import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cotscope.errors import CotscopeError

FORMAT_NAME = "cotscope.direction"
FORMAT_VERSION = 1
LAYER_CONVENTION = "block_output"
UNKNOWN = "unknown"


class DirectionFileError(CotscopeError):
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
    model_revision: str = UNKNOWN  # commit, file hash or "unknown"
    model_type: str = UNKNOWN  # HF config.model_type, e.g. "llama"
    hidden_size: int = 0
    n_layers: int = 0  # decoder blocks in the source model (0 = unknown)
    layer_convention: str = LAYER_CONVENTION
    token_rule: str = UNKNOWN  # last_prompt | last | answer_mean | image_mean ...
    pairing: str = UNKNOWN  # cue | answer
    method: str = UNKNOWN  # mean_diff | lat | probe | imported
    normalisation: str = "none"  # none | unit
    sign: str = UNKNOWN  # e.g. "cot_positive"
    filter: dict[str, Any] = dataclasses.field(default_factory=lambda: {"kind": "none"})
    stimulus_hash: str = UNKNOWN
    n_pairs: int = 0
    resampled_from: int | None = None  # original hidden size if Fourier-resampled
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # operations since the direction was made
    library: dict[str, str] = dataclasses.field(default_factory=library_versions)
    created: str = dataclasses.field(
        default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    )
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DirectionMeta:
        names = {f.name for f in dataclasses.fields(cls)}
        known = {k: v for k, v in d.items() if k in names}
        extra = dict(known.get("extra") or {})
        extra.update({k: v for k, v in d.items() if k not in names})
        known["extra"] = extra
        return cls(**known)


@dataclasses.dataclass
class DirectionSet:
    """Per-layer direction vectors plus provenance.

    Keys are block indices (cotscope's block_output convention); a negative key counts from the end, so
    ``{-1: v}`` is the last block. When ``meta.n_layers`` is known, negative keys are resolved on creation;
    otherwise :meth:`resolved` resolves them against the model they are applied to.
    """

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
        if self.meta.n_layers and any(l < 0 for l in vecs):  # -1 is the last block of the source model
            from cotscope.analyses.layers import LayerIndexError, normalize_layer

            try:
                keys = {l: normalize_layer(l, self.meta.n_layers) for l in vecs}
            except LayerIndexError as e:
                raise DirectionFileError(str(e)) from None
            if len(set(keys.values())) != len(keys):
                raise DirectionFileError(
                    f"layers {sorted(vecs)} name the same block twice in a {self.meta.n_layers}-block model"
                )
            vecs = {keys[l]: v for l, v in vecs.items()}
        self.vectors = dict(sorted(vecs.items()))

    @property
    def layers(self) -> list[int]:
        return list(self.vectors)

    @property
    def hidden_size(self) -> int:
        return self.meta.hidden_size

    def __getitem__(self, layer: int) -> np.ndarray:
        key = self._key(layer)
        if key not in self.vectors:
            raise KeyError(f"layer {layer} not in this direction set (has {self.layers})")
        return self.vectors[key]

    def check_fits(self, hidden_size: int, n_layers: int | None = None, what: str = "the model") -> None:
        """Raise a clear error if this direction cannot be applied to a model of that shape."""
        if hidden_size != self.hidden_size:
            raise DirectionFileError(
                f"hidden-size mismatch: the direction has {self.hidden_size} dims, {what} has {hidden_size}. "
                f"Fix: resample it with ds.resample({hidden_size}) (Fourier resampling) or use a "
                "direction read from a model of the same width."
            )
        if n_layers is not None:
            bad = [l for l in self.layers if not -n_layers <= l < n_layers]
            if bad:
                raise DirectionFileError(
                    f"layers {bad} are out of range for {what} with {n_layers} decoder blocks "
                    f"(valid 0..{n_layers - 1}); map layers by relative depth first."
                )

    # ------------------------------------------------------------------ derived sets (provenance follows)
    def _derive(self, vectors: Mapping[int, np.ndarray], op: dict[str, Any], **meta_changes: Any) -> DirectionSet:
        """A new set with ``vectors``, a deep copy of this meta updated by ``meta_changes``, and ``op`` in its history."""
        meta = copy.deepcopy(self.meta)
        for k, v in meta_changes.items():
            setattr(meta, k, v)
        meta.history = [*meta.history, op]
        return DirectionSet(dict(vectors), meta)

    def select(self, layers: Sequence[int]) -> DirectionSet:
        """The set restricted to ``layers`` (negative indices count from the end of the source model)."""
        keys = [self._key(l) for l in layers]
        return self._derive({k: self[k] for k in keys}, {"op": "select", "layers": [int(k) for k in keys]})

    def _key(self, layer: int) -> int:
        """``layer`` as stored: a negative index names a block from the end (needs the source depth)."""
        layer = int(layer)
        if layer in self.vectors or layer >= 0 or not self.meta.n_layers:
            return layer
        from cotscope.analyses.layers import LayerIndexError, normalize_layer

        try:
            return normalize_layer(layer, self.meta.n_layers)
        except LayerIndexError as e:
            raise DirectionFileError(str(e)) from None

    def resolved(self, n_layers: int) -> DirectionSet:
        """Negative layer keys (``-1`` = last block) turned into block indices of an ``n_layers``-block model."""
        from cotscope.analyses.layers import LayerIndexError, normalize_layer

        if all(l >= 0 for l in self.layers):
            return self
        try:
            keys = {l: normalize_layer(l, n_layers) for l in self.layers}
        except LayerIndexError as e:
            raise DirectionFileError(str(e)) from None
        if len(set(keys.values())) != len(keys):
            raise DirectionFileError(f"layers {self.layers} name the same block twice in a {n_layers}-block model")
        return self._derive(
            {keys[l]: v for l, v in self.vectors.items()},
            {"op": "resolve_negative_layers", "n_layers": int(n_layers)},
            n_layers=int(n_layers),
        )

    def steerable(self) -> DirectionSet:
        """Every layer except block 0, whose output llama.cpp (and most steering hooks) cannot steer.

        >>> DirectionSet({0: np.ones(4), 5: np.ones(4)}, DirectionMeta()).steerable().layers
        [5]
        """
        keep = [l for l in self.layers if l != 0]
        if not keep:
            raise DirectionFileError(
                "this direction set holds only block 0, which cannot be steered; read directions at later blocks"
            )
        return self.select(keep)

    def normalised(self) -> DirectionSet:
        """Each layer scaled to unit L2 norm (what llama.cpp's cvector generator and repeng write).

        The original norms are kept in the history entry, so the scale can be recovered.
        """
        norms = {l: float(np.linalg.norm(v.astype(np.float64))) for l, v in self.vectors.items()}
        zero = [l for l, n in norms.items() if n == 0.0]
        if zero:
            raise DirectionFileError(f"cannot normalise layers {zero}: their directions are all zeros")
        return self._derive(
            {l: v.astype(np.float64) / norms[l] for l, v in self.vectors.items()},
            {"op": "normalise", "norms": {str(l): n for l, n in norms.items()}},
            normalisation="unit",
        )

    def norms(self) -> dict[int, float]:
        """L2 norm of each layer's vector."""
        return {l: float(np.linalg.norm(v.astype(np.float64))) for l, v in self.vectors.items()}

    def lowpass(self, cutoff: int | float) -> DirectionSet:
        """Keep the lowest frequency bins along the hidden dimension (:func:`analyses.spectral.lowpass`).

        ``cutoff``: a bin count (int) or a fraction of the rfft bins (float in (0, 1]).
        """
        return self._filtered("lowpass", cutoff)

    def highpass(self, cutoff: int | float) -> DirectionSet:
        """The exact complement of :meth:`lowpass` at the same cutoff."""
        return self._filtered("highpass", cutoff)

    def _filtered(self, kind: str, cutoff: int | float) -> DirectionSet:
        from cotscope.analyses import spectral

        c = spectral.cutoff_bins(self.hidden_size, cutoff)  # CutoffError names the valid range
        fn = spectral.lowpass if kind == "lowpass" else spectral.highpass
        cut = cutoff if isinstance(cutoff, (int, np.integer)) else float(cutoff)
        flt = {"kind": kind, "cutoff": cut, "cutoff_bins": c}
        return self._derive(
            {l: fn(v, c) for l, v in self.vectors.items()},
            {"op": kind, "cutoff": cut, "cutoff_bins": c},
            filter=flt,
            normalisation="none",
        )

    def resample(self, d: int, cutoff: int | float | None = None) -> DirectionSet:
        """Fourier-resample every layer to width ``d``, keeping each layer's norm (:func:`analyses.spectral.resample`).

        Use it to apply a direction to a model of another width; ``cutoff`` low-passes in the same step.
        """
        from cotscope.analyses import spectral

        if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 2:
            raise DirectionFileError(f"resample needs a target width d >= 2 (an int), got {d!r}")
        d = int(d)
        if cutoff is not None:
            spectral.cutoff_bins(self.hidden_size, cutoff)
        vecs = {l: spectral.resample(v, d, cutoff=cutoff) for l, v in self.vectors.items()}
        return self._derive(
            vecs,
            {"op": "resample", "from": self.hidden_size, "to": d, "cutoff": cutoff},
            hidden_size=d,
            resampled_from=self.meta.resampled_from or self.hidden_size,
        )

    # ------------------------------------------------------------------ arithmetic
    __array_ufunc__ = None  # numpy arrays do not broadcast into a set: ``array * ds`` is a TypeError

    @staticmethod
    def _scalar(x: Any) -> float | None:
        if isinstance(x, (bool, np.bool_)) or not isinstance(x, numbers.Real):
            return None
        x = float(x)
        if not math.isfinite(x):
            raise DirectionFileError(f"cannot scale a direction by {x}; use a finite number")
        return x

    def _scaled(self, factor: float, op: dict[str, Any]) -> DirectionSet:
        unit = self.meta.normalisation == "unit" and abs(factor) == 1.0
        sign = self.meta.sign
        if factor < 0:
            flip = {"_positive": "_negative", "_negative": "_positive"}
            sign = next((sign[: -len(a)] + b for a, b in flip.items() if sign.endswith(a)), sign)
        norm = self.meta.normalisation if unit or self.meta.normalisation == UNKNOWN else "none"
        return self._derive(
            {l: v.astype(np.float64) * factor for l, v in self.vectors.items()}, op, sign=sign, normalisation=norm
        )

    def __mul__(self, other: Any) -> DirectionSet:
        f = self._scalar(other)
        if f is None:
            return NotImplemented
        return self._scaled(f, {"op": "scale", "factor": f})

    __rmul__ = __mul__

    def __truediv__(self, other: Any) -> DirectionSet:
        f = self._scalar(other)
        if f is None:
            return NotImplemented
        if f == 0.0:
            raise DirectionFileError("cannot divide a direction by zero")
        return self._scaled(1.0 / f, {"op": "scale", "factor": 1.0 / f})

    def __neg__(self) -> DirectionSet:
        return self._scaled(-1.0, {"op": "negate"})

    def _summary(self) -> dict[str, Any]:
        m = self.meta
        return {
            "model_id": m.model_id,
            "method": m.method,
            "token_rule": m.token_rule,
            "pairing": m.pairing,
            "stimulus_hash": m.stimulus_hash,
            "n_pairs": m.n_pairs,
            "sign": m.sign,
            "history": m.history,
        }

    def __add__(self, other: Any) -> DirectionSet:
        if not isinstance(other, DirectionSet):
            if isinstance(other, numbers.Number) and other == 0:  # sum([a, b, c]) starts from 0
                return self
            return NotImplemented
        if other.hidden_size != self.hidden_size:
            raise DirectionFileError(
                f"cannot add directions of widths {self.hidden_size} and {other.hidden_size}; "
                f"resample one first: b.resample({self.hidden_size})"
            )
        n_a, n_b = self.meta.n_layers, other.meta.n_layers
        if n_a and n_b and n_a != n_b:
            raise DirectionFileError(
                f"cannot add directions read from models of {n_a} and {n_b} decoder blocks: "
                "block indices mean different depths"
            )
        a, b = (
            self.resolved(n_a or n_b) if (n_a or n_b) else self,
            other.resolved(n_a or n_b) if (n_a or n_b) else other,
        )
        if a.layers != b.layers:
            common = sorted(set(a.layers) & set(b.layers))
            raise DirectionFileError(
                f"cannot add direction sets with different layers {a.layers} and {b.layers}; "
                f"select the common ones first: a.select({common}) + b.select({common})"
            )
        vecs = {l: a.vectors[l].astype(np.float64) + b.vectors[l].astype(np.float64) for l in a.layers}
        method = a.meta.method if a.meta.method == b.meta.method else "combination"
        return a._derive(
            vecs, {"op": "add", "other": b._summary()}, method=method, normalisation="none", n_layers=n_a or n_b
        )

    def __radd__(self, other: Any) -> DirectionSet:
        return self.__add__(other)

    def __sub__(self, other: Any) -> DirectionSet:
        if not isinstance(other, DirectionSet):
            return NotImplemented
        return self + (-other)

    # ------------------------------------------------------------------ other tools
    def to_gguf(
        self, path: str | Path, *, target: Any = None, model_hint: str | None = None, normalise: bool = False
    ) -> Path:
        """Write a llama.cpp control vector (also read by repeng); see :func:`analyses.export.export_gguf_cv`.

        ``normalise=True`` writes unit vectors per layer, as llama.cpp's cvector generator does; the file's
        provenance records which was done. Block 0 is refused: call :meth:`steerable` first.
        """
        from cotscope.analyses.export.gguf_cv import export_gguf_cv

        return export_gguf_cv(self.normalised() if normalise else self, path, target=target, model_hint=model_hint)

    @classmethod
    def from_gguf(
        cls, path: str | Path, *, n_layers: int | None = None, expect_hidden_size: int | None = None
    ) -> DirectionSet:
        """Read a llama.cpp / repeng control-vector GGUF (see :func:`analyses.export.import_gguf_cv`)."""
        from cotscope.analyses.export.gguf_cv import import_gguf_cv

        return import_gguf_cv(path, n_layers=n_layers, expect_hidden_size=expect_hidden_size, allow_block0=True)

    def to_repeng(self, *, target: Any = None, normalise: bool = False) -> dict[str, Any]:
        """Keyword arguments for ``repeng.ControlVector(**ds.to_repeng())`` (``model_type`` and ``directions``)."""
        from cotscope.analyses.export.repeng_cv import to_repeng

        return to_repeng(self.normalised() if normalise else self, target=target)

    @classmethod
    def from_repeng(cls, cv: Any, *, n_layers: int | None = None) -> DirectionSet:
        """A set from a ``repeng.ControlVector`` (or anything with ``model_type`` and ``directions``)."""
        from cotscope.analyses.export.repeng_cv import from_repeng

        return from_repeng(cv, n_layers=n_layers)

    def to_steering_vector(self, *, normalise: bool = False, dtype: Any = None, device: Any = None) -> Any:
        """A ``steering_vectors.SteeringVector`` (``layer_type="decoder_block"``) holding these directions.

        steering-vectors adds ``multiplier * v`` to the output of ``model.layers[i]``, which is cotscope's layer
        ``i``, so the keys carry over unchanged. Needs the ``steering-vectors`` package (and torch).

        >>> sv = ds.to_steering_vector()                              # doctest: +SKIP
        >>> with sv.apply(lm.hf, multiplier=4.0):                     # doctest: +SKIP
        ...     out = lm.hf.generate(**inputs)
        """
        try:
            import torch
            from steering_vectors import SteeringVector
        except ImportError as e:
            raise DirectionFileError(
                f"to_steering_vector needs the steering-vectors package ({e}); install it with "
                "`pip install --no-deps steering-vectors` (its transformers<5 pin is too strict "
                "for cotscope's transformers 5; the code works with it)"
            ) from None
        ds = self.normalised() if normalise else self
        if any(l < 0 for l in ds.layers):
            raise DirectionFileError(
                f"layers {ds.layers} include negative indices; resolve them first with ds.resolved(n_layers)"
            )
        acts = {
            int(l): torch.as_tensor(np.array(v), dtype=dtype or torch.float32, device=device)
            for l, v in ds.vectors.items()
        }
        return SteeringVector(layer_activations=acts, layer_type="decoder_block")

    @classmethod
    def from_steering_vector(cls, sv: Any, meta: DirectionMeta | None = None) -> DirectionSet:
        """A set from a ``steering_vectors.SteeringVector`` with ``layer_type="decoder_block"``."""
        layer_type = getattr(sv, "layer_type", None)
        acts = getattr(sv, "layer_activations", None)
        if layer_type != "decoder_block" or not isinstance(acts, Mapping):
            raise DirectionFileError(
                f"expected a SteeringVector with layer_type='decoder_block', got "
                f"{type(sv).__name__} with layer_type={layer_type!r}; only decoder-block "
                "outputs match cotscope's block_output layers"
            )
        vecs = {
            int(l): np.asarray(t.detach().float().cpu().numpy() if hasattr(t, "detach") else t).reshape(-1)
            for l, t in acts.items()
        }
        meta = meta or DirectionMeta(
            method="imported",
            normalisation=UNKNOWN,
            filter={"kind": UNKNOWN},
            library={},
            created=UNKNOWN,
            extra={"imported_from": "steering-vectors SteeringVector"},
        )
        return cls(vecs, meta)

    def __repr__(self) -> str:
        m = self.meta
        ls = self.layers
        span = f"{ls[0]}..{ls[-1]} ({len(ls)})" if len(ls) > 3 else str(ls)
        ops = ",".join(h.get("op", "?") for h in m.history) or "-"
        return (
            f"DirectionSet(model={m.model_id!r}, method={m.method!r}, layers={span}, hidden_size={self.hidden_size}, "
            f"normalisation={m.normalisation!r}, history=[{ops}])"
        )

    def save(self, path: str | Path) -> Path:
        """Write atomically; returns the path."""
        from cotscope.analyses.atomic import atomic_path
        from cotscope.analyses.safetensors_io import save_file  # deterministic header bytes

        path = Path(path)
        tensors = {f"direction.{l}": np.ascontiguousarray(v, dtype=np.float32) for l, v in self.vectors.items()}
        header = {"format": FORMAT_NAME, "format_version": str(FORMAT_VERSION), "cotscope": self.meta.to_json()}
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=header)
        return path

    @classmethod
    def load(
        cls, path: str | Path, expect_hidden_size: int | None = None, expect_n_layers: int | None = None
    ) -> DirectionSet:
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
            raise DirectionFileError(
                f"{path} is not a readable safetensors file ({e}); it may be truncated or corrupt. "
                "Re-export it, or import foreign formats with analyses.export."
            ) from None
        if header.get("format") != FORMAT_NAME:
            raise DirectionFileError(
                f"{path} is not a cotscope direction file (header format={header.get('format')!r}); "
                "use analyses.export.import_* for GGUF/npz files from other tools"
            )
        if int(header.get("format_version", 0)) > FORMAT_VERSION:
            raise DirectionFileError(
                f"{path} has format version {header['format_version']}, newer than this cotscope "
                f"({FORMAT_VERSION}); upgrade cotscope"
            )
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
