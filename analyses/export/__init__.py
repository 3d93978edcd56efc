"""Directions other tools can use: exporters and importers around the cotscope direction file.

=====================  =========================================  ==========================================
tool                   export                                     import
=====================  =========================================  ==========================================
llama.cpp (GGUF)       :func:`export_gguf_cv`                     :func:`import_gguf_cv`
repeng                 :func:`export_repeng_cv`, :func:`to_repeng`  :func:`import_repeng_cv`, :func:`from_repeng`
numpy / safetensors    :func:`export_npz`,                        :func:`import_arrays`
                       :func:`export_safetensors_arrays`
nnsight, TransformerLens  ``probes.apply.apply`` / ``probes.apply.tl_hooks`` (torch code lives in ``probes``)
=====================  =========================================  ==========================================

:func:`export_direction` picks the exporter by format name (what ``cotscope export`` and ``make demo`` use).
Exporters check the direction against a ``target`` model (name, config or :class:`TargetModel`) and refuse
what would not fit; importers mark provenance the source format lacks as ``"unknown"``. Layer indices are
converted with :mod:`analyses.layers`.

>>> from cotscope.analyses.export import export_gguf_cv, import_gguf_cv
>>> export_gguf_cv(ds, "cot.gguf", target="embedded:smollm2")     # doctest: +SKIP
"""

from cotscope.analyses.export.arrays import export_npz, export_safetensors_arrays, import_arrays, sidecar_path
from cotscope.analyses.export.common import KNOWN_TARGETS, TargetModel, check_export_fits, resolve_target
from cotscope.analyses.export.dispatch import FORMATS, export_direction, parse_layers
from cotscope.analyses.export.gguf_cv import export_gguf_cv, import_gguf_cv, read_gguf_cv
from cotscope.analyses.export.repeng_cv import export_repeng_cv, from_repeng, import_repeng_cv, to_repeng

__all__ = [
    "export_gguf_cv",
    "import_gguf_cv",
    "read_gguf_cv",
    "export_repeng_cv",
    "import_repeng_cv",
    "to_repeng",
    "from_repeng",
    "export_npz",
    "export_safetensors_arrays",
    "import_arrays",
    "sidecar_path",
    "TargetModel",
    "KNOWN_TARGETS",
    "resolve_target",
    "check_export_fits",
    "export_direction",
    "parse_layers",
    "FORMATS",
]
