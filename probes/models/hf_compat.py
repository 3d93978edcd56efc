"""Readers for Hugging Face outputs whose types changed between transformers releases.

Every place in cotscope (and its tests) that reads such a field goes through here, so a new release
changes one function, not many call sites.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def image_feature_rows(features: Any) -> torch.Tensor:
    """Image features as one ``[n_tokens, hidden]`` tensor, whatever shape transformers returned.

    ``image_hidden_states`` / ``get_image_features`` return a tensor ``[n_images, n_tokens, hidden]`` up
    to transformers 5.23, a list of per-image ``[n_tokens, hidden]`` tensors from 5.24 on, and a
    ``ModelOutput`` whose ``pooler_output`` holds either in some families.

    >>> import torch
    >>> a = torch.arange(12.).view(2, 3, 2)
    >>> torch.equal(image_feature_rows(a), image_feature_rows(list(a)))
    True
    >>> tuple(image_feature_rows(a).shape)
    (6, 2)
    """
    import torch

    pooled = getattr(features, "pooler_output", None)
    if pooled is not None:
        features = pooled
    if isinstance(features, torch.Tensor):
        return features.reshape(-1, features.shape[-1])
    if isinstance(features, (list, tuple)) and features and all(isinstance(f, torch.Tensor) for f in features):
        return torch.cat([f.reshape(-1, f.shape[-1]) for f in features], dim=0)
    raise TypeError(
        f"cannot read image features of type {type(features).__name__}; expected a tensor or a list "
        f"of tensors (transformers {_transformers_version()})"
    )


def _transformers_version() -> str:
    try:
        import transformers

        return transformers.__version__
    except Exception:  # pragma: no cover - transformers is a hard dependency
        return "unknown"
