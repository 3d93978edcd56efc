"""Lazy, tensor-by-tensor reading of safetensors checkpoints (a directory of shards or one file)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import struct
from pathlib import Path

import numpy as np

from cotscope.analyses.prior.errors import CheckpointError

_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives: shard file, dtype tag, shape and byte offsets inside the shard."""

    name: str
    file: Path
    dtype: str
    shape: tuple[int, ...]
    start: int  # absolute byte offset of the data in the file
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start


def _read_header(path: Path) -> tuple[dict, int, str]:
    """Parse a safetensors header without mapping the file: (header dict, data offset, header sha256)."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(8)
            if len(raw) != 8:
                raise ValueError("file shorter than 8 bytes")
            (n,) = struct.unpack("<Q", raw)
            if n > 100_000_000:
                raise ValueError(f"header length {n} is implausible")
            blob = fh.read(n)
            if len(blob) != n:
                raise ValueError("header truncated")
        return json.loads(blob), 8 + n, hashlib.sha256(blob).hexdigest()
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({e}); it may be truncated. "
            "Re-save the checkpoint with save_pretrained."
        ) from None


class Checkpoint:
    """A safetensors checkpoint (directory of shards or a single file), read lazily.

    >>> ck = Checkpoint("path/to/model")                   # doctest: +SKIP
    >>> ck.info("model.layers.0.mlp.up_proj.weight").shape  # doctest: +SKIP
    (1536, 576)
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise CheckpointError(
                f"checkpoint {self.path} does not exist; pass a directory written by "
                "save_pretrained (safetensors shards) or a .safetensors file"
            )
        files = self._shard_files()
        self.tensors: dict[str, TensorInfo] = {}
        self.header_sha256: dict[str, str] = {}
        for f in files:
            header, data_start, digest = _read_header(f)
            self.header_sha256[f.name] = digest
            fsize = f.stat().st_size
            for name, spec in header.items():
                if name == "__metadata__":
                    continue
                if name in self.tensors:
                    raise CheckpointError(
                        f"tensor {name!r} appears in both {self.tensors[name].file.name} and "
                        f"{f.name}; the checkpoint is inconsistent"
                    )
                a, b = spec["data_offsets"]
                info = TensorInfo(
                    name, f, spec["dtype"], tuple(int(s) for s in spec["shape"]), data_start + a, data_start + b
                )
                if info.end > fsize:
                    raise CheckpointError(
                        f"{f} is truncated: tensor {name!r} ends at byte {info.end} but the file has {fsize}"
                    )
                self.tensors[name] = info
        if not self.tensors:
            raise CheckpointError(f"checkpoint {self.path} holds no tensors")
        self.config = self._read_config()

    def _shard_files(self) -> list[Path]:
        p = self.path
        if p.is_file():
            return [p]
        index = p / "model.safetensors.index.json"
        if index.is_file():
            try:
                wmap = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise CheckpointError(f"{index} is corrupt ({e}); re-save the checkpoint") from None
            files = sorted({p / f for f in wmap.values()})
            missing = [f.name for f in files if not f.is_file()]
            if missing:
                raise CheckpointError(
                    f"{index} lists shards that are missing: {missing[:5]}; the download or copy is incomplete"
                )
            return files
        files = sorted(p.glob("*.safetensors"))
        if not files:
            raise CheckpointError(
                f"{p} contains no .safetensors files (found: "
                f"{sorted(x.name for x in p.iterdir())[:8]}); convert .bin checkpoints with "
                "save_pretrained(safe_serialization=True)"
            )
        return files

    def _read_config(self) -> dict:
        cfg = (self.path if self.path.is_dir() else self.path.parent) / "config.json"
        if cfg.is_file():
            try:
                return json.loads(cfg.read_text())
            except json.JSONDecodeError:
                return {}
        return {}

    # -- config helpers -------------------------------------------------------------------------
    def text_config(self) -> dict:
        """The language model's part of ``config.json`` (``text_config`` for VLMs, else the whole)."""
        c = self.config
        return c.get("text_config") or c

    def hidden_size(self) -> int | None:
        h = self.text_config().get("hidden_size")
        return int(h) if h else None

    def ties_embeddings(self) -> bool:
        """True if the config ties ``lm_head`` to the input embeddings."""
        for c in (self.config, self.text_config()):
            if "tie_word_embeddings" in c:
                return bool(c["tie_word_embeddings"])
        return False

    def model_type(self) -> str:
        return str(self.config.get("model_type", "unknown"))

    def info(self, name: str) -> TensorInfo:
        try:
            return self.tensors[name]
        except KeyError:
            raise CheckpointError(f"tensor {name!r} is not in {self.path}") from None

    # -- reading ----------------------------------------------------------------------------------
    def read(self, name: str, rows: slice | None = None) -> np.ndarray:
        """Read a tensor (or a block of its leading-axis rows) as float32 (float64 stays float64).

        Plain dtypes go through ``safetensors.safe_open``; BF16 (which numpy lacks) is read with
        positioned file reads and widened to float32. The file is opened per call, so no memory map
        outlives the read.
        """
        info = self.info(name)
        if info.dtype not in _ITEMSIZE:
            raise CheckpointError(
                f"tensor {name!r} has dtype {info.dtype}, which cotscope cannot read without "
                "torch; re-save the checkpoint in float32, float16 or bfloat16"
            )
        if info.dtype == "BF16":
            arr = self._read_bf16(info, rows)
        else:
            from safetensors import safe_open

            with safe_open(str(info.file), framework="numpy") as fh:
                sl = fh.get_slice(name)
                arr = sl[rows] if rows is not None and info.shape else sl[:] if info.shape else fh.get_tensor(name)
        arr = np.asarray(arr)
        if arr.dtype != np.float64:
            arr = arr.astype(np.float32, copy=False)
        return arr

    def _read_bf16(self, info: TensorInfo, rows: slice | None) -> np.ndarray:
        shape = info.shape
        row_elems = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        if rows is None or not shape:
            a, b = 0, shape[0] if shape else 1
        else:
            a, b, _ = rows.indices(shape[0])
        n = (b - a) * row_elems
        buf = np.empty(n, dtype=np.uint16)
        with open(info.file, "rb") as fh:
            fh.seek(info.start + a * row_elems * 2)
            got = fh.readinto(memoryview(buf).cast("B"))
        if got != n * 2:
            raise CheckpointError(f"{info.file} is truncated inside tensor {info.name!r}")
        out = (buf.astype(np.uint32) << 16).view(np.float32)
        return out.reshape(((b - a),) + shape[1:] if shape else ())
