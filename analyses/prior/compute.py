"""Streaming ``Δ = θ_reason − θ_VL`` over matched tensor pairs: norms, cosines, spectra, the artifact.

One tensor pair is in memory at a time (large tensors in row blocks), so peak memory is bounded by
the largest pair; :func:`compute_prior` returns a :class:`PriorResult`.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cotscope.analyses import spectral
from cotscope.analyses.prior.artifact import (
    SIGN_CONVENTION,
    _StreamingWriter,
    build_provenance,
    check_out_dtype,
    open_prior_writer,
)
from cotscope.analyses.prior.matching import MatchReport, Pair, match_checkpoints
from cotscope.analyses.prior.reader import Checkpoint
from cotscope.analyses.prior.spectrum import (
    GramSpectrum,
    _null_mean_spectrum,
    hidden_axis,
    layer_verdicts,
    onesided_weights,
    spectrum_test,
)
from cotscope.analyses.results import ResultMixin, flatten

log = logging.getLogger(__name__)


@dataclasses.dataclass(repr=False)
class PriorResult(ResultMixin):
    """Everything :func:`compute_prior` measured (JSON-ready via :meth:`to_dict`).

    ``to_pandas()``: one row per decoder layer (Δ norm, cosine, spectral numbers).
    """

    report: MatchReport
    tensors: list[dict]
    layers: list[dict]
    modules: list[dict]
    spectrum: dict
    hidden_size: int
    artifact: str | None
    provenance: dict

    def to_dict(self) -> dict:
        return {
            "format": "cotscope.prior_analysis",
            "sign": SIGN_CONVENTION,
            "hidden_size": self.hidden_size,
            "artifact": self.artifact,
            "match": self.report.to_dict(),
            "tensors": self.tensors,
            "layers": self.layers,
            "modules": self.modules,
            "spectrum": self.spectrum,
            "provenance": self.provenance,
        }

    def _headline(self) -> dict[str, Any]:
        verdict = (self.spectrum.get("total") or {}).get("verdict") if self.spectrum else None
        return {
            "hidden_size": self.hidden_size,
            "n_matched": self.report.n_matched,
            "tensors": self.tensors,
            "layers": self.layers,
            "modules": self.modules,
            "spectral_verdict": verdict,
            "artifact": self.artifact,
        }

    def _rows(self) -> list[dict[str, Any]]:
        return [flatten(r) for r in self.layers]


_MODULE_ORDER = (
    "embed_tokens",
    "input_layernorm",
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "post_attention_layernorm",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
    "norm",
    "lm_head",
)


def _module_order(module: str) -> tuple[int, str]:
    return (_MODULE_ORDER.index(module) if module in _MODULE_ORDER else len(_MODULE_ORDER), module)


def _dot64(x: np.ndarray, y: np.ndarray) -> float:
    """``x·y`` accumulated in float64 without materialising float64 copies."""
    return float(np.einsum("i,i->", x.ravel(), y.ravel(), dtype=np.float64))


def _row_chunks(n_rows: int, row_bytes: int, chunk_bytes: int) -> Iterator[slice]:
    step = max(1, chunk_bytes // max(1, row_bytes))
    for a in range(0, max(n_rows, 1), step):
        yield slice(a, min(n_rows, a + step))


def _hidden_size(reason: Checkpoint, vl: Checkpoint, pairs: Sequence[Pair]) -> int:
    """From the configs; else the embedding width; else the most common tensor dimension."""
    d = reason.hidden_size() or vl.hidden_size()
    if d is None:
        emb = [p.shape[1] for p in pairs if p.module == "embed_tokens"]
        d = emb[0] if emb else collections.Counter(s for p in pairs for s in p.shape).most_common(1)[0][0]
    return d


def _stream_pair(
    reason: Checkpoint,
    vl: Checkpoint,
    p: Pair,
    axis: int | None,
    d: int,
    chunk_bytes: int,
    writer: _StreamingWriter | None,
) -> tuple[dict, GramSpectrum | None]:
    """Δ of one pair, read in row blocks (whole if the hidden axis is the first): its norms row, its Gram.

    The row keeps the raw sums (``_dd``, ``_rr``, ``_vv``, ``_rv``) for the per-layer totals.
    """
    tg = GramSpectrum(d) if axis is not None else None
    dd = rr = vv = rv = 0.0
    n_rows = p.shape[0] if p.shape else 1
    row_bytes = 4 * (int(np.prod(p.shape[1:])) if len(p.shape) > 1 else 1)
    blocks = (
        [None]
        if (axis == 0 and len(p.shape) == 2) or len(p.shape) <= 1
        else list(_row_chunks(n_rows, row_bytes, chunk_bytes))
    )
    for rows in blocks:
        a = reason.read(p.reason_key, rows)
        b = vl.read(p.vl_key, rows)
        delta = np.subtract(a, b)
        dd += _dot64(delta, delta)
        rr += _dot64(a, a)
        vv += _dot64(b, b)
        rv += _dot64(a, b)
        del a, b
        if tg is not None:
            tg.add(delta.T if (axis == 0 and delta.ndim == 2) else delta)
        if writer is not None:
            writer.write("delta." + p.canonical, delta)
        del delta
    row = {
        "canonical": p.canonical,
        "layer": p.layer,
        "module": p.module,
        "shape": list(p.shape),
        "delta_norm": dd**0.5,
        "reason_norm": rr**0.5,
        "vl_norm": vv**0.5,
        "rel_norm": dd**0.5 / vv**0.5 if vv > 0 else None,
        "cos": rv / (rr * vv) ** 0.5 if rr > 0 and vv > 0 else None,
        "_rr": rr,
        "_vv": vv,
        "_rv": rv,
        "_dd": dd,
    }
    return row, tg


def _spectrum_test_with_energy(gs: GramSpectrum, cutoff: int | float, n_perm: int, seed: int) -> dict:
    res = spectrum_test(gs, cutoff, n_perm, seed)
    res["energy"] = (gs.spectrum() * onesided_weights(gs.d)).tolist()
    return res


def _layer_rows(tensors: Sequence[dict], layer_spec: dict[Any, dict]) -> list[dict]:
    """Norms and cosine per decoder layer over its selected tensors, plus the layer's spectral statistics."""
    by_layer: dict[Any, list[dict]] = collections.defaultdict(list)
    for t in tensors:
        by_layer[t["layer"]].append(t)
    layers = []
    for layer in sorted(l for l in by_layer if l is not None):
        ts = by_layer[layer]
        dd, rr, vv, rv = (sum(t[k] for t in ts) for k in ("_dd", "_rr", "_vv", "_rv"))
        row = {
            "layer": layer,
            "n_tensors": len(ts),
            "delta_norm": dd**0.5,
            "rel_norm": (dd / vv) ** 0.5 if vv else None,
            "cos": rv / (rr * vv) ** 0.5 if rr > 0 and vv > 0 else None,
        }
        if layer in layer_spec:
            row.update({k: layer_spec[layer][k] for k in ("centroid", "p_high", "lowpass_fraction", "p_low")})
        layers.append(row)
    return layers


