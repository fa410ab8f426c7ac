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

from dataclasses import dataclass

import torch
from torch import nn

from ..distributed import all_reduce_sum, world_size
from .heads import mlp_head


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


@dataclass
class PredictorSettings:
    """The predictor settings BYOL and SimSiam share (their configs inherit these fields).

    predictor_type: "mlp" (the papers' learned Linear-BN-ReLU-Linear, width ``prediction_hidden_dim``) or "direct"
    (DirectPred, Tian et al. 2021: a linear predictor set each step from the running correlation of the projections,
    no parameters). direct_predictor_decay / direct_predictor_eps: its rho and eps (0.3 / 0.01, the authors' code).
    predictor_learning_rate_scale: the predictor trains at this multiple of the (scheduled) learning rate (papers: 1;
    a faster predictor speeds up short runs, Grill et al. 2020 Appendix I, Tian et al. 2021).
    predictor_fixed_learning_rate: train the predictor at a constant (scaled) learning rate, outside the warm-up and
    decay of the schedule (Chen & He 2021 §4.4: better than decaying it; papers' default: False).
    """

    predictor_type: str = "mlp"
    direct_predictor_decay: float = 0.3
    direct_predictor_eps: float = 0.01
    predictor_learning_rate_scale: float = 1.0
    predictor_fixed_learning_rate: bool = False

    def __post_init__(self):
        if self.predictor_type not in PREDICTOR_TYPES:
            raise ValueError(
                f"predictor_type must be one of {PREDICTOR_TYPES} ('mlp': learned, the paper's; 'direct': DirectPred, "
                f"Tian et al. 2021), got {self.predictor_type!r}"
            )
        if not 0.0 <= self.direct_predictor_decay <= 1.0:
            raise ValueError(f"direct_predictor_decay must be in [0, 1], got {self.direct_predictor_decay}")
        if self.predictor_learning_rate_scale <= 0:
            raise ValueError(f"predictor_learning_rate_scale must be > 0, got {self.predictor_learning_rate_scale}")


def build_predictor(settings: PredictorSettings, dim: int, hidden_dim: int) -> nn.Module:
    """The predictor ``settings`` ask for, ``(batch, dim) -> (batch, dim)``: :class:`DirectPredictor`, or the learned
    Linear-BN-ReLU-Linear bottleneck ``dim -> hidden_dim -> dim``."""
    if settings.predictor_type == "direct":
        return DirectPredictor(dim, settings.direct_predictor_decay, settings.direct_predictor_eps)
    return mlp_head([dim, hidden_dim, dim])
