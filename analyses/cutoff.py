"""One cutoff type for every low-pass in cotscope: a **bin count** or a **fraction** of the rfft bins.

The released L2V-CoT code uses absolute bin counts (``c = 200`` for d = 3584, ``c = 900`` for LLaVA-NeXT's
d = 4096); cotscope's defaults are fractions (``0.1``). Both are accepted everywhere:

* Python: an ``int`` is a bin count, a ``float`` a fraction (``200`` vs ``0.1``); :func:`parse_cutoff` also
  takes the strings below.
* CLI and recipes: ``"200"``, ``"200b"``, ``"200 bins"``, ``"bins:200"`` are bin counts; ``"0.1"``, ``"10%"``,
  ``"frac:0.1"`` are fractions. TOML keeps ``200`` (integer) and ``0.1`` (float) apart by itself.

A bare ``"1"`` is one bin, ``"1.0"`` the whole spectrum. :func:`describe_cutoff` turns a cutoff into the
record stored beside every result (what was asked for, the bins it meant at that width, and the share).

>>> parse_cutoff("200"), parse_cutoff("0.1"), parse_cutoff("10%"), parse_cutoff("bins:900")
(200, 0.1, 0.1, 900)
>>> describe_cutoff(200, 3584)["fraction_of_bins"]
0.1115
"""

from __future__ import annotations

import math
import re
from typing import Any

from cotscope.analyses.spectral import CutoffError, cutoff_bins, n_bins

Cutoff = int | float

_BINS = re.compile(r"^(?:bins?\s*[:=]\s*)?([0-9]+)\s*(?:b|bins?)?$", re.I)
_FRAC = re.compile(r"^(?:frac(?:tion)?\s*[:=]\s*)?([0-9]*\.[0-9]+|[0-9]+\.[0-9]*|[0-9]+(?:\.[0-9]*)?e-?[0-9]+)$", re.I)
_PCT = re.compile(r"^([0-9]*\.?[0-9]+)\s*%$")


def parse_cutoff(value: Any) -> Cutoff:
    """A cutoff as ``int`` (bins) or ``float`` (fraction of the rfft bins), from Python values or strings.

    Raises :class:`~cotscope.analyses.spectral.CutoffError` (a ``ValueError``) naming the accepted forms.

    >>> parse_cutoff(0.25), parse_cutoff("200 bins"), parse_cutoff("frac:0.05")
    (0.25, 200, 0.05)
    """
    forms = (
        "a bin count (200, '200', '200b', 'bins:200') or a fraction of the rfft bins in (0, 1] "
        "(0.1, '0.1', '10%', 'frac:0.1')"
    )
    if isinstance(value, bool) or value is None:
        raise CutoffError(f"cutoff {value!r} is not a cutoff; pass {forms}")
    if isinstance(value, int) or (hasattr(value, "dtype") and getattr(value.dtype, "kind", "") in "iu"):
        c = int(value)
        if c < 1:
            raise CutoffError(f"cutoff of {c} bins keeps nothing; pass at least 1 bin, or {forms}")
        return c
    if isinstance(value, float) or (hasattr(value, "dtype") and getattr(value.dtype, "kind", "") == "f"):
        f = float(value)
        if not math.isfinite(f) or not 0.0 < f <= 1.0:
            hint = f" (for {int(f)} bins pass the integer {int(f)})" if f > 1 and f.is_integer() else ""
            raise CutoffError(f"cutoff fraction {value!r} is outside (0, 1]{hint}; pass {forms}")
        return f
    if isinstance(value, str):
        s = value.strip()
        m = _BINS.match(s)
        if m:
            return parse_cutoff(int(m.group(1)))
        m = _PCT.match(s)
        if m:
            return parse_cutoff(float(m.group(1)) / 100.0)
        m = _FRAC.match(s)
        if m:
            return parse_cutoff(float(m.group(1)))
        raise CutoffError(f"cannot read cutoff {value!r}; pass {forms}")
    raise CutoffError(f"cutoff of type {type(value).__name__} ({value!r}) is not supported; pass {forms}")


def cutoff_kind(cutoff: Cutoff) -> str:
    """``"bins"`` or ``"fraction"``.

    >>> cutoff_kind(200), cutoff_kind(0.1)
    ('bins', 'fraction')
    """
    return "bins" if isinstance(parse_cutoff(cutoff), int) else "fraction"


def describe_cutoff(cutoff: Any, d: int) -> dict[str, Any]:
    """The record of a cutoff at hidden size ``d``: value as given, its kind, the bins kept, their share.

    >>> describe_cutoff(0.1, 576)
    {'cutoff': 0.1, 'kind': 'fraction', 'bins': 29, 'n_bins': 289, 'fraction_of_bins': 0.1003, 'hidden_size': 576}
    """
    c = parse_cutoff(cutoff)
    b = cutoff_bins(int(d), c)
    nb = n_bins(int(d))
    return {
        "cutoff": c,
        "kind": cutoff_kind(c),
        "bins": b,
        "n_bins": nb,
        "fraction_of_bins": round(b / nb, 4),
        "hidden_size": int(d),
    }


def argparse_cutoff(text: str) -> Cutoff:
    """``type=`` for argparse: like :func:`parse_cutoff`, with argparse's error type."""
    import argparse

    try:
        return parse_cutoff(text)
    except CutoffError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
