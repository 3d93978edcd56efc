"""Put merged weights (DRIFT's merging baselines) into a loaded model, and take them out again.

:func:`merged_weights` is a context manager: inside it the model's matched language-model tensors hold the merge of
θ_VL (the model's own weights) with θ_reason (a checkpoint folder), computed tensor by tensor with
:func:`analyses.prior.merge.merge_tensor`, or read from a file written by
:func:`analyses.prior.merge.merge_checkpoints`. On exit the original tensors are restored exactly.

>>> vlm = load_model("embedded:smolvlm")                                                          # doctest: +SKIP
>>> with merged_weights(vlm, method="ties", reason_dir=smollm2_dir(), vl_dir=reference_vlm_dir()):   # doctest: +SKIP
...     out = generate_steered(vlm, prompts, [None] * len(prompts), images=images)                # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cotscope.analyses.prior.matching import canonical_name
from cotscope.analyses.prior.merge import MergeError, check_params, merge_tensor, read_merged_meta


def _param_by_canonical(model: torch.nn.Module) -> dict[str, str]:
    out: dict[str, str] = {}
    for n, _ in model.named_parameters():
        c = canonical_name(n)  # language-model tensors only (vision towers give None)
        if c is not None:
            out.setdefault(c[0], n)
    return out


def _merged_tensors(
    model: torch.nn.Module,
    *,
    path: str | Path | None,
    method: str | None,
    reason_dir: str | Path | None,
    vl_dir: str | Path | None,
    base_dir: str | Path | None,
    modules: str | Sequence[str] | None,
    seed: int,
    params: dict[str, Any],
) -> Iterator[tuple[str, np.ndarray]]:
    """``(canonical name, merged array)`` one tensor at a time."""
    if path is not None:
        from safetensors import safe_open

        read_merged_meta(path)
        with safe_open(str(path), framework="numpy") as fh:
            for k in fh.keys():
                if k.startswith("merged."):
                    yield k[len("merged.") :], fh.get_tensor(k)
        return
    if method is None or reason_dir is None or vl_dir is None:
        raise MergeError(
            "pass path= (a merged-weights file) or method=, reason_dir= and vl_dir= (the folders of "
            "θ_reason and of the VLM the model was loaded from)"
        )
    check_params(method, params)
    from cotscope.analyses.prior.matching import match_checkpoints
    from cotscope.analyses.prior.reader import Checkpoint

    reason = Checkpoint(reason_dir)
    pairs, _ = match_checkpoints(reason, Checkpoint(vl_dir), modules)
    base = Checkpoint(base_dir) if base_dir is not None else None
    base_keys = {}
    if base is not None:
        bpairs, _ = match_checkpoints(base, Checkpoint(vl_dir), modules, allow_unmatched=True)
        base_keys = {bp.canonical: bp.reason_key for bp in bpairs}
    params_by_c = _param_by_canonical(model)
    named = dict(model.named_parameters())
    for p in pairs:
        if p.canonical not in params_by_c:
            raise MergeError(
                f"the model has no parameter for {p.canonical} (matched between the checkpoints); was it "
                f"loaded from {vl_dir}?"
            )
        vl_now = named[params_by_c[p.canonical]].detach().float().cpu().numpy()
        b = base.read(base_keys[p.canonical]) if base is not None else None
        yield (
            p.canonical,
            merge_tensor(
                method, vl_now, reason.read(p.reason_key), b, layer=p.layer, name=p.canonical, seed=seed, **params
            ),
        )


@contextlib.contextmanager
def merged_weights(
    lm: Any,
    *,
    path: str | Path | None = None,
    method: str | None = None,
    reason_dir: str | Path | None = None,
    vl_dir: str | Path | None = None,
    base_dir: str | Path | None = None,
    modules: str | Sequence[str] | None = "default",
    seed: int = 0,
    **params: Any,
) -> Iterator[dict[str, Any]]:
    """Merge inside the ``with`` block (a file via ``path``, or ``method`` + checkpoints); restore on exit.

    Yields a record: method, parameters, number of tensors changed and the norm of the change.
    """
    model = getattr(lm, "hf", lm)
    named = dict(model.named_parameters())
    by_c = _param_by_canonical(model)
    saved: dict[str, torch.Tensor] = {}
    change2 = 0.0
    try:
        with torch.no_grad():
            for canon, arr in _merged_tensors(
                model,
                path=path,
                method=method,
                reason_dir=reason_dir,
                vl_dir=vl_dir,
                base_dir=base_dir,
                modules=modules,
                seed=seed,
                params=params,
            ):
                if canon not in by_c:
                    raise MergeError(f"merged tensor {canon} names no parameter of this model")
                prm = named[by_c[canon]]
                t = torch.as_tensor(arr)
                if tuple(t.shape) != tuple(prm.shape):
                    raise MergeError(f"merged {canon} has shape {tuple(t.shape)}, the parameter {tuple(prm.shape)}")
                saved[by_c[canon]] = prm.detach().clone()
                new = t.to(device=prm.device, dtype=prm.dtype)
                change2 += float(((new.float() - prm.float()) ** 2).sum())
                prm.copy_(new)
        meta = (
            read_merged_meta(path) if path is not None else {"method": method, "params": check_params(method, params)}
        )
        yield {
            "method": meta["method"],
            "params": meta["params"],
            "n_tensors": len(saved),
            "change_norm": change2**0.5,
            "source": str(path) if path is not None else str(reason_dir),
        }
    finally:
        with torch.no_grad():
            for n, t in saved.items():
                named[n].copy_(t)
