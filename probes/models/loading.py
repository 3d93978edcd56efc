"""Load a model by embedded alias, local path or hub name, with its tokenizer/processor and adapter.

>>> lm = load_model("embedded:smollm2")                 # doctest: +SKIP
>>> lm.n_layers, lm.hidden_size                         # doctest: +SKIP
(30, 576)
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

from cotscope.errors import CotscopeError
from cotscope.probes.models.embedded import EMBEDDED_LLM, GGUF_SHA256, MODEL_ID, smollm2_dir
from cotscope.probes.models.registry import ModelAdapter, _resolve, adapter_for

EMBEDDED_VLM = "embedded:smolvlm"
ALIASES = {EMBEDDED_LLM: "SmolLM2-135M-Instruct (embedded)", EMBEDDED_VLM: "cotscope-smolvlm (embedded reference VLM)"}


class ModelLoadError(CotscopeError, RuntimeError):
    """A model could not be loaded; the message says why and what to do."""


def _torch_dtype(dtype: Any):
    import torch

    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str):
        if dtype == "auto":
            return "auto"
        name = dtype.replace("torch.", "")
        if hasattr(torch, name) and isinstance(getattr(torch, name), torch.dtype):
            return getattr(torch, name)
    raise ValueError(f"unknown dtype {dtype!r}; use e.g. 'float32', 'bfloat16', 'float16' or 'auto'")


def resolve_spec(spec: str | Path) -> tuple[Path | str, str, str]:
    """Turn a model spec into ``(path_or_name, model_id, revision)``."""
    spec_s = str(spec)
    if spec_s == EMBEDDED_LLM:
        return smollm2_dir(), MODEL_ID, f"gguf-sha256:{GGUF_SHA256}"
    if spec_s == EMBEDDED_VLM:
        from cotscope.probes.models.reference_vlm import reference_vlm_dir  # lazily: needs the shipped weights

        d = reference_vlm_dir()
        return d, "cotscope-smolvlm", f"dir-fingerprint:{dir_fingerprint(d)}"
    if spec_s.startswith("embedded:"):
        raise ModelLoadError(f"unknown embedded model {spec_s!r}; choose one of {sorted(ALIASES)}")
    p = Path(spec_s).expanduser()
    if p.exists():
        if not (p / "config.json").is_file():
            raise ModelLoadError(f"{p} exists but has no config.json; point at a saved HF model directory")
        return p, spec_s, f"dir-fingerprint:{dir_fingerprint(p)}"
    return spec_s, spec_s, "hub:unresolved"


def dir_fingerprint(path: Path) -> str:
    """Cheap content fingerprint of a model directory: config + weight files' names, sizes, heads and tails."""
    h = hashlib.sha256()
    for f in sorted(Path(path).iterdir()):
        if f.suffix in {".json", ".safetensors", ".bin", ".model", ".txt"} and f.is_file():
            h.update(f.name.encode())
            h.update(str(f.stat().st_size).encode())
            with open(f, "rb") as fh:
                h.update(fh.read(1 << 20))
                if f.stat().st_size > (2 << 20):
                    fh.seek(-(1 << 20), 2)
                    h.update(fh.read())
    return h.hexdigest()[:16]


