"""The prior artifact: a safetensors file of ``delta.<canonical name>`` tensors with JSON provenance.

:func:`open_prior_writer` streams Δ into it tensor by tensor (the header is known before any Δ is
computed); :class:`PriorArtifact` reads it back and :meth:`PriorArtifact.fit` maps it onto a model's
parameter names, raising :class:`PriorFitError` if it does not fit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import hashlib
import json
import os
import struct
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cotscope.analyses.prior.errors import CheckpointError, PriorError, PriorFitError
from cotscope.analyses.prior.matching import MatchReport, Pair, canonical_name
from cotscope.analyses.prior.reader import Checkpoint, _read_header

PRIOR_FORMAT = "cotscope.prior"
PRIOR_FORMAT_VERSION = 1
PRIOR_FILENAME = "prior.safetensors"
SIGN_CONVENTION = "delta = theta_reason - theta_vl"

_OUT_DTYPES = {"float32": ("F32", np.float32), "float16": ("F16", np.float16)}


class _StreamingWriter:
    """Write a safetensors file tensor by tensor, chunk by chunk, in a fixed order."""

    def __init__(self, fh, specs: Sequence[tuple[str, tuple[int, ...]]], dtype: str, metadata: Mapping[str, str]):
        tag, self.np_dtype = _OUT_DTYPES[dtype]
        item = np.dtype(self.np_dtype).itemsize
        header: dict[str, Any] = {"__metadata__": dict(metadata)}
        off = 0
        self.order: list[tuple[str, int]] = []
        for name, shape in specs:
            n = int(np.prod(shape)) * item
            header[name] = {"dtype": tag, "shape": list(shape), "data_offsets": [off, off + n]}
            self.order.append((name, n))
            off += n
        blob = json.dumps(header, separators=(",", ":")).encode()
        blob += b" " * (-len(blob) % 8)
        fh.write(struct.pack("<Q", len(blob)) + blob)
        self.fh, self.pos, self.written = fh, 0, 0

    def write(self, name: str, chunk: np.ndarray) -> None:
        exp, n = self.order[self.pos]
        if name != exp:
            raise RuntimeError(f"internal: writing {name} but {exp} is next")
        b = memoryview(np.ascontiguousarray(chunk, dtype=self.np_dtype)).cast("B")
        self.fh.write(b)
        self.written += b.nbytes
        if self.written == n:
            self.pos, self.written = self.pos + 1, 0
        elif self.written > n:
            raise RuntimeError(f"internal: too many bytes for {name}")

    def close(self) -> None:
        if self.pos != len(self.order):
            raise RuntimeError(f"internal: only {self.pos}/{len(self.order)} tensors written")


def library_versions() -> dict[str, str]:
    from cotscope.analyses.artifacts import library_versions as lv

    return lv()


def _side_provenance(ck: Checkpoint) -> dict:
    return {
        "path": str(ck.path.resolve()),
        "model_type": ck.model_type(),
        "hidden_size": ck.hidden_size(),
        "n_layers": ck.text_config().get("num_hidden_layers"),
        "tie_word_embeddings": ck.ties_embeddings(),
        "shard_header_sha256": ck.header_sha256,
        "config_sha256": hashlib.sha256(json.dumps(ck.config, sort_keys=True).encode()).hexdigest()
        if ck.config
        else "unknown",
    }


def check_out_dtype(out_dtype: str) -> None:
    """Raise :class:`PriorError` unless Δ can be stored in ``out_dtype``."""
    if out_dtype not in _OUT_DTYPES:
        raise PriorError(f"out_dtype {out_dtype!r} is not supported; use one of {sorted(_OUT_DTYPES)}")


def build_provenance(
    reason: Checkpoint, vl: Checkpoint, pairs: Sequence[Pair], report: MatchReport, out_dtype: str
) -> dict:
    """The JSON provenance stored in the artifact's header (and, minus ``tensors``, in the analysis)."""
    return {
        "format": PRIOR_FORMAT,
        "sign": SIGN_CONVENTION,
        "reason": _side_provenance(reason),
        "vl": _side_provenance(vl),
        "modules": report.modules,
        "out_dtype": out_dtype,
        "match": {
            "n_matched": report.n_matched,
            "matched_exact": report.matched_exact,
            "matched_mapped": report.matched_mapped,
            "unmatched_reason": len(report.unmatched_reason),
            "unmatched_vl": len(report.unmatched_vl),
            "shape_mismatched": len(report.shape_mismatched),
        },
        "tensors": {
            p.canonical: {
                "reason_key": p.reason_key,
                "vl_key": p.vl_key,
                "shape": list(p.shape),
                "layer": p.layer,
                "module": p.module,
            }
            for p in pairs
        },
        "library": library_versions(),
        "created": _created(),
    }


def _created() -> str:
    """Now in UTC, or ``SOURCE_DATE_EPOCH`` when set (reproducible builds: identical inputs, identical bytes)."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = (
        _dt.datetime.fromtimestamp(int(epoch), _dt.timezone.utc)
        if epoch and epoch.strip().isdigit()
        else _dt.datetime.now(_dt.timezone.utc)
    )
    return when.isoformat(timespec="seconds")


@contextlib.contextmanager
def open_prior_writer(
    out_path: Path, pairs: Sequence[Pair], out_dtype: str, provenance: Mapping[str, Any]
) -> Iterator[_StreamingWriter]:
    """Write the artifact atomically: yields a writer taking each pair's Δ in ``pairs`` order, in row blocks."""
    from cotscope.analyses.atomic import atomic_path

    specs = [("delta." + p.canonical, p.shape) for p in pairs]
    md = {
        "format": PRIOR_FORMAT,
        "format_version": str(PRIOR_FORMAT_VERSION),
        "cotscope": json.dumps(provenance, sort_keys=True),
    }
    with atomic_path(out_path) as tmp:
        with open(tmp, "wb") as fh:
            writer = _StreamingWriter(fh, specs, out_dtype, md)
            yield writer
            writer.close()


