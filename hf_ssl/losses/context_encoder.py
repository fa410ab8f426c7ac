"""The reconstruction loss of context encoders (Pathak et al. 2016, "Context Encoders: Feature Learning by Inpainting",
arXiv:1604.07379, §3.2 Eq. 1): a masked L2 over the region the network fills in.

``L_rec = ||M ⊙ (x - F((1 - M) ⊙ x))||^2`` with ``M`` the binary mask of the dropped region. Here the predicted
region is the dropped one grown by ``overlap_pixels`` into the context, and that border counts ``overlap_weight``
times as much (the authors' code: the network predicts a region 4 px larger on each side than the hole and weights
the overlap 10x, to blend the fill into its surroundings; §5 of the paper describes the same with 7 px). The sum is
normalised by the number of predicted values (channels x pixels of the region), the mean of the authors' weighted
criterion; with ``overlap_pixels = 0`` it is the plain mean squared error over the hole.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: The authors' code (train.lua: overlapPred = 4 at 128 px, overlapL2Weight = 10).
OVERLAP_PIXELS = 4
OVERLAP_WEIGHT = 10.0


def region_weights(hidden: torch.Tensor, overlap_pixels: int = OVERLAP_PIXELS,
                   overlap_weight: float = OVERLAP_WEIGHT) -> torch.Tensor:
    """``(B, 1, H, W)`` per-pixel loss weights of a ``hidden (B, 1, H, W)`` mask (1 = dropped): 1 in the hole,
    ``overlap_weight`` on the ring of context within ``overlap_pixels`` of it (a square neighbourhood: the dilation by
    max-pooling), 0 elsewhere."""
    if hidden.dim() != 4 or hidden.shape[1] != 1:
        raise ValueError(f"hidden must be (batch, 1, height, width), got {tuple(hidden.shape)}")
    if overlap_pixels < 0:
        raise ValueError(f"overlap_pixels must be >= 0, got {overlap_pixels}")
    hidden = hidden.float()
    if overlap_pixels == 0:
        return hidden
    region = F.max_pool2d(hidden, 2 * overlap_pixels + 1, stride=1, padding=overlap_pixels)
    return hidden + overlap_weight * (region - hidden)


def region_l2_loss(predictions: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``sum(weights * (predictions - targets)^2) / (C * #{weights > 0})``: the weighted squared error over the
    predicted region only. ``predictions``, ``targets``: ``(B, C, H, W)``; ``weights``: ``(B, 1, H, W)``
    (:func:`region_weights`)."""
    if predictions.shape != targets.shape:
        raise ValueError(f"predictions {tuple(predictions.shape)} and targets {tuple(targets.shape)} must match")
    squared = (predictions.float() - targets.float()).pow(2)
    count = (weights > 0).sum() * predictions.shape[1]
    return (weights * squared).sum() / count.clamp_min(1)