@dataclasses.dataclass
class LoadedModel:
    """An HF model with its tokenizer/processor, adapter and provenance."""

    hf: Any
    tokenizer: Any
    processor: Any | None
    adapter: ModelAdapter
    model_id: str
    revision: str
    source: str
    _nnsight: Any = dataclasses.field(default=None, repr=False)
    remote: bool | str = False

    def __post_init__(self) -> None:
        from cotscope.probes.remote import check_remote

        self.remote = check_remote(self.remote)

    @property
    def config(self) -> Any:
        return self.hf.config

    @property
    def text_config(self) -> Any:
        return self.adapter.text_config(self.hf.config)

    @property
    def n_layers(self) -> int:
        return len(self.adapter.layers(self.hf))

    @property
    def hidden_size(self) -> int:
        return int(self.text_config.hidden_size)

    @property
    def is_vlm(self) -> bool:
        return self.adapter.is_vlm

    @property
    def device(self) -> Any:
        """Where model inputs go: the input embedding's execution device (see :mod:`probes.models.placement`);
        the CPU for a model built for remote execution (its inputs are serialised from here)."""
        import torch

        from cotscope.probes.models.placement import module_device

        emb = self.hf.get_input_embeddings() if hasattr(self.hf, "get_input_embeddings") else None
        dev = module_device(emb, (self.hf,)) if emb is not None else module_device(self.hf)
        return dev if dev is not None else torch.device("cpu")

    @property
    def dtype(self) -> Any:
        from cotscope.probes.models.placement import module_dtype

        return module_dtype(self.hf)

    def layer_device(self, i: int) -> Any:
        """The device decoder block ``i`` computes on (accelerate execution device under a ``device_map``),
        or ``None`` when the model has no local weights (remote execution: the server decides)."""
        from cotscope.probes.models.placement import ancestors_of, module_device

        path = f"{self.adapter.layers_path}.{int(i)}"
        return module_device(self.layers()[int(i)], ancestors_of(self.hf, path))

    def layer_dtype(self, i: int) -> Any:
        """The dtype of decoder block ``i``'s weights (what its output tensor will be)."""
        from cotscope.probes.models.placement import module_dtype

        return module_dtype(self.layers()[int(i)])

    @property
    def is_remote(self) -> bool:
        """Built for remote execution: the weights live on the NDIF server (``meta`` here)."""
        return self.source.startswith("remote:")

    @property
    def model_type(self) -> str:
        return str(self.hf.config.model_type)

    @property
    def nnsight(self) -> Any:
        """A cached nnsight wrapper around the same module (no copy); for a model loaded with ``remote=``, the
        nnsight model built from its name."""
        if self._nnsight is None:
            first = next(self.hf.parameters(), None)
            if first is not None and first.device.type == "meta" and not self.is_remote:
                raise ModelLoadError(
                    f"{self.model_id}: the model's first parameter is offloaded (on 'meta'), and nnsight 0.8 moves "
                    "every input to that device. Keep the first module (the input embedding) on a real device in "
                    "your device_map (accelerate's device_map='auto' does; offload later layers only)."
                )
            return self._wrap_nnsight()
        return self._nnsight

    def _wrap_nnsight(self) -> Any:
        import nnsight

        if self._nnsight is None:
            if self.is_vlm:
                self._nnsight = nnsight.TransformersModel(
                    self.hf, processor=self.processor, tokenizer=self.tokenizer, task="image-text-to-text"
                )
            else:
                self._nnsight = nnsight.TransformersModel(self.hf, tokenizer=self.tokenizer, task="text-generation")
        return self._nnsight

    def layers(self, root: Any = None) -> Any:
        """Decoder layers of ``root`` (default: the HF model; pass ``self.nnsight`` for envoys)."""
        return self.adapter.layers(self.hf if root is None else root)

    def check_layers(self, layers) -> list[int]:
        """Normalise layer indices (``-1`` is the last block) and refuse out-of-range ones (:class:`LayerIndexError`)."""
        from cotscope.analyses.layers import LayerIndexError, normalize_layer

        n = self.n_layers
        out = []
        for l in layers:
            try:
                out.append(normalize_layer(l, n))
            except LayerIndexError:
                raise LayerIndexError(
                    f"layer {l} is out of range for {self.model_id} with {n} decoder blocks "
                    f"(valid 0..{n - 1}, or -{n}..-1 counted from the end)"
                ) from None
        return sorted(set(out))

    def __repr__(self) -> str:
        dev = str(self.device)
        dtype = str(self.dtype).replace("torch.", "")
        return (
            f"LoadedModel({self.adapter.family}: {self.model_id!r}, {self.n_layers} layers, hidden {self.hidden_size}, "
            f"{dev}, {dtype})"
        )

    def provenance(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "revision": self.revision,
            "model_type": self.model_type,
            "n_layers": self.n_layers,
            "hidden_size": self.hidden_size,
            "dtype": str(self.dtype).replace("torch.", ""),
            "family": self.adapter.family,
            "source": self.source,
        }


