"""First-read verification: a process checks each unit file against its sha256 before it first uses it.

A file verified once in this process is not hashed again unless it changed on disk (its size, mtime or
inode differ). Trusted stores can skip the check with a parameter (``trust=True``) or with the
environment variable ``COTSCOPE_TRUST_STORE=1``; sizes are still checked (one ``stat``).
:data:`STATS` counts the files and bytes hashed and the seconds spent, for benchmarks.

>>> trusted_by_env({"COTSCOPE_TRUST_STORE": "1"}), trusted_by_env({})
(True, False)
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from cotscope.analyses.io.tensorfile import sha256_file

ENV_TRUST = "COTSCOPE_TRUST_STORE"
STATS = {"files": 0, "bytes": 0, "seconds": 0.0}
_VERIFIED: set[tuple] = set()
_GUARD = threading.Lock()


def trusted_by_env(environ: Mapping[str, str] | None = None) -> bool:
    """``True`` when ``COTSCOPE_TRUST_STORE`` is set to 1/true/yes."""
    env = os.environ if environ is None else environ
    return env.get(ENV_TRUST, "").strip().lower() in ("1", "true", "yes", "on")


def check_file(path: str | Path, size: int, sha256: str | None) -> str | None:
    """Problem with ``path`` (missing, wrong size, wrong sha256) or ``None``; ``sha256=None`` checks the size only.

    A file whose sha256 matched before in this process (and did not change since) is not hashed again.
    """
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return f"{path} is missing"
    if st.st_size != size:
        return f"{path} has {st.st_size} bytes but {size} were recorded (truncated or rewritten)"
    if sha256 is None:
        return None
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, sha256)
    with _GUARD:
        if key in _VERIFIED:
            return None
    t0 = time.perf_counter()
    got = sha256_file(path)
    with _GUARD:
        STATS["files"] += 1
        STATS["bytes"] += st.st_size
        STATS["seconds"] += time.perf_counter() - t0
    if got != sha256:
        return f"{path} does not match its recorded sha256 (its bytes changed after it was written)"
    with _GUARD:
        _VERIFIED.add(key)
    return None


def forget(path: str | Path | None = None) -> None:
    """Forget verifications (all, or those of one file), so the next read hashes again (tests, benchmarks)."""
    with _GUARD:
        if path is None:
            _VERIFIED.clear()
            return
        st = os.stat(path)
        for k in [k for k in _VERIFIED if k[0] == st.st_dev and k[1] == st.st_ino]:
            _VERIFIED.discard(k)


def reset_stats() -> None:
    with _GUARD:
        STATS.update(files=0, bytes=0, seconds=0.0)
