"""Remote execution through nnsight (NDIF), and its local simulation.

``remote`` is one of ``False`` (run here), ``True`` (ship each request to the NDIF server configured in nnsight)
or ``"local"`` (nnsight's simulation of the remote path: the request is serialised exactly as for NDIF, then
deserialised with the user's own modules hidden, and run here). cotscope's simulation is stricter than nnsight's:
nnsight hides modules that are not pip-installed, but cotscope *is* installed (editable) here while an NDIF
server does not have it, so :class:`StrictLocalBackend` also blocks every import of ``cotscope`` while the
request is deserialised. Code that runs inside a trace therefore only uses ``torch`` and the functions of
:mod:`probes.traced`, which are registered to travel by value (their source ships with the request).

Every request's payload size is recorded in :data:`PAYLOADS` (cleared by :func:`payload_log`).

>>> check_remote("local"), check_remote(False)
('local', False)
"""

from __future__ import annotations

import contextlib
import importlib.abc
import logging
import sys
from collections.abc import Iterator
from typing import Any

from cotscope.errors import CotscopeError

log = logging.getLogger(__name__)

REMOTE_VALUES = (False, True, "local")
# Roots of modules an NDIF server does not have: hidden (and their import refused) while a request deserialises.
PRIVATE_ROOTS = ("cotscope", "probes", "analyses", "figures")
PAYLOADS: list[dict[str, Any]] = []


class RemoteExecutionError(CotscopeError):
    """A request that cannot run remotely (or a bad ``remote=`` value); the message says why and what to do."""


def check_remote(remote: Any) -> bool | str:
    """Validate a ``remote=`` value: ``False``, ``True`` or ``"local"`` (``None`` counts as ``False``)."""
    if remote is None or remote is False:
        return False
    if remote is True or remote == "local":
        return remote
    raise RemoteExecutionError(
        f"remote={remote!r}; use False (run here), True (NDIF, through nnsight) or 'local' "
        "(nnsight's local simulation of the remote path)"
    )


def resolve_remote(loaded: Any, remote: Any) -> bool | str:
    """The mode for one call: ``remote`` if given, else the model's default; refuses running a weightless model here."""
    mode = check_remote(loaded.remote if remote is None else remote)
    if not mode and getattr(loaded, "is_remote", False):
        raise RemoteExecutionError(
            f"{loaded.model_id} was loaded with remote={loaded.remote!r}: it has no local weights, so it cannot run "
            "here with remote=False. Pass remote=True (NDIF) or remote='local', or load it with load_model(spec)."
        )
    return mode


def register_traced() -> None:
    """Make :mod:`probes.traced` travel by value (its functions' source ships with each request)."""
    import cloudpickle

    from cotscope.probes import traced

    cloudpickle.register_pickle_by_value(traced)


class _RefusePrivate(importlib.abc.MetaPathFinder):
    """A meta-path finder that refuses to import cotscope's own packages (as on a server without them)."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name.split(".")[0] in PRIVATE_ROOTS:
            raise ModuleNotFoundError(
                f"No module named {name!r} (hidden: an NDIF server does not have cotscope; "
                "code inside a trace may only use torch and probes.traced)",
                name=name,
            )
        return None


@contextlib.contextmanager
def private_modules_hidden() -> Iterator[None]:
    """Hide cotscope's modules from ``sys.modules`` and refuse their import, for the duration."""
    saved = {n: m for n, m in sys.modules.items() if n.split(".")[0] in PRIVATE_ROOTS}
    for n in saved:
        del sys.modules[n]
    finder = _RefusePrivate()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
        sys.modules.update(saved)


def _record(kind: str, blob: bytes, compressed: bool) -> None:
    rec: dict[str, Any] = {"kind": kind, "bytes": len(blob), "compressed": compressed}
    if not compressed:
        try:  # what NDIF receives: nnsight compresses requests with zstd (level 6) by default (CONFIG.API.COMPRESS)
            import zstandard

            rec["bytes_zstd"] = len(zstandard.ZstdCompressor(level=6).compress(blob))
        except ImportError:
            pass
    PAYLOADS.append(rec)
    log.debug("%s request payload: %d bytes%s", kind, len(blob), " (compressed)" if compressed else "")


def _strict_local_backend(model: Any, kind: str) -> Any:
    from nnsight.intervention.backends.local import LocalSimulationBackend
    from nnsight.schema.request import RequestModel

    class StrictLocalBackend(LocalSimulationBackend):
        """nnsight's local simulation, with cotscope hidden too while the request deserialises; records sizes."""

        def __call__(self, tracer: Any) -> None:
            _record(kind, RequestModel.serialize(tracer, compress=False), False)
            super().__call__(tracer)

        def _hide_local_modules(self) -> dict:
            hidden = super()._hide_local_modules()
            stack = contextlib.ExitStack()
            stack.enter_context(private_modules_hidden())
            hidden["cotscope_stack"] = stack
            return hidden

        def _restore(self, hidden: dict) -> None:
            hidden.pop("cotscope_stack").close()
            super()._restore(hidden)

    return StrictLocalBackend(model)


def _ndif_backend(model: Any, kind: str) -> Any:
    from nnsight.intervention.backends.remote import RemoteBackend

    class RecordingRemoteBackend(RemoteBackend):
        """nnsight's NDIF backend, recording each request's payload size."""

        def _serialize(self, tracer: Any) -> bytes:
            blob = super()._serialize(tracer)
            _record(kind, blob, bool(self.compress))
            return blob

    return RecordingRemoteBackend(model.to_model_key(), env=model._remoteable_get_env())


def backend_for(model: Any, remote: bool | str, kind: str = "trace") -> Any:
    """The nnsight backend for ``remote`` (``None`` = run here); pass it as ``backend=`` to ``trace``/``generate``/``session``."""
    remote = check_remote(remote)
    if not remote:
        return None
    register_traced()
    return _strict_local_backend(model, kind) if remote == "local" else _ndif_backend(model, kind)


@contextlib.contextmanager
def payload_log() -> Iterator[list[dict[str, Any]]]:
    """Collect the payload records of the requests sent inside the block.

    >>> with payload_log() as sent:                                    # doctest: +SKIP
    ...     collect_pairs(lm, pairs, "runs/x/store", remote="local")
    >>> [p["bytes"] for p in sent]                                     # doctest: +SKIP
    """
    start = len(PAYLOADS)
    out: list[dict[str, Any]] = []
    try:
        yield out
    finally:
        out.extend(PAYLOADS[start:])
        del PAYLOADS[start:]
