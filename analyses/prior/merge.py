"""Model-merging baselines between θ_reason and θ_VL (DRIFT's Table 1), tensor by tensor like Δ.

All merges act on the matched language-model tensors (:func:`analyses.prior.matching.match_checkpoints`, the
same module set as Δ) and leave everything else of the VLM as it is. With an optional common ancestor
``θ_base`` (e.g. the base LLM both were fine-tuned from) the task vectors are ``τ_VL = θ_VL − θ_base`` and
``τ_R = θ_reason − θ_base``; without one, ``θ_base = θ_VL`` so ``τ_VL = 0`` and ``τ_R = Δ``.

* ``task_arithmetic`` — ``θ = θ_base + λ(τ_VL + τ_R)``; without a base this is ``θ_VL + λΔ`` (interpolation,
  λ = 0.5 is the midpoint, λ = 1 is θ_reason);
* ``ties`` (Yadav et al., 2023) — trim each τ to its top-``density`` share by magnitude, elect the sign of the
  summed trimmed vectors per coordinate, average the entries that agree with it, ``θ = θ_base + λ·τ_merged``;
* ``dare`` (Yu et al., 2024) — drop each τ entry with probability ``drop``, rescale the rest by ``1/(1−drop)``
  (seeded per tensor), then task arithmetic;
* ``layer_swap`` — the tensors of the blocks in ``swap_layers`` come from θ_reason, all others from θ_VL.

The released DRIFT code contains no merging code; these are the standard definitions from the cited papers,
written here. :func:`merge_tensor` merges one tensor (numpy); :func:`merge_checkpoints` streams two (or three)
checkpoints into a safetensors file of ``merged.<canonical>`` tensors that :mod:`probes.merge` loads into a model.

>>> vl, r = np.zeros(4, np.float32), np.array([1.0, -2.0, 3.0, -4.0], np.float32)
>>> merge_tensor("task_arithmetic", vl, r, lam=0.5).tolist()
[0.5, -1.0, 1.5, -2.0]
>>> merge_tensor("ties", vl, r, density=0.5, lam=1.0).tolist()
[0.0, 0.0, 3.0, -4.0]
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cotscope.analyses.prior.errors import PriorError
from cotscope.analyses.prior.matching import match_checkpoints
from cotscope.analyses.prior.reader import Checkpoint

METHODS = ("task_arithmetic", "ties", "dare", "layer_swap")
MERGE_FORMAT = "cotscope.merge"
DEFAULTS: dict[str, dict[str, Any]] = {
    "task_arithmetic": {"lam": 0.5},
    "ties": {"lam": 1.0, "density": 0.2},
    "dare": {"lam": 0.5, "drop": 0.9},
    "layer_swap": {"swap_layers": None},
}


class MergeError(PriorError):
    """A bad merge request (method, parameters, checkpoints)."""


def _trim(tau: np.ndarray, density: float) -> np.ndarray:
    """Keep the top ``density`` share of entries by magnitude (ties broken by position), zero the rest."""
    k = int(round(density * tau.size))
    if k >= tau.size:
        return tau.copy()
    out = np.zeros_like(tau)
    if k <= 0:
        return out
    flat = np.abs(tau).ravel()
    idx = np.argpartition(flat, tau.size - k)[tau.size - k :]
    out.ravel()[idx] = tau.ravel()[idx]
    return out


def _dare(tau: np.ndarray, drop: float, rng: np.random.Generator) -> np.ndarray:
    keep = rng.random(tau.shape) >= drop
    return np.where(keep, tau / (1.0 - drop), 0.0).astype(tau.dtype)


def check_params(method: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The method's parameters with defaults filled in, validated (:class:`MergeError` otherwise).

    >>> check_params("dare", {})
    {'lam': 0.5, 'drop': 0.9}
    """
    if method not in METHODS:
        raise MergeError(f"unknown merge method {method!r}; choose from {METHODS}")
    unknown = [k for k in params if k not in DEFAULTS[method]]
    if unknown:
        raise MergeError(f"{method} takes {sorted(DEFAULTS[method])}, not {unknown}")
    p = {**DEFAULTS[method], **{k: v for k, v in params.items() if v is not None}}
    if "lam" in p and not np.isfinite(float(p["lam"])):
        raise MergeError(f"lam must be finite, got {p['lam']}")
    if "density" in p and not 0.0 < float(p["density"]) <= 1.0:
        raise MergeError(f"ties density must be in (0, 1], got {p['density']}")
    if "drop" in p and not 0.0 <= float(p["drop"]) < 1.0:
        raise MergeError(f"dare drop must be in [0, 1), got {p['drop']}")
    if method == "layer_swap" and not p.get("swap_layers"):
        raise MergeError("layer_swap needs swap_layers (the blocks to take from θ_reason), e.g. [16, 17, …, 29]")
    return p


