"""DirectPred: a BYOL / SimSiam predictor set in closed form from the feature correlation, not learned
(Tian, Chen & Ganguli 2021, "Understanding Self-supervised Learning Dynamics without Contrastive Pairs",
arXiv:2102.06810, §5 "DirectPred").

Their analysis shows that a linear predictor trained by gradient descent aligns its eigenspace with that of the
correlation matrix ``F = E[z z^T]`` of the online projections, and that this alignment is what keeps BYOL/SimSiam from
collapsing. DirectPred skips the learning: every training step it updates a moving average of ``F`` and sets

    F_hat <- rho * F_hat + (1 - rho) * mean_batch(z z^T)          (rho = 0.3)
    F_hat  = U diag(s) U^T                                         (eigendecomposition, s >= 0 after clamping)
    W_p    = U diag(sqrt(s / max(s)) + eps) U^T                    (eps = 0.01)

so the predictor is aligned from the first step, which is when a learned one lags most (short runs). The paper reports
it on par with or above a learned linear predictor (CIFAR-10 / STL-10 / ImageNet); the defaults above are those of
the authors' code (luckmatters: ``dyn_lambda=0.3``, ``dyn_eps=0.01``, ``predictor_freq=1``, square-root boost).

Written here rather than taken from a library: none of transformers, timm, lightly or torchvision ships it.
"""

from __future__ import annotations

import torch
from torch import nn

from ..distributed import all_reduce_sum, world_size


class DirectPredictor(nn.Module):
    """Linear predictor ``p = W_p z`` with ``W_p`` set from the running correlation of its inputs (no parameters).

    Args:
        dim: width of the projections it maps (``projection_dim``).
        decay: rho, the weight of the running correlation against the new batch's (0.3 in the paper; 1 keeps the
            first batch's).
        eps: added to every normalised square-root eigenvalue, so directions of small variance still pass (0.01).

    Buffers (saved in ``state_dict``, so resuming continues the same predictor): ``correlation`` ``(dim, dim)``,
    ``weight`` ``(dim, dim)`` (identity until the first training batch) and ``num_updates``.

    Shapes: ``(batch, dim) -> (batch, dim)``. In training mode (with gradients enabled) each call first folds the
    batch's ``mean(z z^T)`` (averaged over processes when distributed, i.e. the global batch's) into ``correlation``
    and recomputes ``weight``; the gradient flows to ``z`` through the fixed ``weight``, never into it.
    """

    def __init__(self, dim: int, decay: float = 0.3, eps: float = 0.01):
        super().__init__()
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"DirectPredictor decay must be in [0, 1], got {decay}")
        self.decay, self.eps = decay, eps
        self.register_buffer("correlation", torch.zeros(dim, dim))
        self.register_buffer("weight", torch.eye(dim))
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    def extra_repr(self) -> str:
        return f"dim={self.weight.shape[0]}, decay={self.decay}, eps={self.eps}"

    @torch.no_grad()
    def update(self, projections: torch.Tensor) -> None:
        """Fold ``projections`` ``(batch, dim)`` into the running correlation and recompute ``weight``."""
        z = projections.detach().float()
        batch_correlation = z.T @ z / z.shape[0]
        if world_size() > 1:  # equal per-process batches: the mean of the means is the global batch's mean
            batch_correlation = all_reduce_sum(batch_correlation) / world_size()
        if self.num_updates.item() == 0:
            self.correlation.copy_(batch_correlation)
        else:
            self.correlation.mul_(self.decay).add_(batch_correlation, alpha=1.0 - self.decay)
        self.num_updates += 1
        # float64: eigh of a nearly low-rank matrix in float32 can fail to converge
        eigenvalues, eigenvectors = torch.linalg.eigh(self.correlation.double())
        eigenvalues = eigenvalues.clamp(min=0.0)
        largest = eigenvalues.max().clamp(min=torch.finfo(torch.float64).tiny)
        gains = (eigenvalues / largest).sqrt() + self.eps
        self.weight.copy_((eigenvectors * gains) @ eigenvectors.T)

    def forward(self, projections: torch.Tensor) -> torch.Tensor:
        if self.training and torch.is_grad_enabled():
            self.update(projections)
        return projections @ self.weight.to(projections.dtype)  # weight is symmetric: z W^T = z W


#: ``predictor_type`` values of BYOL / SimSiam: a learned MLP (the papers') or :class:`DirectPredictor`.
PREDICTOR_TYPES = ("mlp", "direct")


def check_predictor_type(predictor_type: str) -> None:
    """Refuse an unknown ``predictor_type``, naming the choices."""
    if predictor_type not in PREDICTOR_TYPES:
        raise ValueError(
            f"predictor_type must be one of {PREDICTOR_TYPES} ('mlp': learned, the paper's; 'direct': DirectPred, "
            f"Tian et al. 2021), got {predictor_type!r}"
        )
