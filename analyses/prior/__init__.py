"""DRIFT's reasoning prior ``Δ = θ_reason − θ_VL`` between two checkpoints (METHODS.md §6).

Four steps, each usable alone:

1. :class:`Checkpoint` (:mod:`~analyses.prior.reader`) — a directory of safetensors shards (with or
   without ``model.safetensors.index.json``) read tensor by tensor; nothing is loaded up front.
2. :func:`match_checkpoints` (:mod:`~analyses.prior.matching`) — pairs tensors by exact name, then by
   a mapping for known layouts (``model.layers.*`` ↔ ``model.language_model.layers.*`` /
   ``model.text_model.layers.*`` / ``language_model.model.layers.*``, ``lm_head``, embeddings, tied
   heads). It always returns a :class:`MatchReport`; it raises :class:`ModuleMatchError` (with the
   report in the message) when nothing matches, a selected tensor has no partner, or shapes differ —
   unless explicitly allowed. The released DRIFT code skips such tensors silently; here that cannot happen.
3. :func:`compute_prior` (:mod:`~analyses.prior.compute`) — streams the matched pairs (one tensor pair
   at a time, large tensors in row chunks) and accumulates per-tensor/per-layer norms, cosines and the
   spectrum of Δ's rows along the hidden dimension with a permutation null
   (:mod:`~analyses.prior.spectrum`). Optionally writes Δ to a prior artifact while streaming, so peak
   memory is bounded by the largest tensor pair.
4. :class:`PriorArtifact` (:mod:`~analyses.prior.artifact`) — the reusable prior (safetensors of
   ``delta.<canonical name>`` tensors, JSON provenance in the header); :meth:`PriorArtifact.fit` maps it
   onto a model's parameter names and raises :class:`PriorFitError` if it does not fit.

:func:`run_prior_analysis` (:mod:`~analyses.prior.run`) does all four and writes the analysis JSON and
figures. Canonical names and module sets are described in :mod:`~analyses.prior.matching`.

>>> res = run_prior_analysis("ckpt/smollm2", "ckpt/reference_vlm", "out/prior")   # doctest: +SKIP
>>> res["delta_norm_total"], res["spectral_verdict"]                                # doctest: +SKIP
"""

from cotscope.analyses.prior.artifact import (
    PRIOR_FILENAME,
    PRIOR_FORMAT,
    PRIOR_FORMAT_VERSION,
    SIGN_CONVENTION,
    PriorArtifact,
    library_versions,
)
from cotscope.analyses.prior.compute import PriorResult, compute_prior
from cotscope.analyses.prior.errors import CheckpointError, ModuleMatchError, PatternError, PriorError, PriorFitError
from cotscope.analyses.prior.matching import (
    DEFAULT_MODULES,
    NON_LM,
    PRESETS,
    RAW_PREFIX,
    MatchReport,
    Pair,
    canonical_name,
    is_vision_name,
    layer_and_module,
    match_checkpoints,
    resolve_modules,
)
from cotscope.analyses.prior.reader import Checkpoint, TensorInfo
from cotscope.analyses.prior.run import ANALYSIS_FILENAME, run_prior_analysis, summarize
from cotscope.analyses.prior.spectrum import (
    NULL_VERDICT,
    ZERO_VERDICT,
    GramSpectrum,
    _null_mean_spectrum,  # noqa: F401  (re-exported for the tests)
    bh_adjust,
    hidden_axis,
    lowpass_fraction,
    onesided_weights,
    spectral_centroid,
    spectrum_test,
)

__all__ = [
    "ANALYSIS_FILENAME",
    "DEFAULT_MODULES",
    "NON_LM",
    "NULL_VERDICT",
    "PRESETS",
    "PRIOR_FILENAME",
    "PRIOR_FORMAT",
    "PRIOR_FORMAT_VERSION",
    "RAW_PREFIX",
    "SIGN_CONVENTION",
    "ZERO_VERDICT",
    "Checkpoint",
    "CheckpointError",
    "GramSpectrum",
    "MatchReport",
    "ModuleMatchError",
    "Pair",
    "PatternError",
    "PriorArtifact",
    "PriorError",
    "PriorFitError",
    "PriorResult",
    "TensorInfo",
    "bh_adjust",
    "canonical_name",
    "compute_prior",
    "hidden_axis",
    "is_vision_name",
    "layer_and_module",
    "library_versions",
    "lowpass_fraction",
    "match_checkpoints",
    "onesided_weights",
    "resolve_modules",
    "run_prior_analysis",
    "spectral_centroid",
    "spectrum_test",
    "summarize",
]
