"""Write and read safetensors files with numpy and plain file I/O (no mmap), including bfloat16.

The files follow the safetensors format: an 8-byte little-endian header length, a JSON header
``{name: {"dtype", "shape", "data_offsets"}, "__metadata__": {...}}`` padded with spaces to a multiple
of 8 bytes, then the tensors back to back. Any safetensors reader opens them (``safe_open(...,
framework="pt")`` also for ``BF16``). We write and read them ourselves because:

* numpy has no bfloat16, and ``safetensors.numpy`` cannot store one; here a bfloat16 tensor is kept as its
  raw 16-bit pattern and converted to float32 on read (exact: bfloat16 is the top half of a float32);
* the sha256 of a file is computed while it is written (no second read);
* :func:`read_into` reads one tensor (or a row range of it) with ``os.preadv`` straight into a caller's
  buffer: no memory map, so reading a store does not grow the process's resident set by the file pages.

>>> import numpy as np, tempfile, os
>>> p = os.path.join(tempfile.mkdtemp(), "x.safetensors")
>>> _ = write_file(p, {"a": np.arange(6, dtype=np.float32).reshape(2, 3)}, store_dtypes={"a": "bfloat16"})
>>> h = read_header(p); h.tensors["a"].dtype, h.tensors["a"].shape
('BF16', (2, 3))
>>> read_tensor(p, "a").tolist()
[[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cotscope.errors import CotscopeError

# storage dtype name -> (safetensors code, numpy dtype holding the raw bytes)
ST_CODES: dict[str, tuple[str, np.dtype]] = {
    "float64": ("F64", np.dtype("<f8")),
    "float32": ("F32", np.dtype("<f4")),
    "float16": ("F16", np.dtype("<f2")),
    "bfloat16": ("BF16", np.dtype("<u2")),
    "int64": ("I64", np.dtype("<i8")),
    "int32": ("I32", np.dtype("<i4")),
    "int16": ("I16", np.dtype("<i2")),
    "int8": ("I8", np.dtype("i1")),
    "uint8": ("U8", np.dtype("u1")),
    "bool": ("BOOL", np.dtype("?")),
}
CODE_TO_NAME = {code: name for name, (code, _) in ST_CODES.items()}
# the order ``safetensors`` itself writes tensors in: dtype (this rank, descending), then name
_ST_RANK = {
    "BOOL": 0,
    "U8": 1,
    "I8": 2,
    "I16": 3,
    "U16": 4,
    "F16": 5,
    "BF16": 6,
    "I32": 7,
    "U32": 8,
    "F32": 9,
    "F64": 10,
    "I64": 11,
    "U64": 12,
}
FLOAT_STORAGE = ("float32", "float16", "bfloat16")
MAX_HEADER = 100 * 1024 * 1024


class TensorFileError(CotscopeError):
    """A tensor file that is truncated, malformed or lacks a requested tensor."""


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    dtype: str  # safetensors code: F32, BF16, ...
    shape: tuple[int, ...]
    begin: int  # absolute byte offset in the file
    end: int

    @property
    def storage(self) -> str:
        return CODE_TO_NAME[self.dtype]

    @property
    def raw_dtype(self) -> np.dtype:
        return ST_CODES[self.storage][1]

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.shape[1:], dtype=np.int64)) * self.raw_dtype.itemsize if self.shape else 0


@dataclasses.dataclass(frozen=True)
class Header:
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]
    data_start: int
    file_size: int


# ------------------------------------------------------------------------------------------------ dtypes
def float32_to_bfloat16_bits(x: np.ndarray) -> np.ndarray:
    """Round float32 to bfloat16 (round to nearest, ties to even; NaN stays NaN); returns the uint16 bits.

    >>> float32_to_bfloat16_bits(np.array([1.0, 1.00390625, -2.5], np.float32)).tolist()
    [16256, 16256, 49184]
    """
    b = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = ((b + (np.uint32(0x7FFF) + ((b >> np.uint32(16)) & np.uint32(1)))) >> np.uint32(16)).astype(np.uint16)
    nan = np.isnan(x)
    if nan.any():
        rounded[nan] = ((b[nan] >> np.uint32(16)) | np.uint32(0x0040)).astype(np.uint16)  # keep it a (quiet) NaN
    return rounded


def bfloat16_bits_to_float32(bits: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Widen bfloat16 bit patterns to float32 (exact)."""
    wide = np.left_shift(bits.astype(np.uint32), np.uint32(16))
    if out is None:
        return wide.view(np.float32)
    out[...] = wide.view(np.float32)
    return out