def load_model(
    spec: str | Path = EMBEDDED_LLM,
    *,
    device: str | None = "cpu",
    dtype: Any = "float32",
    device_map: Any = None,
    attn_implementation: str | None = None,
    trust_remote_code: bool = False,
    revision: str | None = None,
    remote: bool | str = False,
    **from_pretrained_kwargs: Any,
) -> LoadedModel:
    """Load an LLM or VLM.

    Args:
        spec: ``"embedded:smollm2"``, ``"embedded:smolvlm"``, a local directory, or a hub name.
        device: where to move the model when ``device_map`` is not given (``"cuda"``, ``"cpu"``, …).
        dtype: torch dtype or its name; ``"auto"`` keeps the checkpoint's dtype.
        device_map: passed to ``from_pretrained`` (e.g. ``"auto"`` for multi-GPU); then ``device`` is ignored.
        attn_implementation: e.g. ``"eager"`` when attention weights are needed.
        trust_remote_code: allow the checkpoint's own modelling code (needed by some hub models).
        revision: a hub branch, tag or commit (recorded in the provenance); ignored for local folders.
        remote: ``True`` builds the nnsight model from the name for NDIF (no weights are downloaded: the
            architecture is built on the ``meta`` device, layer count and width come from the config) and makes
            collection and injection run remotely by default; ``"local"`` does the same but runs requests
            through nnsight's local simulation of the remote path (weights are then loaded here on first use).
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText

    from cotscope.probes.remote import check_remote

    remote = check_remote(remote)
    path, model_id, resolved_rev = resolve_spec(spec)
    rev: dict[str, Any] = {"revision": revision} if revision and not isinstance(path, Path) else {}
    if remote:
        return _load_remote(
            path,
            model_id,
            resolved_rev,
            remote,
            dtype=dtype,
            attn_implementation=attn_implementation,
            trust_remote_code=trust_remote_code,
            rev=rev,
        )
    kw: dict[str, Any] = dict(
        dtype=_torch_dtype(dtype), trust_remote_code=trust_remote_code, **rev, **from_pretrained_kwargs
    )
    if device_map is not None:
        kw["device_map"] = device_map
    if attn_implementation is not None:
        kw["attn_implementation"] = attn_implementation
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code, **rev)
    except OSError as e:
        raise ModelLoadError(
            f"could not load a config for {spec!r}: {e}. Pass a local model directory, "
            f"or one of {sorted(ALIASES)}; hub names need network access (none on this machine)."
        ) from None
    adapter = adapter_for(config)
    if adapter.auto_class:  # user-declared adapters of remote-code models name the auto class their code registers
        import transformers

        hf = getattr(transformers, adapter.auto_class).from_pretrained(path, **kw)
        if adapter.unwrap:
            hf = _resolve(hf, adapter.unwrap)
    elif adapter.is_vlm:
        hf = AutoModelForImageTextToText.from_pretrained(path, **kw)
    else:
        hf = AutoModelForCausalLM.from_pretrained(path, **kw)
    processor, tokenizer = _preprocessors(path, adapter, trust_remote_code, rev)
    if device_map is None and device is not None:
        hf.to(device)
    hf.eval()
    if getattr(config, "_commit_hash", None) and resolved_rev == "hub:unresolved":
        resolved_rev = f"hub:{config._commit_hash}"
    elif revision and resolved_rev == "hub:unresolved":
        resolved_rev = f"hub:{revision}"
    return LoadedModel(
        hf=hf,
        tokenizer=tokenizer,
        processor=processor,
        adapter=adapter,
        model_id=model_id,
        revision=resolved_rev,
        source=str(path),
    )


def _preprocessors(
    path: Path | str, adapter: ModelAdapter, trust_remote_code: bool, rev: dict[str, Any] | None = None
) -> tuple[Any, Any]:
    """``(processor or None, tokenizer)``; VLMs use the adapter's offline recipe, which avoids processors that need
    torchvision (video processors)."""
    from transformers import AutoProcessor, AutoTokenizer

    rev = rev or {}
    if adapter.is_vlm:
        processor = (
            adapter.build_processor(path)
            if adapter.build_processor is not None and not trust_remote_code
            else AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code, **rev)
        )
        return processor, processor.tokenizer
    return None, AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code, **rev)


def load_processor(spec: str | Path, trust_remote_code: bool = False) -> Any:
    """The processor (VLMs) or tokenizer (LLMs) :func:`load_model` would give ``spec``, without loading weights."""
    from transformers import AutoConfig

    path, _, _ = resolve_spec(spec)
    adapter = adapter_for(AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code))
    processor, tokenizer = _preprocessors(path, adapter, trust_remote_code)
    return processor if processor is not None else tokenizer


def _load_remote(
    path: Path | str,
    model_id: str,
    revision: str,
    remote: bool | str,
    *,
    dtype: Any,
    attn_implementation: str | None,
    trust_remote_code: bool,
    rev: dict[str, Any],
) -> LoadedModel:
    """The nnsight model for ``path`` built on ``meta`` (weights stay on the server), with its tokenizer/processor."""
    import nnsight
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code, **rev)
    except OSError as e:
        raise ModelLoadError(
            f"could not load a config for {str(path)!r}: {e}. Remote execution still reads the "
            "config and tokenizer from the hub (or a local directory) to build the model on the "
            "meta device; check the name and your network."
        ) from None
    adapter = adapter_for(config)
    kw: dict[str, Any] = {"trust_remote_code": trust_remote_code, **rev}
    td = _torch_dtype(dtype)
    if td is not None and td != "auto":
        kw["dtype"] = td
    if attn_implementation is not None:
        kw["attn_implementation"] = attn_implementation
    processor, tokenizer = _preprocessors(path, adapter, trust_remote_code, rev)
    if adapter.is_vlm:
        nm = nnsight.TransformersModel(
            str(path), processor=processor, tokenizer=tokenizer, task="image-text-to-text", **kw
        )
    else:
        nm = nnsight.TransformersModel(str(path), tokenizer=tokenizer, task="text-generation", **kw)
    if getattr(config, "_commit_hash", None) and revision == "hub:unresolved":
        revision = f"hub:{config._commit_hash}"
    elif rev and revision == "hub:unresolved":
        revision = f"hub:{rev['revision']}"
    return LoadedModel(
        hf=nm._module,
        tokenizer=tokenizer,
        processor=processor,
        adapter=adapter,
        model_id=model_id,
        revision=revision,
        source=f"remote:{path}",
        _nnsight=nm,
        remote=remote,
    )


def wrap_model(
    hf: Any,
    tokenizer: Any = None,
    processor: Any = None,
    model_id: str | None = None,
    revision: str = "unknown",
    adapter: Any = None,
) -> LoadedModel:
    """Wrap an already-loaded HF model (e.g. a tiny test model) as a :class:`LoadedModel`.

    ``adapter``: a :class:`ModelAdapter` to use instead of the registered one (e.g. from
    :func:`probes.models.adapter_spec.load_adapter_spec` with ``register_it=False``).
    """
    adapter = adapter if adapter is not None else adapter_for(hf)
    if tokenizer is None and processor is not None:
        tokenizer = processor.tokenizer
    return LoadedModel(
        hf=hf.eval(),
        tokenizer=tokenizer,
        processor=processor,
        adapter=adapter,
        model_id=model_id or getattr(hf.config, "_name_or_path", "") or type(hf).__name__,
        revision=revision,
        source="in-memory",
    )