def _module_rows(tensors: Sequence[dict]) -> list[dict]:
    """Mean/std of ‖Δ‖ over layers per module type (DRIFT fig. 2), in block order."""
    by_mod: dict[str, list[float]] = collections.defaultdict(list)
    for t in tensors:
        by_mod[t["module"]].append(t["delta_norm"])
    return [
        {"module": m, "mean_delta_norm": float(np.mean(v)), "std_delta_norm": float(np.std(v)), "n": len(v)}
        for m, v in sorted(by_mod.items(), key=lambda kv: _module_order(kv[0]))
    ]


def compute_prior(
    reason_dir: str | Path,
    vl_dir: str | Path,
    modules: str | Sequence[str] | None = "default",
    *,
    out_path: str | Path | None = None,
    out_dtype: str = "float32",
    spectrum: bool = True,
    cutoff: int | float = 0.1,
    n_perm: int = 200,
    n_perm_layer: int = 100,
    seed: int = 0,
    chunk_mb: float = 16.0,
    allow_unmatched: bool = False,
    allow_shape_mismatch: bool = False,
    verbose: bool = True,
    progress: bool = True,
) -> PriorResult:
    """Stream ``Δ = θ_reason − θ_VL`` over the matched tensors and measure it.

    Per tensor: ``‖Δ‖``, ``‖θ_reason‖``, ``‖θ_VL‖``, cosine. Per layer: the same over the layer's
    selected tensors. Per module type: mean/std of ``‖Δ‖`` over layers (DRIFT fig. 2). With
    ``spectrum=True``: energy spectrum of Δ's vectors along the hidden dimension per layer, per
    module type and in total, with a permutation null (:func:`spectrum_test`; ``n_perm`` permutations
    for the total, ``n_perm_layer`` per layer, whose verdicts use Benjamini–Hochberg-adjusted
    p-values across layers). With ``out_path``:
    the prior artifact, written while streaming. Tensors are read one pair at a time, in row blocks
    of at most ``chunk_mb`` unless the hidden axis is the first (o_proj, down_proj: whole tensor).
    """
    check_out_dtype(out_dtype)
    reason, vl = Checkpoint(reason_dir), Checkpoint(vl_dir)
    pairs, report = match_checkpoints(
        reason, vl, modules, allow_unmatched=allow_unmatched, allow_shape_mismatch=allow_shape_mismatch
    )
    if verbose:
        log.info("%s", report)
    d = _hidden_size(reason, vl, pairs)
    provenance = build_provenance(reason, vl, pairs, report, out_dtype)
    chunk_bytes = int(chunk_mb * 2**20)
    tensors: list[dict] = []
    layer_gram: GramSpectrum | None = None
    total_gram = GramSpectrum(d) if spectrum else None
    module_spec: dict[str, np.ndarray] = {}
    layer_spec: dict[Any, dict] = {}
    cur_layer: Any = object()

    def flush_layer() -> None:
        if spectrum and layer_gram is not None and layer_gram.n_vectors:
            layer_spec[cur_layer] = _spectrum_test_with_energy(layer_gram, cutoff, n_perm_layer, seed)

    def run(writer: _StreamingWriter | None) -> None:
        nonlocal layer_gram, cur_layer
        it: Iterable[Pair] = pairs
        if progress:
            from tqdm.auto import tqdm

            it = tqdm(pairs, desc="Δ = reason − VL", unit="tensor")
        for p in it:
            if p.layer != cur_layer:
                flush_layer()
                cur_layer, layer_gram = p.layer, (GramSpectrum(d) if spectrum else None)
            axis = hidden_axis(p.module, p.shape, d) if spectrum else None
            row, tg = _stream_pair(reason, vl, p, axis, d, chunk_bytes, writer)
            tensors.append(row)
            if tg is not None:
                E = tg.spectrum() * onesided_weights(d)
                module_spec[p.module] = module_spec.get(p.module, 0) + E
                layer_gram.add_gram(tg)
                total_gram.add_gram(tg)
        flush_layer()

    artifact = None
    if out_path is not None:
        out_path = Path(out_path)
        with open_prior_writer(out_path, pairs, out_dtype, provenance) as writer:
            run(writer)
        artifact = str(out_path)
    else:
        run(None)

    layers = _layer_rows(tensors, layer_spec)
    layer_verdicts(layers, layer_spec)
    modules_rows = _module_rows(tensors)
    for t in tensors:
        for k in ("_dd", "_rr", "_vv", "_rv"):
            t.pop(k)
    spec_out: dict = {}
    if spectrum and total_gram is not None and total_gram.n_vectors:
        # the permutation null's mean spectrum is flat: E[E_k] is the same for every k ≠ 0
        spec_out = {
            "hidden_size": d,
            "n_bins": spectral.n_bins(d),
            "cutoff": cutoff,
            "total": _spectrum_test_with_energy(total_gram, cutoff, n_perm, seed),
            "null_flat_energy": _null_mean_spectrum(total_gram).tolist(),
            "per_layer": {str(k): v for k, v in layer_spec.items() if k is not None},
            "non_layer": layer_spec.get(None),
            "per_module": {m: E.tolist() for m, E in module_spec.items()},
        }
    return PriorResult(
        report,
        tensors,
        layers,
        modules_rows,
        spec_out,
        d,
        artifact,
        {k: v for k, v in provenance.items() if k != "tensors"},
    )
