"""Atomic file writes: write to a temporary sibling, fsync, then rename over the target."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _default_mode() -> int:
    return 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; on success it replaces ``target`` atomically.

    >>> with atomic_path("out.bin") as tmp:      # doctest: +SKIP
    ...     tmp.write_bytes(b"...")
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        try:
            yield tmp
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.chmod(tmp, _default_mode())  # mkstemp makes 0600; a result file should read like any other
            os.replace(tmp, target)
        except Exception as e:
            named = _naming_target(e, target, tmp)
            if named is e:
                raise
            raise named from e
    finally:
        if tmp.exists():
            tmp.unlink()


_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")  # how Rust writers (safetensors) report an OS error
_UNCHANGED = "(writing failed; the previous version of the file, if any, is unchanged)"


def _naming_target(e: BaseException, target: Path, tmp: Path) -> BaseException:
    """An OS-level write failure (ENOSPC, EIO, …) as an ``OSError`` of the same errno that names ``target``
    instead of the random temporary file: ``[Errno 28] No space left on device (writing failed; …): 'out/x.json'``.
    Anything else is returned unchanged."""
    if isinstance(e, OSError):
        if e.errno is None or e.filename not in (None, str(tmp), tmp):
            return e
        return type(e)(e.errno, f"{e.strerror} {_UNCHANGED}", str(target))
    m = _RUST_OS_ERROR.search(str(e))
    if m is None:
        return e
    errno_ = int(m.group(1))
    return OSError(errno_, f"{os.strerror(errno_)} {_UNCHANGED}", str(target))


def _json_default(o: Any) -> Any:
    """Typed results (anything with ``to_dict``) as their dict; anything else as its ``str``."""
    to_dict = getattr(o, "to_dict", None)
    return to_dict() if callable(to_dict) else str(o)


def write_json_atomic(target: str | Path, obj: Any) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default))


def write_text_atomic(target: str | Path, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text)


@contextlib.contextmanager
def atomic_dir(target: str | Path, marker: str = "cotscope.json", meta: Any = None) -> Iterator[Path]:
    """Yield a temporary directory next to ``target``; on success it replaces ``target``.

    ``meta`` (JSON-serialisable) is written last as ``marker``, the file whose presence marks a complete
    folder. If another process completed ``target`` meanwhile, its folder is kept and ours discarded.

    >>> with atomic_dir(cache / "model", meta={"name": "x"}) as tmp:   # doctest: +SKIP
    ...     model.save_pretrained(tmp)
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        yield tmp
        if meta is not None:
            (tmp / marker).write_text(json.dumps(meta, indent=2))
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
        if not (target / marker).is_file():
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
