"""The one resumable-writer protocol behind activation stores, attention runs and sweep/eval tables.

Every long-running output is three things:

* a **header** (JSON, written atomically once at creation and again when finished): format name and
  version, the configuration and its hash;
* an **append-only unit log**: one line per finished unit (a shard, a trace, a batch of table rows),
  appended with a single ``write`` (a killed process leaves either the whole line or a torn tail, which
  :meth:`UnitLog.repair` cuts off on resume) and, unless the unit's payload is already fsynced, ``fsync``;
  appending unit ``k`` costs O(1), never a rewrite of the header;
* a **writer lock** (:class:`analyses.io.lock.WriterLock`): one writing process at a time.

Reopening with the same configuration resumes (finished units are listed from the log and never
recomputed); a different configuration is refused with the differing keys named; a header of another
format version is refused with the command that migrates it. Payload files of units are written with
:func:`write_unit_file` (temporary file, fsync, rename) and checked with :func:`check_unit_file`.

>>> out = open_output(Path("runs/x"), "manifest.json", "index.jsonl", "store.lock", fresh={...},   # doctest: +SKIP
...                   fmt="cotscope.store", version=2, error=StoreError, what="store runs/x")
>>> out.log.append(json.dumps(entry) + "\\n")                                                        # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from cotscope.analyses.io.atomic import atomic_path, write_json_atomic, write_text_atomic
from cotscope.analyses.io.lock import LockedError, WriterLock


def config_hash(config: Any) -> str:
    """Stable short hash of a JSON-able configuration (keys sorted)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def diff_keys(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted names of the keys whose values differ between two (nested) configurations.

    >>> diff_keys({"a": 1, "m": {"x": 1, "y": 2}}, {"a": 1, "m": {"x": 3, "y": 2}, "z": 0})
    ['m.x', 'z']
    """
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k, "<missing>"), b.get(k, "<missing>")
        if isinstance(va, Mapping) and isinstance(vb, Mapping):
            out += diff_keys(va, vb, f"{prefix}{k}.")
        elif json.dumps(va, sort_keys=True, default=str) != json.dumps(vb, sort_keys=True, default=str):
            out.append(prefix + k)
    return out


class UnitLog:
    """An append-only text log of finished units, one line each."""

    def __init__(self, path: Path, fsync: bool = True, first: str = "") -> None:
        self.path = Path(path)
        self.fsync = fsync
        self.first = first  # the log's first line (e.g. a CSV header), written at creation
        self.bytes_written = 0

    def create(self) -> None:
        write_text_atomic(self.path, self.first)

    def repair(self) -> int:
        """Cut a torn last line (an interrupted append); returns the number of bytes cut."""
        if not self.path.is_file():
            self.create()
            return 0
        size = self.path.stat().st_size
        if size == 0:
            return 0
        with open(self.path, "rb") as fh:
            fh.seek(max(0, size - (1 << 16)))
            tail = fh.read()
        if tail.endswith(b"\n"):
            return 0
        nl = tail.rfind(b"\n")
        if nl < 0 and size > len(tail):  # a single line longer than the window: read it all
            data = self.path.read_bytes()
            cut = data.rfind(b"\n") + 1
        else:
            cut = size - len(tail) + nl + 1
        with open(self.path, "r+b") as fh:
            fh.truncate(cut)
            fh.flush()
            os.fsync(fh.fileno())
        return size - cut

    def append(self, text: str, fsync: bool | None = None) -> int:
        """Append ``text`` (one or more complete lines) with one ``write``; fsync unless told otherwise."""
        data = text.encode()
        if not data:
            return 0
        if not data.endswith(b"\n"):
            raise ValueError("a unit log entry must end with a newline")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            if self.fsync if fsync is None else fsync:
                os.fsync(fd)
        except OSError as e:  # ENOSPC, EIO …: name the file; complete lines before stay, a torn tail is cut on resume
            if e.errno is None or e.filename is not None:
                raise
            raise type(e)(
                e.errno,
                f"{e.strerror} (appending failed; the lines written before are intact and a torn "
                "last line is cut when the run is resumed)",
                str(self.path),
            ) from e
        finally:
            os.close(fd)
        self.bytes_written += len(data)
        return len(data)

    def sync(self) -> None:
        if self.path.is_file():
            fd = os.open(self.path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def lines(self) -> list[str]:
        """Complete lines (a torn tail without newline is ignored)."""
        if not self.path.is_file():
            return []
        text = self.path.read_text()
        if text and not text.endswith("\n"):
            text = text[: text.rfind("\n") + 1]
        return text.splitlines()

    def records(self) -> Iterator[dict[str, Any]]:
        """Lines parsed as JSON (blank lines skipped)."""
        for line in self.lines():
            if line.strip():
                yield json.loads(line)


@dataclasses.dataclass
class Output:
    """An opened (created or resumed) resumable output."""

    root: Path
    header_path: Path
    header: dict[str, Any]
    log: UnitLog
    lock: WriterLock
    created: bool

    def write_header(self) -> None:
        write_json_atomic(self.header_path, self.header)

    def close(self) -> None:
        self.lock.release()


def read_header(path: Path, error: type[Exception], what: str, fix: str) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise error(f"{path} is corrupt ({e}). {fix}") from None


def check_version(
    header: Mapping[str, Any],
    *,
    fmt: str,
    version: int,
    error: type[Exception],
    what: str,
    fix: str,
    migrate: str | None = None,
) -> None:
    """Refuse a header of another format or version (older: name ``migrate``; newer: upgrade cotscope)."""
    if header.get("format") != fmt:
        raise error(f"{what} is not a {fmt} output (format {header.get('format')!r}). {fix}")
    v = header.get("format_version")
    if v == version:
        return
    if isinstance(v, int) and v > version:
        raise error(f"{what} has format version {v}, newer than this cotscope reads ({version}); upgrade cotscope.")
    how = f"run `{migrate}` to convert it" if migrate else fix
    raise error(f"{what} has format version {v!r}, but this cotscope reads version {version}; {how}.")


def open_output(
    root: Path,
    header_name: str,
    log_name: str,
    lock_name: str,
    *,
    fresh: dict[str, Any],
    fmt: str,
    version: int,
    error: type[Exception],
    what: str,
    fix: str,
    overwrite: bool = False,
    config_of: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None,
    on_reset: Callable[[], None] | None = None,
    log_first_line: str = "",
    log_fsync: bool = True,
    migrate: str | None = None,
    lock_dir: Path | None = None,
    locked_error: type[Exception] | None = None,
) -> Output:
    """Create or resume an output: take the lock, check the header against ``fresh``, repair the log.

    ``fresh`` is the header a new output gets; it must hold ``config_hash``. An existing header with a
    different hash is refused, naming the keys ``config_of(header)`` and ``config_of(fresh)`` differ in.
    ``on_reset`` removes old unit payloads when starting over (``overwrite=True`` or a new output).
    ``locked_error`` (a subclass of :class:`LockedError`) is raised instead of ``LockedError`` when another
    process holds the lock.
    """
    root = Path(root)
    try:
        lock = WriterLock((lock_dir or root) / lock_name, what=what).acquire()
    except LockedError as e:
        if locked_error is None:
            raise
        raise locked_error(str(e), e.holder) from None
    try:
        header_path = root / header_name
        log = UnitLog(root / log_name, fsync=log_fsync, first=log_first_line)
        if header_path.exists() and not overwrite:
            old = read_header(header_path, error, what, fix)
            check_version(old, fmt=fmt, version=version, error=error, what=what, fix=fix, migrate=migrate)
            if old.get("config_hash") != fresh["config_hash"]:
                pick = config_of or (lambda h: h)
                diff = diff_keys(pick(old), pick(fresh))
                raise error(
                    f"{what} was written by a different configuration (config hash {old.get('config_hash')} "
                    f"!= {fresh['config_hash']}; differs in: {', '.join(diff) or 'the hashed inputs'}). {fix}"
                )
            if not log.path.exists():  # killed between writing the header and creating the log
                log.create()
            log.repair()
            return Output(root, header_path, old, log, lock, created=False)
        root.mkdir(parents=True, exist_ok=True)
        if on_reset is not None:
            on_reset()
        # the header first: a run killed in between leaves a header without a log, which resuming completes
        # (a log without its header, e.g. a sweep CSV without its sidecar, would be refused as foreign)
        out = Output(root, header_path, dict(fresh), log, lock, created=True)
        out.write_header()
        log.create()
        return out
    except BaseException:
        lock.release()
        raise


def write_unit_file(target: Path, write: Callable[[Path], tuple[int, str] | None]) -> tuple[int, str]:
    """Write a unit's payload atomically (temporary sibling, fsync, rename); returns ``(bytes, sha256)``.

    ``write(tmp)`` writes the file and may return ``(bytes, sha256)`` it computed while writing; otherwise
    the file is hashed after writing.
    """
    from cotscope.analyses.io.tensorfile import sha256_file

    with atomic_path(target) as tmp:
        got = write(tmp)
        if got is None:
            got = (tmp.stat().st_size, sha256_file(tmp))
    return got


def check_unit_file(root: Path, entry: Mapping[str, Any], *, full: bool = False) -> str | None:
    """``None`` if the unit's file exists with the recorded size (and sha256 when ``full``), else the problem."""
    from cotscope.analyses.io.tensorfile import sha256_file

    f = root / entry["file"]
    if not f.is_file():
        return f"{f} is missing"
    size = f.stat().st_size
    if size != entry["bytes"]:
        return f"{f} has {size} bytes, {entry['bytes']} were recorded (truncated or rewritten)"
    if full and sha256_file(f) != entry["sha256"]:
        return f"{f} does not match its recorded sha256 (bytes changed after it was written)"
    return None


def remove_temporaries(root: Path, pattern: str) -> int:
    """Delete leftovers of interrupted atomic writes (``.<name>.*.tmp``) matching ``pattern``."""
    n = 0
    for f in root.glob(pattern):
        try:
            f.unlink()
            n += 1
        except FileNotFoundError:
            pass
    return n
