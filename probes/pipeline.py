"""Deprecated: moved to cotscope.stages.llm and cotscope.stages.crossmodel (kept for one release; import from there)."""

from cotscope._compat import forward

__getattr__ = forward(
    "probes.pipeline",
    {
        "run_llm_stage": "cotscope.stages.llm",
        "llm_summary": "cotscope.stages.llm",
        "default_vlm_spec": "cotscope.stages.crossmodel",
        "run_vlm_stage": "cotscope.stages.crossmodel",
        "crossmodel_summary": "cotscope.stages.crossmodel",
    },
)
