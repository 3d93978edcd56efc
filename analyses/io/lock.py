"""Advisory writer lock (``fcntl.flock``): one writing process per store, table or run; readers never lock.

The lock file (e.g. ``store.lock``) holds who took it: pid, host, start time and command. A second
process that tries to write gets :class:`LockedError` naming that holder. A writer that died (even by
``kill -9``) releases its lock with its last file descriptor: the kernel drops ``flock`` locks of dead
processes, so the next writer takes the lock, logs the dead holder it replaces, and resumes. Within one
process the lock is re-entrant (a second writer object on the same path shares it), so a process can
reopen its own output. The lock file is removed on release; the inode is re-checked after locking, so a
file removed by a releasing writer is never locked by mistake.

Limits: ``flock`` is advisory (a program that ignores it is not stopped) and, on some network file
systems, local to one host; the holder's host is recorded so the error says where the writer runs.

>>> with WriterLock("runs/x/store/store.lock", what="activation store runs/x/store"):   # doctest: +SKIP
...     ...
"""

from __future__ import annotations

import datetime as _dt
import errno
import fcntl
import json
import logging
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from cotscope.errors import CotscopeError

log = logging.getLogger(__name__)

# path -> [fd, refcount, pid]; re-entrant within a process, never shared with a forked child
_HELD: dict[str, list[int]] = {}
_GUARD = threading.Lock()


class LockedError(CotscopeError):
    """Another process holds the writer lock."""

    def __init__(self, message: str, holder: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.holder = holder or {}


def _holder_info() -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv)[:300],
    }


def read_holder(path: str | Path) -> dict[str, Any]:
    """The holder recorded in a lock file (``{}`` if none can be read)."""
    for _ in range(5):
        try:
            text = Path(path).read_text()
            if text.strip():
                return json.loads(text)
        except (OSError, json.JSONDecodeError):
            pass
        time.sleep(0.02)  # the holder may be between truncating and writing its record
    return {}


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def describe_holder(holder: dict[str, Any]) -> str:
    if not holder:
        return "an unknown process (its lock record is empty)"
    s = f"pid {holder.get('pid')} on host {holder.get('host')}, started {holder.get('started')}"
    if holder.get("command"):
        s += f", command `{holder['command']}`"
    return s


class WriterLock:
    """Exclusive, non-blocking, re-entrant (per process) advisory lock on ``path``."""

    def __init__(self, path: str | Path, what: str = "") -> None:
        self.path = Path(path)
        self.what = what or str(self.path.parent)
        self.key = str(self.path.resolve())
        self.held = False
        self.replaced: dict[str, Any] = {}

    def acquire(self) -> WriterLock:
        if self.held:
            return self
        with _GUARD:
            entry = _HELD.get(self.key)
            if entry is not None and entry[2] == os.getpid():
                entry[1] += 1
                self.held = True
                return self
            self.path.parent.mkdir(parents=True, exist_ok=True)
            for _ in range(50):
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as e:
                    os.close(fd)
                    if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                        raise
                    holder = read_holder(self.path)
                    alive = ""
                    if (
                        holder.get("host") == socket.gethostname()
                        and isinstance(holder.get("pid"), int)
                        and not pid_alive(holder["pid"])
                    ):
                        alive = (
                            " (that pid is no longer running here, so a child process it started still holds the lock)"
                        )
                    raise LockedError(
                        f"{self.what} is being written by another process: {describe_holder(holder)}{alive}. "
                        f"Two writers would corrupt it. Wait for that process to finish (or stop it), or write to "
                        f"another directory; readers are not blocked. Lock file: {self.path}",
                        holder,
                    ) from None
                try:
                    same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
                except FileNotFoundError:
                    same = False
                if not same:  # a releasing writer removed the file after we opened it: retry
                    os.close(fd)
                    continue
                old = read_holder(self.path) if os.fstat(fd).st_size else {}
                if old:
                    self.replaced = old
                    log.warning(
                        "taking over the writer lock of %s from %s, which ended without releasing it "
                        "(killed?); its finished work is kept and the rest resumes",
                        self.what,
                        describe_holder(old),
                    )
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps(_holder_info()).encode(), 0)
                _HELD[self.key] = [fd, 1, os.getpid()]
                self.held = True
                return self
        raise LockedError(f"could not take the writer lock {self.path} (it kept being replaced); retry")

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        with _GUARD:
            entry = _HELD.get(self.key)
            if entry is None or entry[2] != os.getpid():
                return
            entry[1] -= 1
            if entry[1] > 0:
                return
            del _HELD[self.key]
            fd = entry[0]
            try:
                os.unlink(self.path)  # still holding the lock: nobody else can be using this inode
            except FileNotFoundError:
                pass
            os.close(fd)

    def __enter__(self) -> WriterLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def __del__(self) -> None:
        try:
            self.release()
        except Exception:
            pass
