"""Deprecated: moved to cotscope.demo (kept for one release; import from there)."""

from cotscope._compat import forward

__getattr__ = forward(
    "probes.demo",
    {
        "run_demo": "cotscope.demo",
        "DEMO_DEFAULTS": "cotscope.demo",
    },
)
