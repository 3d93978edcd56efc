"""Deprecated: moved to cotscope.stages.attention (kept for one release; import from there)."""

from cotscope._compat import forward

__getattr__ = forward(
    "probes.attention_demo",
    {
        "run_attention_demo": "cotscope.stages.attention",
        "attention_stage": "cotscope.stages.attention",
        "attention_requests": "cotscope.stages.attention",
        "summarise": "cotscope.stages.attention",
        "report_markdown": "cotscope.stages.attention",
        "report_title": "cotscope.stages.attention",
        "add_image_focus": "cotscope.stages.attention",
        "CONDITIONS": "cotscope.stages.attention",
        "ANALYSIS_FILE": "cotscope.stages.attention",
    },
)
