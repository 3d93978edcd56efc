"""cotscope: chain-of-thought directions inside LLMs and VLMs.

``import cotscope as cs`` is cheap: names resolve on first use, so torch loads only when a model does.

>>> import cotscope as cs
>>> lm = cs.load("embedded:smollm2")                                   # doctest: +SKIP
>>> res = cs.analyse(cs.collect(lm, cs.pairs(64), "runs/quick/stores/llm"))   # doctest: +SKIP
>>> with cs.steer(lm, res.directions["mean_diff"], 4.0, layers=[12]):  # doctest: +SKIP
...     print(cs.generate(lm, "What is 12 + 7?"))

The layers underneath stay importable on their own: ``cotscope.probes`` (touches models),
``cotscope.analyses`` (arrays in, numbers out), ``cotscope.figures`` (draws stored results), and the
orchestration above them: ``cotscope.stages``, ``cotscope.demo``, ``cotscope.report``, ``cotscope.cli``.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

# public name -> "module:attribute"; resolved lazily by __getattr__
_EXPORTS: dict[str, str] = {
    # models
    "load": "cotscope.probes.models.loading:load_model",
    "wrap": "cotscope.probes.models.loading:wrap_model",
    "LoadedModel": "cotscope.probes.models.loading:LoadedModel",
    # stimuli
    "pairs": "cotscope.api:pairs",
    "problems": "cotscope.probes.stimuli.arithmetic:generate_problems",
    "visual_items": "cotscope.probes.stimuli.visual:generate_visual_items",
    # reading
    "collect": "cotscope.api:collect",
    "open_store": "cotscope.analyses.store:ActivationStore",
    "analyse": "cotscope.api:analyse",
    # directions (the artifact is the API)
    "DirectionSet": "cotscope.analyses.artifacts:DirectionSet",
    "load_directions": "cotscope.analyses.artifacts:DirectionSet.load",
    "export": "cotscope.analyses.export.dispatch:export_direction",
    # writing
    "steer": "cotscope.probes.steer:steer",
    "generate": "cotscope.api:generate",
    "generate_steered": "cotscope.probes.intervene:generate_steered",
    "RowSteer": "cotscope.probes.intervene:RowSteer",
    "sweep": "cotscope.api:sweep",
    "SweepConfig": "cotscope.probes.sweep:SweepConfig",
    # attention and parameter space
    "attention": "cotscope.probes.attention:capture_run",
    "CaptureRequest": "cotscope.probes.attention:CaptureRequest",
    "analyse_attention": "cotscope.analyses.attention_shift:analyse_run",
    "prior": "cotscope.analyses.prior:compute_prior",
    # evaluation, runs and reports
    "evaluate": "cotscope.probes.evaluate:accuracy",
    "extract_answer": "cotscope.probes.evaluate:extract_answer",
    "run": "cotscope.stages:run_stages",
    "Stage": "cotscope.stages:Stage",
    "demo": "cotscope.demo:run_demo",
    "report": "cotscope.api:report",
    # one vocabulary and typed results
    "Positions": "cotscope.probes.positions:Positions",
    "TokenRule": "cotscope.probes.positions:TokenRule",
    "AnalysisResult": "cotscope.analyses.results:AnalysisResult",
    "SweepResult": "cotscope.analyses.results:SweepResult",
    "AttentionResult": "cotscope.analyses.results:AttentionResult",
    "PriorResult": "cotscope.analyses.prior:PriorResult",
    # errors
    "CotscopeError": "cotscope.errors:CotscopeError",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    target = _EXPORTS.get(name)
    if target is None:
        raise AttributeError(f"module 'cotscope' has no attribute {name!r}")
    module, _, attr = target.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    globals()[name] = obj  # cache: the next access is a plain attribute
    return obj


def __dir__() -> list[str]:
    return __all__
