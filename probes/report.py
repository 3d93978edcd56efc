"""Deprecated: moved to cotscope.report (kept for one release; import from there)."""

from cotscope._compat import forward

__getattr__ = forward(
    "probes.report",
    {
        "write_report": "cotscope.report",
    },
)
