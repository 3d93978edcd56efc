"""How far a reduced-precision run (bf16, fp16; GPU kernels) may drift from a float32 reference, derived from the
dtype's unit roundoff.

* ``u`` = half the machine epsilon of the working dtype: ``2^-8`` for bfloat16, ``2^-11`` for float16, ``2^-24``
  for float32. Every stored block output is rounded to it (relative error ``<= u`` per element).
* **Residuals at block ``l``** (relative L2 error per row): :func:`residual_tolerance` ``= 4 u sqrt(l + 1)``. Each of
  the ``l + 1`` blocks adds its own rounding to the residual stream; those errors are roughly independent, so they
  grow like ``sqrt(l + 1)``; the factor 4 covers the amplification inside a block (norms, softmax, the MLP).
  Measured on SmolLM2 (CPU bf16 vs CPU float32): 0.008 at block 0 (bound 0.016) and 0.025 at block 29 (bound 0.086);
  fp16: 0.0009 and 0.0025 (bounds 0.002 and 0.011).
* **Log-probabilities** (teacher-forced answer tokens): :func:`logprob_tolerance` ``= eps_L (|log p| + 1)`` with
  ``eps_L`` the residual tolerance of the last block: logits are linear in the final residual, so their error is
  ``eps_L`` times their scale, and ``log p`` is a difference of logit-scale terms; the extra nat covers the
  normaliser. Measured bf16: 0.62 nats at ``log p = -22.9`` (bound 2.0).
* **Attention rows**: :func:`attention_tolerance` bounds the total-variation distance of a row at block ``l`` by
  ``eps_l``: ``p = softmax(s)`` gives ``sum_i |dp_i| <= 2 max_i |ds_i|``, and the scores inherit the relative error
  of the block's input. Measured bf16: 0.006 at block 0 (bound 0.016), 0.027 at block 29 (bound 0.086).

>>> round(residual_tolerance("bfloat16", 29), 4), round(residual_tolerance("float32", 0), 9)
(0.0856, 2.38e-07)
"""

from __future__ import annotations

import math
from typing import Any

import torch

FACTOR = 4.0


def unit_roundoff(dtype: Any) -> float:
    """Half the machine epsilon of ``dtype`` (a torch dtype or its name)."""
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype.replace("torch.", ""))
    return float(torch.finfo(dtype).eps) / 2


def residual_tolerance(dtype: Any, layer: int) -> float:
    """Allowed relative L2 error of block ``layer``'s output (0-based) against float32: ``4 u sqrt(layer + 1)``."""
    return FACTOR * unit_roundoff(dtype) * math.sqrt(int(layer) + 1)


def logprob_tolerance(dtype: Any, n_layers: int, logprob: float) -> float:
    """Allowed absolute error (nats) of a log-probability ``logprob`` (the float32 value) under ``dtype``."""
    return residual_tolerance(dtype, n_layers - 1) * (abs(float(logprob)) + 1.0)


def attention_tolerance(dtype: Any, layer: int) -> float:
    """Allowed total-variation distance between an attention row at block ``layer`` and its float32 counterpart."""
    return residual_tolerance(dtype, layer)
