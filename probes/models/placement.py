"""Where a module runs and in which dtype: per-layer placement for models spread over devices.

With ``device_map="auto"`` (accelerate) a model's decoder layers can live on different GPUs, or be offloaded
to CPU RAM or disk, where their parameters sit on the ``meta`` device and an accelerate hook moves weights and
inputs to an *execution device* for each forward. The device of the model's first parameter then says
nothing about where layer ``i`` computes. :func:`module_device` asks the module itself: the execution device
of an accelerate hook on it or an ancestor, else the device of its first real (non-meta) parameter or buffer.

Every tensor cotscope adds to or indexes into a layer's output is created with :func:`module_device` /
:func:`module_dtype` of *that* layer (:meth:`~probes.models.loading.LoadedModel.layer_device`).

>>> import torch
>>> lin = torch.nn.Linear(2, 2)
>>> module_device(lin), module_dtype(lin)
(device(type='cpu'), torch.float32)
>>> module_device(torch.nn.Linear(2, 2, device="meta")) is None    # weights nowhere: no place to compute
True
"""

from __future__ import annotations

import itertools
from typing import Any

import torch


def _hook_device(module: Any) -> torch.device | None:
    """The execution device of an accelerate hook attached to ``module`` (``None`` if there is none)."""
    hook = getattr(module, "_hf_hook", None)
    if hook is None:
        return None
    hooks = getattr(hook, "hooks", None) or [hook]  # accelerate's SequentialHook holds several
    for h in hooks:
        dev = getattr(h, "execution_device", None)
        if dev is not None:
            return torch.device(f"cuda:{dev}" if isinstance(dev, int) else dev)
    return None


def module_device(module: Any, ancestors: tuple[Any, ...] = ()) -> torch.device | None:
    """Where ``module`` computes: an accelerate hook's execution device (on it, else on the nearest of
    ``ancestors``, innermost last), else its first non-meta parameter or buffer; ``None`` when every weight is
    on ``meta`` and no hook says where it will run (a model built for remote execution)."""
    for m in (module, *reversed(ancestors)):
        dev = _hook_device(m)
        if dev is not None:
            return dev
    for t in itertools.chain(module.parameters(), module.buffers()):
        if t.device.type != "meta":
            return t.device
    return None


def module_dtype(module: Any) -> torch.dtype:
    """The dtype of ``module``'s first floating-point parameter (meta parameters keep their dtype); float32 if none."""
    for p in module.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def ancestors_of(root: Any, path: str) -> tuple[Any, ...]:
    """The modules on the dotted ``path`` from ``root`` (outermost first, excluding the target itself)."""
    out, obj = [root], root
    parts = path.split(".")
    for part in parts[:-1]:
        obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
        out.append(obj)
    return tuple(out)
