"""User-declared adapters: a small TOML/JSON file that tells cotscope where a model's parts live.

For models cotscope has no built-in adapter for, typically remote-code checkpoints such as InternVL2
(``model_type = "internvl_chat"``)::

    family = "internvl_chat"
    model_types = ["internvl_chat"]
    layers_path = "language_model.model.layers"
    final_norm_path = "language_model.model.norm"
    vision_path = "vision_model"
    projector_path = "mlp1"
    image_token = "<IMG_CONTEXT>"            # or: image_token_id = 92546
    text_config_attr = "llm_config"
    auto_class = "AutoModel"                 # the class its remote code registers
    [processor_kwargs]                       # extra keyword arguments of every processor call
    # crop_to_patches = false

:func:`load_adapter_spec` validates every field (a :class:`AdapterSpecError` names the field and the fix), resolves
a token string through the tokenizer, optionally checks the paths on a model, and registers the adapter.

>>> spec = {"family": "demo", "model_types": ["demo_vlm"], "layers_path": "model.layers", "image_token_id": 5}
>>> adapter_from_spec(spec).image_token_id(None)
5
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cotscope.errors import CotscopeError
from cotscope.probes.models.registry import ModelAdapter, _resolve, register

__all__ = ["AdapterSpecError", "SPEC_FIELDS", "adapter_from_spec", "load_adapter_spec", "read_spec"]


class AdapterSpecError(CotscopeError):
    """A user-declared adapter spec is invalid (the message names the field and the fix)."""


_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.([A-Za-z_][A-Za-z0-9_]*|[0-9]+))*$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

SPEC_FIELDS: dict[str, str] = {
    "family": "short name shown to users, e.g. 'internvl_chat' (letters, digits, _ . -)",
    "model_types": "list of config.model_type values the adapter serves, e.g. ['internvl_chat']",
    "layers_path": "dotted path from the top-level model to the decoder-block list, e.g. 'language_model.model.layers'",
    "final_norm_path": "dotted path to the language model's final norm (default: layers_path with 'layers' -> 'norm')",
    "vision_path": "dotted path to the vision tower (omit for a text-only model)",
    "projector_path": "dotted path to the vision-to-text connector",
    "image_token_id": "integer id of the token the model replaces with image features",
    "image_token": "the image token as a string, resolved through the tokenizer (instead of image_token_id)",
    "processor_kwargs": "table of extra keyword arguments every processor call needs",
    "text_config_attr": "config attribute holding the language-model config, e.g. 'llm_config'",
    "auto_class": "transformers auto class that load_model uses, e.g. 'AutoModel' or 'AutoModelForCausalLM'",
    "image_tokens_in_sequence": "false for cross-attention models (no image tokens in the sequence)",
    "processor_suffix": "text the processor appends after every image prompt (counted as a suffix)",
    "notes": "free text",
}
_REQUIRED = ("family", "model_types", "layers_path")


def read_spec(path: str | Path) -> dict[str, Any]:
    """Parse a ``.toml`` or ``.json`` spec file into a dict (syntax errors name the file and line)."""
    path = Path(path)
    if not path.is_file():
        raise AdapterSpecError(f"adapter spec {path} not found. Fix: pass the path of a .toml or .json spec file.")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".toml":
        import tomllib

        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise AdapterSpecError(f"adapter spec {path} is not valid TOML: {e}. Fix the syntax there.") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise AdapterSpecError(f"adapter spec {path} is not valid JSON: {e}. Fix the syntax there.") from None
        if not isinstance(data, dict):
            raise AdapterSpecError(f"adapter spec {path} must hold a JSON object of fields, not {type(data).__name__}")
        return data
    raise AdapterSpecError(f"adapter spec {path} must end in .toml or .json (got {path.suffix or 'no suffix'!r})")


def _bad(field: str, problem: str) -> AdapterSpecError:
    return AdapterSpecError(f"adapter spec field {field!r}: {problem}. Fix: {field} = {SPEC_FIELDS[field]}.")


def _path_field(spec: Mapping[str, Any], field: str) -> str | None:
    v = spec.get(field)
    if v is None:
        return None
    if not isinstance(v, str) or not _PATH.match(v):
        raise _bad(field, f"{v!r} is not a dotted attribute path")
    return v


def _image_token_id(spec: Mapping[str, Any], tokenizer: Any) -> int | None:
    tid, tok = spec.get("image_token_id"), spec.get("image_token")
    if tid is not None and tok is not None:
        raise _bad("image_token", "give either image_token or image_token_id, not both")
    if tid is not None:
        if isinstance(tid, bool) or not isinstance(tid, int) or tid < 0:
            raise _bad("image_token_id", f"{tid!r} is not a non-negative integer")
        if tokenizer is not None and tid >= len(tokenizer):
            raise _bad("image_token_id", f"{tid} is outside the tokenizer's vocabulary of {len(tokenizer)}")
        return tid
    if tok is None:
        if spec.get("vision_path") is not None and spec.get("image_tokens_in_sequence", True):
            raise _bad("image_token_id", "a VLM spec (vision_path set) needs image_token_id or image_token")
        return None
    if not isinstance(tok, str) or not tok:
        raise _bad("image_token", f"{tok!r} is not a non-empty string")
    if tokenizer is None:
        raise _bad("image_token", f"{tok!r} needs a tokenizer to resolve; pass tokenizer=, or give image_token_id")
    ids = tokenizer.convert_tokens_to_ids([tok])
    if not ids or ids[0] is None or (ids[0] == tokenizer.unk_token_id and tok != tokenizer.unk_token):
        raise _bad("image_token", f"{tok!r} is not a single token of this tokenizer")
    return int(ids[0])


def adapter_from_spec(spec: Mapping[str, Any], tokenizer: Any = None, model: Any = None) -> ModelAdapter:
    """Validate ``spec`` (a dict, e.g. from :func:`read_spec`) and build its :class:`ModelAdapter` (not registered).

    ``tokenizer`` resolves ``image_token`` and bounds ``image_token_id``; ``model`` (an HF model) checks that every
    path exists and that ``layers_path`` names a list of blocks.
    """
    if not isinstance(spec, Mapping):
        raise AdapterSpecError(f"an adapter spec is a table of fields, not {type(spec).__name__}")
    unknown = sorted(set(spec) - set(SPEC_FIELDS))
    if unknown:
        raise AdapterSpecError(
            f"adapter spec has unknown field(s) {unknown}. Fix: remove them; the fields are {sorted(SPEC_FIELDS)}."
        )
    for f in _REQUIRED:
        if spec.get(f) in (None, "", []):
            raise _bad(f, "missing")
    family = spec["family"]
    if not isinstance(family, str) or not _NAME.match(family):
        raise _bad("family", f"{family!r} is not a short name")
    mts = spec["model_types"]
    if isinstance(mts, str) or not isinstance(mts, (list, tuple)) or not all(isinstance(m, str) and m for m in mts):
        raise _bad("model_types", f"{mts!r} is not a list of non-empty strings")
    layers = _path_field(spec, "layers_path")
    assert layers is not None
    default_norm = layers.rsplit(".", 1)[0] + ".norm" if "." in layers else "norm"
    norm = _path_field(spec, "final_norm_path") or default_norm
    vision, proj = _path_field(spec, "vision_path"), _path_field(spec, "projector_path")
    if proj is not None and vision is None:
        raise _bad("vision_path", "projector_path is set but vision_path is not")
    kwargs = spec.get("processor_kwargs", {})
    if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
        raise _bad("processor_kwargs", f"{kwargs!r} is not a table with string keys")
    for f in ("text_config_attr", "auto_class", "processor_suffix", "notes"):
        if spec.get(f) is not None and not isinstance(spec[f], str):
            raise _bad(f, f"{spec[f]!r} is not a string")
    auto = spec.get("auto_class")
    if auto is not None:
        import transformers

        if not auto.startswith("Auto") or not hasattr(transformers, auto):
            raise _bad("auto_class", f"{auto!r} is not a transformers auto class")
    in_seq = spec.get("image_tokens_in_sequence", True)
    if not isinstance(in_seq, bool):
        raise _bad("image_tokens_in_sequence", f"{in_seq!r} is not true/false")
    tid = _image_token_id(spec, tokenizer)
    adapter = ModelAdapter(
        family=family,
        model_types=tuple(mts),
        layers_path=layers,
        final_norm_path=norm,
        vision_path=vision,
        projector_path=proj,
        image_token_attrs=(),
        image_token_value=tid,
        processor_kwargs=dict(kwargs),
        text_config_attr=spec.get("text_config_attr"),
        notes=spec.get("notes", "user-declared adapter"),
        image_tokens_in_sequence=in_seq,
        processor_suffix=spec.get("processor_suffix", ""),
        auto_class=auto,
    )
    if model is not None:
        _check_on_model(adapter, model)
    return adapter


def _check_on_model(adapter: ModelAdapter, model: Any) -> None:
    fields = {
        "layers_path": adapter.layers_path,
        "final_norm_path": adapter.final_norm_path,
        "vision_path": adapter.vision_path,
        "projector_path": adapter.projector_path,
    }
    for field, path in fields.items():
        if path is None:
            continue
        try:
            got = _resolve(model, path)
        except (AttributeError, IndexError, TypeError):
            raise _bad(field, f"{path!r} does not exist in {type(model).__name__}") from None
        if field == "layers_path":
            try:
                n = len(got)
            except TypeError:
                raise _bad(field, f"{path!r} is a {type(got).__name__}, not a list of decoder blocks") from None
            if n == 0:
                raise _bad(field, f"{path!r} is an empty list")
    mt = getattr(getattr(model, "config", None), "model_type", None)
    if mt not in adapter.model_types:
        raise _bad("model_types", f"the model's config.model_type {mt!r} is not among {list(adapter.model_types)}")
    tc = adapter.text_config_attr
    if tc is not None and not hasattr(model.config, tc):
        raise _bad("text_config_attr", f"the model's config has no attribute {tc!r}")


def load_adapter_spec(
    source: str | Path | Mapping[str, Any], tokenizer: Any = None, model: Any = None, register_it: bool = True
) -> ModelAdapter:
    """Read (a path) or take (a dict) a spec, validate it, and register its adapter (unless ``register_it=False``).

    Registered adapters serve :func:`probes.models.adapter_for` and ``load_model`` for their ``model_types``.
    """
    spec = read_spec(source) if isinstance(source, (str, Path)) else source
    adapter = adapter_from_spec(spec, tokenizer=tokenizer, model=model)
    return register(adapter) if register_it else adapter