def to_storage(x: np.ndarray, storage: str) -> np.ndarray:
    """``x`` as the raw array written for ``storage`` (float tensors may be narrowed; others pass through)."""
    if storage not in ST_CODES:
        raise TensorFileError(f"unknown storage dtype {storage!r}; use one of {sorted(ST_CODES)}")
    if storage == "bfloat16":
        return float32_to_bfloat16_bits(np.asarray(x, dtype=np.float32))
    return np.ascontiguousarray(x, dtype=ST_CODES[storage][1])


def natural_storage(x: np.ndarray) -> str:
    name = np.dtype(x.dtype).name
    if name not in ST_CODES or name == "bfloat16":
        raise TensorFileError(f"cannot store a numpy array of dtype {x.dtype}; cast it first")
    return name


# ------------------------------------------------------------------------------------------------ writing
def write_file(
    path: str | Path,
    tensors: Mapping[str, np.ndarray],
    *,
    store_dtypes: Mapping[str, str] | None = None,
    metadata: Mapping[str, str] | None = None,
    fsync: bool = True,
    order: str = "given",
) -> tuple[int, str]:
    """Write ``tensors`` to ``path``; returns ``(bytes, sha256 hex)``. The bytes depend only on the arguments.

    ``store_dtypes`` maps a name to a storage dtype (``"bfloat16"``, ``"float16"``, …); other tensors keep theirs.
    ``order="given"`` lays tensors out in the mapping's order; ``"safetensors"`` in the order
    ``safetensors.numpy.save_file`` uses (dtype, then name). Metadata keys are written sorted (``save_file``
    writes them in a random order, so its files are not reproducible byte for byte).
    Not atomic by itself: write to a temporary path (see :func:`analyses.io.atomic.atomic_path`).
    """
    store_dtypes = dict(store_dtypes or {})
    raws: list[tuple[str, np.ndarray, str]] = []
    for name, arr in tensors.items():
        storage = store_dtypes.get(name) or natural_storage(np.asarray(arr))
        raws.append((name, to_storage(arr, storage), storage))
    if order == "safetensors":
        raws.sort(key=lambda r: (-_ST_RANK[ST_CODES[r[2]][0]], r[0]))
    elif order != "given":
        raise TensorFileError(f"unknown tensor order {order!r}; use 'given' or 'safetensors'")
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in sorted(metadata.items())}
    off = 0
    for name, raw, storage in raws:
        header[name] = {
            "dtype": ST_CODES[storage][0],
            "shape": list(np.shape(raw)),
            "data_offsets": [off, off + raw.nbytes],
        }
        off += raw.nbytes
    hbytes = json.dumps(header, separators=(",", ":")).encode()
    hbytes += b" " * (-len(hbytes) % 8)
    h = hashlib.sha256()
    with open(path, "wb") as fh:
        for block in (struct.pack("<Q", len(hbytes)), hbytes, *(memoryview(r).cast("B") for _, r, _ in raws)):
            h.update(block)
            fh.write(block)
        fh.flush()
        if fsync:
            os.fsync(fh.fileno())
    return 8 + len(hbytes) + off, h.hexdigest()


