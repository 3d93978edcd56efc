"""Stage ``exports``: the LLM's CoT directions in the formats other tools read (``RUN/exports``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def export_stage(run_dir: str | Path, target: str = "embedded:smollm2") -> dict:
    """The LLM's CoT directions in the formats other tools read (``RUN/exports``), with their provenance."""
    from cotscope.analyses.export.dispatch import export_direction

    run_dir = Path(run_dir)
    out: dict[str, Any] = {"files": {}}
    for method in ("mean_diff", "lat"):
        src = run_dir / "directions" / f"llm_{method}.safetensors"
        for fmt in ("gguf", "npz"):
            path, layers = export_direction(src, fmt, run_dir / "exports" / f"llm_{method}.{fmt}", target=target)
            out["files"][path.name] = {"format": fmt, "layers": f"{layers[0]}..{layers[-1]}", "source": src.name}
    out["title"] = "Exported directions"
    out["report"] = (
        "SmolLM2's CoT directions for other tools, in `exports/`: "
        + ", ".join(f"`{n}` ({v['format']}, layers {v['layers']})" for n, v in out["files"].items())
        + ". The GGUF files are llama.cpp control vectors (`--control-vector-scaled FILE 0.5`, block 0 "
        "left out: llama.cpp cannot steer it) that repeng also reads; the npz files carry a JSON "
        "provenance sidecar. `cotscope export` writes other formats and layer ranges."
    )
    return out
