"""Negative cosine similarity with a stop-gradient on the target: the loss of SimSiam (Chen & He 2021, "Exploring
Simple Siamese Representation Learning", arXiv:2011.10566, Eq. 1 with the stop-gradient of Eq. 3) and, up to an
affine map, of BYOL (Grill et al. 2020, "Bootstrap Your Own Latent", arXiv:2006.07733, Eq. 2)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.functional import cosine_similarity, normalize

FORMS = ("negative_cosine", "byol")


class NegativeCosineSimilarity(nn.Module):
    """Negative cosine similarity between predictions and (stop-gradient) targets.

    With ``p`` the predictor output of one view and ``z`` the projection of the other view (Chen & He 2021, Eq. 1):

        D(p, z) = - p / ||p|| . stopgrad(z) / ||z||       averaged over the batch

    BYOL's loss is the normalised mean squared error (Grill et al. 2020, Eq. 2),

        || p / ||p|| - z / ||z|| ||^2 = 2 - 2 cos(p, z)

    i.e. the same loss up to the affine map ``normalized_mse = 2 + 2 * D``: identical minimisers, gradients scaled by 2.
    ``form="byol"`` reports that scale (0 = aligned, 4 = opposite), ``form="negative_cosine"`` SimSiam's (-1 = aligned).

    Both are per-example means, so averaging the local loss over processes (what DDP does to gradients) equals the
    one-process loss of the global batch: no communication is needed.

    Inputs to ``forward``:
        prediction: ``(n, dim)`` predictor outputs (gradients flow into them).
        target: ``(n, dim)`` projections of the other view; detached here (stop-gradient), whatever the caller passes.

    Returns:
        ``(loss, stats)``: the scalar loss and detached diagnostics, ``cosine_similarity`` (mean cosine of the pairs)
        and ``output_std`` (SimSiam §4.1's collapse monitor: mean over dimensions of the per-dimension std over the
        batch of the L2-normalised target; about ``1 / sqrt(dim)`` for well-spread outputs, 0 when every output is
        the same vector).
    """

    def __init__(self, form: str = "negative_cosine"):
        super().__init__()
        if form not in FORMS:
            raise ValueError(f"form must be one of {FORMS}, got {form!r}")
        self.form = form

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if prediction.dim() != 2 or prediction.shape != target.shape:
            raise ValueError(
                "prediction and target must be 2-D (batch, dim) tensors of the same shape; got "
                f"{tuple(prediction.shape)} and {tuple(target.shape)}. Pass the predictor output of one view and the "
                "projection of the other view, flattened to (batch, dim)."
            )
        target = target.detach()
        cosine = cosine_similarity(prediction, target, dim=-1).mean()
        loss = 2.0 - 2.0 * cosine if self.form == "byol" else -cosine
        stats = {"cosine_similarity": cosine.detach(), "output_std": output_std(target)}
        return loss, stats


@torch.no_grad()
def output_std(embeddings: torch.Tensor) -> torch.Tensor:
    """Mean over dimensions of the per-dimension std (over the batch) of the L2-normalised ``embeddings``."""
    if embeddings.shape[0] < 2:
        return torch.zeros((), dtype=embeddings.dtype, device=embeddings.device)
    return normalize(embeddings.detach(), dim=-1).std(dim=0).mean()