# ------------------------------------------------------------------------------------------------ reading
def parse_header(fd: int, path: str | Path = "?") -> Header:
    size = os.fstat(fd).st_size
    head = os.pread(fd, 8, 0)
    if len(head) < 8:
        raise TensorFileError(f"{path} is truncated ({size} bytes, no header)")
    n = struct.unpack("<Q", head)[0]
    if n > MAX_HEADER or 8 + n > size:
        raise TensorFileError(f"{path} is truncated or not a safetensors file (header length {n}, file {size} bytes)")
    try:
        raw = json.loads(os.pread(fd, n, 8))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TensorFileError(f"{path} has a corrupt header ({e})") from None
    meta = raw.pop("__metadata__", None) or {}
    start = 8 + n
    tensors = {}
    for name, t in raw.items():
        code, shape, (b, e) = t["dtype"], tuple(int(s) for s in t["shape"]), t["data_offsets"]
        if code not in CODE_TO_NAME:
            raise TensorFileError(f"{path}: tensor {name!r} has dtype {code}, which cotscope does not read")
        tensors[name] = TensorInfo(code, shape, start + int(b), start + int(e))
        if start + int(e) > size:
            raise TensorFileError(f"{path} is truncated: tensor {name!r} ends at byte {start + int(e)} of {size}")
    return Header(tensors, dict(meta), start, size)


def read_header(path: str | Path) -> Header:
    fd = os.open(path, os.O_RDONLY)
    try:
        return parse_header(fd, path)
    finally:
        os.close(fd)


def _pread_exact(fd: int, buf: memoryview, offset: int, path: Any) -> None:
    got = 0
    while got < len(buf):
        n = os.preadv(fd, [buf[got:]], offset + got)
        if n == 0:
            raise TensorFileError(f"{path} is truncated (short read at byte {offset + got})")
        got += n


def read_into(
    fd: int,
    info: TensorInfo,
    out: np.ndarray,
    rows: tuple[int, int] | None = None,
    path: Any = "?",
    scratch: np.ndarray | None = None,
) -> np.ndarray:
    """Read rows ``[a, b)`` of a tensor (all rows by default) into ``out`` (float32 for float tensors).

    ``out`` must be C-contiguous with the shape of the selected rows. Float storage (float16, bfloat16) is
    widened to ``out``'s dtype; ``scratch`` (raw bytes buffer) may be passed to avoid an allocation.
    """
    a, b = (0, info.shape[0]) if rows is None else rows
    nbytes = (b - a) * info.row_bytes
    offset = info.begin + a * info.row_bytes
    if not out.flags.c_contiguous:
        raise TensorFileError("read_into needs a C-contiguous output buffer")
    raw_dt = info.raw_dtype
    if out.dtype == raw_dt and info.storage != "bfloat16":
        _pread_exact(fd, memoryview(out).cast("B"), offset, path)
        return out
    if scratch is None or scratch.nbytes < nbytes:
        scratch = np.empty(nbytes, dtype=np.uint8)
    raw = scratch[:nbytes]
    _pread_exact(fd, memoryview(raw), offset, path)
    vals = raw.view(raw_dt).reshape(out.shape)
    if info.storage == "bfloat16":
        bfloat16_bits_to_float32(vals, out=out.view(np.float32) if out.dtype == np.float32 else None)
        if out.dtype != np.float32:
            out[...] = bfloat16_bits_to_float32(vals)
    else:
        out[...] = vals
    return out


def read_tensor(path: str | Path, name: str) -> np.ndarray:
    """One tensor as numpy (float storage widened to float32)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        hdr = parse_header(fd, path)
        if name not in hdr.tensors:
            raise TensorFileError(f"{path} has no tensor {name!r} (has {sorted(hdr.tensors)[:8]}…)")
        info = hdr.tensors[name]
        dt = np.float32 if info.storage in ("float16", "bfloat16") else info.raw_dtype
        return read_into(fd, info, np.empty(info.shape, dtype=dt), path=path)
    finally:
        os.close(fd)


def sha256_file(path: str | Path, block: int = 1 << 22) -> str:
    """sha256 of a file, read in 4 MiB blocks into one reused buffer."""
    h = hashlib.sha256()
    buf = bytearray(block)
    mv = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            h.update(mv[:n])
    return h.hexdigest()