@dataclasses.dataclass
class PriorArtifact:
    """A saved reasoning prior: ``delta.<canonical>`` tensors + provenance (``meta``).

    >>> prior = PriorArtifact.load("out/prior.safetensors")                       # doctest: +SKIP
    >>> mapping = prior.fit({n: tuple(p.shape) for n, p in model.named_parameters()})  # doctest: +SKIP
    """

    path: Path
    meta: dict
    shapes: dict[str, tuple[int, ...]]

    @classmethod
    def load(cls, path: str | Path) -> PriorArtifact:
        """Open and validate a prior file (tensors are read on demand with :meth:`get`)."""
        path = Path(path)
        if path.is_dir():
            path = path / PRIOR_FILENAME
        if not path.is_file():
            raise PriorFitError(
                f"prior file {path} does not exist; create it with analyses.prior.compute_prior(..., "
                "out_path=...) or run_prior_analysis"
            )
        try:
            header, _, _ = _read_header(path)
        except CheckpointError as e:
            raise PriorFitError(str(e)) from None
        md = header.get("__metadata__") or {}
        if md.get("format") != PRIOR_FORMAT:
            raise PriorFitError(f"{path} is not a cotscope prior file (header format={md.get('format')!r})")
        if int(md.get("format_version", 0)) > PRIOR_FORMAT_VERSION:
            raise PriorFitError(
                f"{path} has prior format version {md['format_version']}, newer than this cotscope "
                f"({PRIOR_FORMAT_VERSION}); upgrade cotscope"
            )
        try:
            meta = json.loads(md["cotscope"])
        except (KeyError, json.JSONDecodeError) as e:
            raise PriorFitError(f"{path}: provenance metadata is corrupt ({e})") from None
        shapes = {}
        for k, spec in header.items():
            if k == "__metadata__":
                continue
            if not k.startswith("delta."):
                raise PriorFitError(f"{path}: unexpected tensor {k!r} (prior tensors are named delta.<canonical>)")
            shapes[k[len("delta.") :]] = tuple(spec["shape"])
        listed = set(meta.get("tensors", {}))
        if listed != set(shapes):
            raise PriorFitError(
                f"{path}: provenance lists {len(listed)} tensors but the file holds {len(shapes)}; the "
                "file is inconsistent — regenerate it"
            )
        return cls(path, meta, shapes)

    @property
    def names(self) -> list[str]:
        return list(self.shapes)

    def get(self, canonical: str) -> np.ndarray:
        """Δ for one canonical name as a float32 array."""
        if canonical not in self.shapes:
            raise KeyError(
                f"{canonical!r} is not in this prior (has {len(self.shapes)} tensors, e.g. {self.names[:3]})"
            )
        from safetensors import safe_open

        with safe_open(str(self.path), framework="numpy") as fh:
            a = fh.get_tensor("delta." + canonical)
        if not np.all(np.isfinite(a)):
            raise PriorFitError(f"{self.path}: Δ for {canonical} contains NaN or inf")
        return a.astype(np.float32, copy=False)

    def items(self) -> Iterator[tuple[str, np.ndarray]]:
        for n in self.names:
            yield n, self.get(n)

    def fit(self, param_shapes: Mapping[str, Sequence[int]], allow_partial: bool = False) -> dict[str, str]:
        """Map a model's parameter names onto this prior: ``{param name: canonical name}``.

        ``param_shapes`` is ``{name: shape}`` (e.g. from ``model.named_parameters()``). Every Δ must find
        a parameter of the same shape (``allow_partial=True`` tolerates Δ tensors without a parameter,
        never a shape mismatch); otherwise :class:`PriorFitError` lists what is wrong.
        """
        by_canon: dict[str, str] = {}
        for pname in param_shapes:
            c = canonical_name(pname)
            key = c[0] if c is not None else pname  # non-LM Δ ("raw:" selections) match by exact name
            by_canon.setdefault(key, pname)
        missing = [c for c in self.names if c not in by_canon]
        bad = [
            (c, by_canon[c], tuple(param_shapes[by_canon[c]]), self.shapes[c])
            for c in self.names
            if c in by_canon and tuple(param_shapes[by_canon[c]]) != self.shapes[c]
        ]
        src = self.meta.get("vl", {})
        if bad or (missing and not allow_partial) or len(missing) == len(self.names):
            lines = [
                f"the prior {self.path.name} (from {src.get('model_type', '?')} with hidden size "
                f"{src.get('hidden_size', '?')}, {len(self.names)} tensors) does not fit this model:"
            ]
            if missing:
                lines.append(f"  {len(missing)} Δ tensors have no parameter, e.g. {missing[:4]}")
            for c, p, ps, ds in bad[:5]:
                lines.append(f"  shape mismatch {p}: model {ps} vs prior {ds}")
            lines.append(
                "Fix: apply the prior to the model family it was computed for, or recompute it with "
                "analyses.prior.compute_prior between matching checkpoints."
            )
            raise PriorFitError("\n".join(lines))
        return {by_canon[c]: c for c in self.names if c in by_canon}
