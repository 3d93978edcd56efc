"""On-disk store of attention-capture runs (sibling of :mod:`analyses.store`): one safetensors file per trace.

A *trace* is one prompt (optionally with an image) and the tokens the model generated from it. For every
generated step ``s`` (the forward pass that produced generated token ``s``) and every captured layer/head, the
store keeps the **query row** of that step over all keys it could see (``prompt_len + s`` keys), plus the
attention mass of that row on each key type. Nothing else is kept: no full attention matrices.

Layout of a run directory::

    manifest.json            format, model provenance, layers, heads, switch mode, key types, trace files + sha256
    traces.jsonl             one record per trace (id, condition, prompt, generated text/tokens, image layout …)
    trace-00000.safetensors  rows        float32 [n_layers, n_heads, Σ_s (prompt_len + s)]  (steps concatenated)
                             row_offsets int64   [n_steps + 1]       (step s = rows[..., off[s]:off[s+1]])
                             mass        float32 [n_steps, n_layers, n_heads, 4]   (by KEY_TYPES)
                             key_types   int8    [prompt_len + n_steps]            (codes of KEY_TYPES)
                             token_ids   int64   [prompt_len + n_steps]            (prompt + generated ids)
                             latent_map  float32 [n_image, grid_h, grid_w]  optional: resampler latent → patch
                                                                               attention (Idefics2 family)
    trace-00000.png          the input image (when there is one), for overlay figures

Files are written atomically and each finished trace appends one line to ``traces.index.jsonl`` (the
resumable-writer protocol of :mod:`analyses.io.resumable`), so an interrupted capture resumes; the final
``manifest.json`` and ``traces.jsonl`` are written once at the end. A trace file is checked against its
sha256 the first time a process reads it (skip with ``trust=True`` or ``COTSCOPE_TRUST_STORE=1``).
Readers need numpy and safetensors only.

>>> run = AttentionRun("runs/demo/attention/store")      # doctest: +SKIP
>>> tr = run.trace(0); tr.step_row(3).shape              # doctest: +SKIP
(30, 9, 187)
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cotscope.analyses.io import tensorfile as tf
from cotscope.analyses.io import verify as _verify
from cotscope.analyses.io.atomic import atomic_path, write_text_atomic
from cotscope.analyses.io.resumable import check_unit_file, open_output, remove_temporaries, write_unit_file
from cotscope.analyses.io.resumable import config_hash as _config_hash
from cotscope.errors import CotscopeError

FORMAT_NAME = "cotscope.attention"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
TRACES = "traces.jsonl"
LOG = "traces.index.jsonl"
LOCK = "run.lock"
KEY_TYPES = ("image", "template", "question", "generated")
IMAGE, TEMPLATE, QUESTION, GENERATED = range(4)


class AttentionStoreError(CotscopeError):
    """An attention run is missing, corrupt, incomplete, or was written by a different configuration."""


def trace_name(index: int, ext: str = "safetensors") -> str:
    return f"trace-{index:05d}.{ext}"


@dataclasses.dataclass
class Trace:
    """One captured generation (numpy arrays; see the module docstring for shapes)."""

    index: int
    record: dict[str, Any]
    rows: np.ndarray
    row_offsets: np.ndarray
    mass: np.ndarray
    key_types: np.ndarray
    token_ids: np.ndarray
    layers: list[int]
    heads: list[int]
    extras: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    @property
    def n_steps(self) -> int:
        return int(len(self.row_offsets) - 1)

    @property
    def prompt_len(self) -> int:
        return int(self.record["prompt_len"])

    @property
    def gen_tokens(self) -> list[str]:
        """Decoded text piece of each generated token (special tokens are ``""``)."""
        return list(self.record["gen_tokens"])

    @property
    def image_positions(self) -> np.ndarray:
        """Key positions (0-based in the prompt) of the image tokens, in order."""
        return np.flatnonzero(self.key_types[: self.prompt_len] == IMAGE)

    def step_row(self, step: int) -> np.ndarray:
        """Query row of ``step``: ``[n_layers, n_heads, prompt_len + step]``."""
        if not 0 <= step < self.n_steps:
            raise IndexError(f"step {step} out of range: trace {self.index} has {self.n_steps} steps")
        return self.rows[..., self.row_offsets[step] : self.row_offsets[step + 1]]

    def step_key_types(self, step: int) -> np.ndarray:
        """Key-type codes of the keys visible at ``step`` (``prompt_len + step`` of them)."""
        return self.key_types[: self.prompt_len + step]


class AttentionRunWriter:
    """Create or resume a run directory; :meth:`done` lists finished trace indices.

    Follows the resumable-writer protocol (:mod:`analyses.io.resumable`): ``manifest.json`` is the header
    (written at creation and at :meth:`finish`), each finished trace appends one line to
    ``traces.index.jsonl`` (O(1) per trace), and ``run.lock`` keeps a second process out. :meth:`finish`
    writes the final ``manifest.json`` (with every trace's file, size and sha256) and ``traces.jsonl`` and
    removes the log, so a finished run has exactly the files of format 1.
    """

    def __init__(
        self,
        path: str | Path,
        config: dict[str, Any],
        plan: Sequence[dict[str, Any]],
        *,
        overwrite: bool = False,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.path = Path(path)
        if not plan:
            raise AttentionStoreError("empty capture plan: pass at least one prompt to capture")
        self.config = config
        self.hash = _config_hash({**config, "plan": list(plan)})
        fresh = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "config_hash": self.hash,
            **config,
            "key_types": list(KEY_TYPES),
            "n_traces": len(plan),
            "traces": [],
            "complete": False,
            "extra": extra or {},
        }

        def reset() -> None:
            for f in list(self.path.glob("trace-*.safetensors")) + list(self.path.glob("trace-*.png")):
                f.unlink()
            write_text_atomic(self.path / TRACES, "")

        self.out = open_output(
            self.path,
            MANIFEST,
            LOG,
            LOCK,
            fresh=fresh,
            fmt=FORMAT_NAME,
            version=FORMAT_VERSION,
            error=AttentionStoreError,
            what=f"attention run {self.path}",
            overwrite=overwrite,
            on_reset=reset,
            fix="Use a new directory, or pass overwrite=True to replace it.",
            log_fsync=False,
        )
        self.manifest = self.out.header
        entries = {int(t["index"]): t for t in self.manifest["traces"]}  # finished runs / format-1 progress
        entries.update({int(t["index"]): t for t in self.out.log.records()})
        self._traces = {k: t for k, t in entries.items() if self._intact(t)}
        remove_temporaries(self.path, ".trace-*.tmp")

    def _intact(self, entry: dict[str, Any]) -> bool:
        return check_unit_file(self.path, entry) is None

    def done(self) -> set[int]:
        return set(self._traces)

    def write(self, index: int, record: dict[str, Any], tensors: dict[str, np.ndarray], image: Any = None) -> None:
        """Write trace ``index`` (arrays + JSON record, optional PIL image) and append it to the log."""
        target = self.path / trace_name(index)
        record = dict(record, index=index, file=target.name)
        if image is not None:
            img_path = self.path / trace_name(index, "png")
            with atomic_path(img_path) as tmp:
                image.save(tmp, format="PNG")
            record["image_file"] = img_path.name
        data = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
        # the safetensors layout save_file uses, but reproducible (sorted metadata), hashed while written
        nbytes, digest = write_unit_file(
            target,
            lambda tmp: tf.write_file(
                tmp, data, metadata={"format": FORMAT_NAME, "trace": str(index)}, order="safetensors", fsync=False
            ),
        )
        line = (
            json.dumps(
                {"index": index, "file": target.name, "bytes": nbytes, "sha256": digest, "record": record}, default=str
            )
            + "\n"
        )
        self.out.log.append(line)
        self._traces[index] = json.loads(line)  # exactly what a resumed writer reads back

    def finish(self, **extra: Any) -> AttentionRun:
        if len(self._traces) != self.manifest["n_traces"]:
            raise AttentionStoreError(
                f"run {self.path} holds {len(self._traces)} of "
                f"{self.manifest['n_traces']} traces; the capture is unfinished"
            )
        self.manifest["traces"] = [self._traces[k] for k in sorted(self._traces)]
        write_text_atomic(
            self.path / TRACES, "".join(json.dumps(t["record"], sort_keys=True) + "\n" for t in self.manifest["traces"])
        )
        self.manifest["complete"] = True
        self.manifest["extra"].update(extra)
        self.out.write_header()
        self.out.log.path.unlink(missing_ok=True)
        self.close()
        return AttentionRun(self.path)

    def close(self) -> None:
        """Release the writer lock (the run stays resumable)."""
        self.out.close()


class AttentionRun:
    """Read-only view of a complete attention run (numpy only)."""

    def __init__(self, path: str | Path, verify: bool = False, *, trust: bool | None = None) -> None:
        self.path = Path(path)
        self.trust = _verify.trusted_by_env() if trust is None else bool(trust)
        man = self.path / MANIFEST
        if not man.is_file():
            raise AttentionStoreError(
                f"no attention run at {self.path} (missing {MANIFEST}); capture one with "
                "probes.attention.capture_run(...)"
            )
        try:
            self.manifest = json.loads(man.read_text())
        except json.JSONDecodeError as e:
            raise AttentionStoreError(f"{man} is corrupt ({e}); delete the run and capture again") from None
        if self.manifest.get("format") != FORMAT_NAME:
            raise AttentionStoreError(
                f"{self.path} is not a cotscope attention run (format {self.manifest.get('format')!r})"
            )
        if not self.manifest.get("complete"):
            raise AttentionStoreError(
                f"attention run {self.path} is incomplete (interrupted?); run the same capture again to resume it"
            )
        self.records: list[dict[str, Any]] = [t["record"] for t in self.manifest["traces"]]
        self._entries = {int(t["index"]): t for t in self.manifest["traces"]}
        if verify:
            for t in self.manifest["traces"]:
                self._check(t, full=True)

    def _check(self, t: dict[str, Any], full: bool) -> None:
        problem = _verify.check_file(self.path / t["file"], t["bytes"], t["sha256"] if full else None)
        if problem:
            raise AttentionStoreError(
                f"trace file {self.path / t['file']} is missing or corrupt ({problem}); delete "
                "it and re-run the same capture (only that trace is recomputed). Trace files "
                "are checked against their sha256 on first read; skip that for a trusted run "
                f"with trust=True or {_verify.ENV_TRUST}=1"
            )

    @property
    def layers(self) -> list[int]:
        return list(self.manifest["layers"])

    @property
    def heads(self) -> list[int]:
        return list(self.manifest["heads"])

    @property
    def model(self) -> dict[str, Any]:
        return dict(self.manifest["model"])

    def __len__(self) -> int:
        return len(self.records)

    def select(self, **where: Any) -> list[int]:
        """Trace indices whose record matches every ``key=value`` (e.g. ``condition="cot"``)."""
        return [r["index"] for r in self.records if all(r.get(k) == v for k, v in where.items())]

    def trace(self, index: int) -> Trace:
        from safetensors import safe_open

        rec = next((r for r in self.records if r["index"] == index), None)
        if rec is None:
            raise AttentionStoreError(f"trace {index} is not in run {self.path} (has {len(self)} traces)")
        f = self.path / rec["file"]
        self._check(self._entries[index], full=not self.trust)
        try:
            with safe_open(str(f), framework="numpy") as fh:
                arr = {k: fh.get_tensor(k) for k in fh.keys()}
        except Exception as e:
            raise AttentionStoreError(
                f"trace file {f} is unreadable ({e}); delete it and re-run the same capture"
            ) from None
        core = ("rows", "row_offsets", "mass", "key_types", "token_ids")
        return Trace(
            index=index,
            record=rec,
            **{k: arr[k] for k in core},
            layers=self.layers,
            heads=self.heads,
            extras={k: v for k, v in arr.items() if k not in core},
        )

    def image(self, index: int) -> Any:
        """The trace's input image (PIL) or ``None``."""
        rec = next(r for r in self.records if r["index"] == index)
        if not rec.get("image_file"):
            return None
        from PIL import Image

        with Image.open(self.path / rec["image_file"]) as im:
            return im.convert("RGB")
