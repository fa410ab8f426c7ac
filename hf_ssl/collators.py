"""Batch builders. Views come out of the dataset transform as one tensor per example and field."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def stack_views(examples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack every tensor field of the examples along a new batch dimension.

    ``[{"global_crops": (G, C, H, W), "local_crops": (L, C, h, w)}, ...]`` -> ``{"global_crops": (B, G, C, H, W),
    "local_crops": (B, L, C, h, w)}``. Non-tensor fields (labels, indices) are dropped: pretraining is label-free.
    """
    if not examples:
        raise ValueError("cannot collate an empty batch")
    keys = [key for key, value in examples[0].items() if isinstance(value, torch.Tensor)]
    if not keys:
        raise ValueError(
            f"examples carry no tensors (fields: {sorted(examples[0])}); attach a view transform with "
            "hf_ssl.views.apply_views before training"
        )
    return {key: torch.stack([example[key] for example in examples]) for key in keys}
