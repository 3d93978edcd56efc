"""Byte-reproducible safetensors files: the same tensors and metadata always give the same bytes.

``safetensors.numpy.save_file`` keeps the ``__metadata__`` strings in a hash map with a per-process random
order, so with two or more metadata keys the header — and every checksum over the file — changes from run to
run although nothing else does. :func:`save_file` is a drop-in replacement that writes the header with sorted
metadata keys and the tensors in data order. Readers see an ordinary safetensors file.

>>> import numpy as np, tempfile, os
>>> p = os.path.join(tempfile.mkdtemp(), "x.safetensors")
>>> save_file({"a": np.zeros(3, np.float32)}, p, metadata={"z": "1", "a": "2"})
>>> open(p, "rb").read()[8:61]
b'{"__metadata__":{"a":"2","z":"1"},"a":{"dtype":"F32",'
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from pathlib import Path

import numpy as np


def serialize(tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None) -> bytes:
    """The file's bytes (what :func:`save_file` writes)."""
    from safetensors.numpy import save

    blob = save(dict(tensors), metadata=dict(metadata) if metadata is not None else None)
    n = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8 : 8 + n])
    fixed: dict = {}
    if "__metadata__" in header:
        fixed["__metadata__"] = dict(sorted(header.pop("__metadata__").items()))
    fixed.update(sorted(header.items(), key=lambda kv: (kv[1]["data_offsets"], kv[0])))
    text = json.dumps(fixed, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + blob[8 + n :]


def save_file(
    tensors: Mapping[str, np.ndarray], filename: str | Path, metadata: Mapping[str, str] | None = None
) -> None:
    """Drop-in for ``safetensors.numpy.save_file`` with a deterministic header (see the module docstring)."""
    data = serialize(tensors, metadata)
    with open(filename, "wb") as fh:
        fh.write(data)