def merge_tensor(
    method: str,
    vl: np.ndarray,
    reason: np.ndarray,
    base: np.ndarray | None = None,
    *,
    layer: int | None = None,
    name: str = "",
    seed: int = 0,
    **params: Any,
) -> np.ndarray:
    """Merge one tensor (float32 arrays of equal shape); see the module docstring for the rules."""
    p = check_params(method, params)
    vl = np.asarray(vl, dtype=np.float32)
    reason = np.asarray(reason, dtype=np.float32)
    if vl.shape != reason.shape or (base is not None and np.shape(base) != vl.shape):
        raise MergeError(
            f"{name or 'tensor'}: shapes differ (VL {vl.shape}, reason {reason.shape}"
            + (f", base {np.shape(base)})" if base is not None else ")")
        )
    if method == "layer_swap":
        return reason.copy() if layer is not None and int(layer) in {int(x) for x in p["swap_layers"]} else vl.copy()
    b = vl if base is None else np.asarray(base, dtype=np.float32)
    taus = [reason - b] if base is None else [vl - b, reason - b]
    lam = float(p["lam"])
    if method == "task_arithmetic":
        return b + lam * sum(taus)
    if method == "dare":
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(name.encode())])
        return b + lam * sum(_dare(t, float(p["drop"]), rng) for t in taus)
    trimmed = [_trim(t, float(p["density"])) for t in taus]
    stack = np.stack(trimmed)
    sign = np.sign(stack.sum(0))
    agree = (np.sign(stack) == sign) & (stack != 0)
    n = agree.sum(0)
    merged = np.where(n > 0, (stack * agree).sum(0) / np.maximum(n, 1), 0.0).astype(np.float32)
    return b + lam * merged


@dataclasses.dataclass
class MergeResult:
    """What :func:`merge_checkpoints` wrote: the file, the method and parameters, per-tensor change norms."""

    path: str | None
    method: str
    params: dict[str, Any]
    n_tensors: int
    change_norm: float
    per_layer: dict[int, float]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def iter_merged(
    reason_dir: str | Path,
    vl_dir: str | Path,
    method: str,
    *,
    base_dir: str | Path | None = None,
    modules: str | Sequence[str] | None = "default",
    seed: int = 0,
    **params: Any,
) -> Iterable[tuple[Any, np.ndarray]]:
    """``(pair, merged tensor)`` for every matched tensor, one at a time (the streaming core)."""
    check_params(method, params)
    reason, vl = Checkpoint(reason_dir), Checkpoint(vl_dir)
    pairs, _ = match_checkpoints(reason, vl, modules)
    base_keys: dict[str, str] = {}
    base = None
    if base_dir is not None:
        base = Checkpoint(base_dir)
        bpairs, _ = match_checkpoints(base, vl, modules, allow_unmatched=True)
        base_keys = {bp.canonical: bp.reason_key for bp in bpairs}
        missing = [p.canonical for p in pairs if p.canonical not in base_keys]
        if missing:
            raise MergeError(f"the base checkpoint {base_dir} lacks {len(missing)} matched tensors, e.g. {missing[:3]}")
    for p in pairs:
        b = base.read(base_keys[p.canonical]) if base is not None else None
        yield (
            p,
            merge_tensor(
                method,
                vl.read(p.vl_key),
                reason.read(p.reason_key),
                b,
                layer=p.layer,
                name=p.canonical,
                seed=seed,
                **params,
            ),
        )


def merge_checkpoints(
    reason_dir: str | Path,
    vl_dir: str | Path,
    out_path: str | Path,
    method: str,
    *,
    base_dir: str | Path | None = None,
    modules: str | Sequence[str] | None = "default",
    seed: int = 0,
    out_dtype: str = "float32",
    progress: bool = True,
    **params: Any,
) -> MergeResult:
    """Stream the merge of two checkpoints (three with ``base_dir``) into ``out_path`` (``merged.<canonical>``).

    Only one tensor pair is in memory at a time; the file holds the merged language-model tensors only (load them
    with :func:`probes.merge.load_merged`). The header records the method, parameters and both checkpoints.
    """
    from cotscope.analyses.atomic import atomic_path
    from cotscope.analyses.prior.artifact import _side_provenance, _StreamingWriter, check_out_dtype

    check_out_dtype(out_dtype)
    p_all = check_params(method, params)
    reason, vl = Checkpoint(reason_dir), Checkpoint(vl_dir)
    pairs, report = match_checkpoints(reason, vl, modules)
    prov = {
        "format": MERGE_FORMAT,
        "method": method,
        "params": p_all,
        "seed": seed,
        "modules": report.modules,
        "reason": _side_provenance(reason),
        "vl": _side_provenance(vl),
        "base": _side_provenance(Checkpoint(base_dir)) if base_dir is not None else None,
        "n_matched": report.n_matched,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    md = {"format": MERGE_FORMAT, "cotscope": json.dumps(prov, sort_keys=True, default=str)}
    it = iter_merged(reason_dir, vl_dir, method, base_dir=base_dir, modules=modules, seed=seed, **params)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, total=len(pairs), desc=f"merge {method}", unit="tensor")
    per_layer: dict[int, float] = {}
    total = 0.0
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        with open(tmp, "wb") as fh:
            w = _StreamingWriter(fh, [("merged." + p.canonical, p.shape) for p in pairs], out_dtype, md)
            for p, t in it:
                ch = float(np.sum((t - vl.read(p.vl_key)) ** 2, dtype=np.float64))
                total += ch
                if p.layer is not None:
                    per_layer[int(p.layer)] = per_layer.get(int(p.layer), 0.0) + ch
                w.write("merged." + p.canonical, t)
            w.close()
    return MergeResult(
        str(out_path), method, p_all, len(pairs), total**0.5, {k: v**0.5 for k, v in sorted(per_layer.items())}
    )


def read_merged_meta(path: str | Path) -> dict[str, Any]:
    """The provenance stored in a merged-weights file (raises :class:`MergeError` for other files)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as fh:
        md = fh.metadata() or {}
    if md.get("format") != MERGE_FORMAT:
        raise MergeError(
            f"{path} is not a cotscope merged-weights file (format {md.get('format')!r}); make one with "
            "merge_checkpoints or `cotscope eval --merge METHOD --reason DIR`"
        )
    return json.loads(md["cotscope"])
