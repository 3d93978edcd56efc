"""Shared by exporters and importers: the target-model check and the provenance of imported directions.

>>> t = resolve_target("embedded:smollm2")
>>> (t.hidden_size, t.n_layers)
(576, 30)
>>> TargetModel.from_config({"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 4}).n_layers
4
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cotscope.analyses.artifacts import LAYER_CONVENTION, UNKNOWN, DirectionFileError, DirectionMeta, DirectionSet


@dataclasses.dataclass(frozen=True)
class TargetModel:
    """The shape a direction must fit to be used with a model: width and number of decoder blocks."""

    name: str
    model_type: str
    hidden_size: int
    n_layers: int

    @classmethod
    def from_config(cls, config: Any, name: str | None = None) -> TargetModel:
        """From an HF config object, a config dict, or a path to ``config.json`` (or its folder).

        VLM configs are read through their ``text_config``.
        """
        if isinstance(config, (str, Path)):
            p = Path(config)
            p = p / "config.json" if p.is_dir() else p
            if not p.is_file():
                raise DirectionFileError(
                    f"no model config at {p}; pass a model folder containing config.json, "
                    "a config.json path, an HF config object or a dict"
                )
            name = name or str(p.parent)
            config = json.loads(p.read_text())

        def get(obj: Any, key: str) -> Any:
            return obj.get(key) if isinstance(obj, Mapping) else getattr(obj, key, None)

        text = config
        if get(config, "num_hidden_layers") is None and get(config, "text_config") is not None:
            text = get(config, "text_config")
        hidden, layers = get(text, "hidden_size"), get(text, "num_hidden_layers")
        if not isinstance(hidden, int) or not isinstance(layers, int):
            raise DirectionFileError(
                f"the config gives no integer hidden_size/num_hidden_layers (got {hidden!r}, {layers!r}); "
                "pass TargetModel(name, model_type, hidden_size, n_layers) explicitly"
            )
        model_type = get(config, "model_type") or UNKNOWN
        return cls(
            name=name or get(config, "_name_or_path") or model_type,
            model_type=str(model_type),
            hidden_size=hidden,
            n_layers=layers,
        )


# Targets known by name. The embedded LLM is SmolLM2-135M-Instruct (LlamaConfig, 30 blocks, 576 wide).
KNOWN_TARGETS: dict[str, TargetModel] = {
    "embedded:smollm2": TargetModel("embedded:smollm2", "llama", 576, 30),
    "HuggingFaceTB/SmolLM2-135M-Instruct": TargetModel("HuggingFaceTB/SmolLM2-135M-Instruct", "llama", 576, 30),
}

# TargetModel | known name | model folder or config.json path | HF config object | dict | None
TargetLike = Any


def resolve_target(target: TargetLike) -> TargetModel | None:
    """A :class:`TargetModel` from a known name, a model folder / config.json path, a config, or ``None``."""
    if target is None or isinstance(target, TargetModel):
        return target
    if isinstance(target, str) and target in KNOWN_TARGETS:
        return KNOWN_TARGETS[target]
    if isinstance(target, (str, Path)) and not Path(target).exists():
        raise DirectionFileError(
            f"unknown target model {str(target)!r}: not a known name ({', '.join(KNOWN_TARGETS)}) "
            "and not an existing model folder or config.json; pass TargetModel(...) or an HF config"
        )
    return TargetModel.from_config(target)


def check_export_fits(ds: DirectionSet, target: TargetLike) -> TargetModel | None:
    """Refuse to export a direction that cannot be applied to ``target`` (or is not in cotscope's layer convention).

    Checks the layer convention, the width, that every layer is a block of the target, and that the direction was
    read from a model of the same depth (block indices only transfer between models of equal depth).
    """
    if ds.meta.layer_convention != LAYER_CONVENTION:
        raise DirectionFileError(
            f"this direction set uses layer convention {ds.meta.layer_convention!r}; exporters expect "
            f"{LAYER_CONVENTION!r}. Convert its layer keys with analyses.layers first"
        )
    t = resolve_target(target)
    if t is None:
        if ds.meta.n_layers:
            ds.check_fits(ds.hidden_size, ds.meta.n_layers, what="the source model")
        return None
    what = f"target model {t.name!r}"
    ds.check_fits(t.hidden_size, t.n_layers, what=what)
    if ds.meta.n_layers and ds.meta.n_layers != t.n_layers:
        raise DirectionFileError(
            f"layer-count mismatch: the direction was read from a model with {ds.meta.n_layers} decoder "
            f"blocks, {what} has {t.n_layers}, so block indices mean different depths. Fix: map the "
            "layers by relative depth and record the new n_layers before exporting"
        )
    return t


def imported_meta(
    source_format: str, path: str | Path, *, model_type: str = UNKNOWN, n_layers: int = 0, **extra: Any
) -> DirectionMeta:
    """Provenance for a direction imported from a format that records none: everything it lacks is ``"unknown"``."""
    return DirectionMeta(
        model_type=model_type or UNKNOWN,
        n_layers=int(n_layers or 0),
        method="imported",
        normalisation=UNKNOWN,
        filter={"kind": UNKNOWN},
        library={},
        created=UNKNOWN,
        extra={
            "imported_from": source_format,
            "source_file": str(path),
            "imported_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            **extra,
        },
    )
