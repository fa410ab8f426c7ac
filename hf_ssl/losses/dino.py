"""DINO self-distillation loss with centring and sharpening (Caron et al. 2021, "Emerging Properties in
Self-Supervised Vision Transformers", Eq. 1-3 and §3.1)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.functional import log_softmax, softmax

from ..distributed import all_reduce_sum, world_size


class DINOLoss(nn.Module):
    """Cross-entropy between the centred, sharpened teacher distribution and the student distribution.

    For teacher global views ``t`` and student views ``s != t`` (Eq. 3):

        loss = mean_{pairs (t, s), batch} [ - sum_k softmax((g_t - c) / T_t)_k * log softmax(g_s / T_s)_k ]

    The centre ``c`` (Eq. 4) is an EMA of the teacher's batch mean, ``c <- m c + (1 - m) mean(g_t)``, where the mean
    is taken over the teacher outputs of *all* processes (all-reduced), so N processes behave like one process with
    the N-times batch.

    Args:
        out_dim: number of prototypes K.
        student_temperature: T_s (0.1 in the paper).
        center_momentum: m (0.9 in the paper).

    Inputs to ``forward``:
        student_logits: ``(num_student_views * batch, K)``, views stacked view-major (all images of view 0 first).
        teacher_logits: ``(num_global_views * batch, K)``, the teacher's outputs on the global views, same order as
            the first ``num_global_views`` student views.
        num_global_views: number of teacher (global) views; they are also the student's first views.
        teacher_temperature: T_t for this step (scheduled by the caller; 0.04 -> 0.07 warm-up in the paper).

    Related: the centre is what prevents collapse to one prototype, the low teacher temperature what prevents the
    uniform collapse; watch ``teacher_entropy`` (near log K: uniform collapse, near 0: one-prototype collapse).
    """

    def __init__(self, out_dim: int, student_temperature: float = 0.1, center_momentum: float = 0.9):
        super().__init__()
        if student_temperature <= 0:
            raise ValueError(f"student_temperature must be > 0, got {student_temperature}")
        if not 0 <= center_momentum < 1:
            raise ValueError(f"center_momentum must be in [0, 1), got {center_momentum}")
        self.student_temperature = student_temperature
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def forward(
        self,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor,
        num_global_views: int,
        teacher_temperature: float,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        num_classes = self.center.shape[-1]
        if student_logits.shape[-1] != num_classes or teacher_logits.shape[-1] != num_classes:
            raise ValueError(
                f"logits must have {num_classes} columns (the head's out_dim), got student "
                f"{tuple(student_logits.shape)} and teacher {tuple(teacher_logits.shape)}"
            )
        if teacher_temperature <= 0:
            raise ValueError(f"teacher_temperature must be > 0, got {teacher_temperature}")
        if teacher_logits.shape[0] % num_global_views or student_logits.shape[0] % (
            teacher_logits.shape[0] // max(num_global_views, 1)
        ):
            raise ValueError(
                f"{teacher_logits.shape[0]} teacher rows are not {num_global_views} views of one batch, or "
                f"{student_logits.shape[0]} student rows are not a whole number of views of it"
            )
        teacher_logits = teacher_logits.detach()
        teacher_probs = softmax((teacher_logits - self.center) / teacher_temperature, dim=-1)
        student_log_probs = log_softmax(student_logits / self.student_temperature, dim=-1)

        # Views are stacked view-major: row v * batch + i is view v of image i.
        batch = teacher_logits.shape[0] // num_global_views
        teacher_views = teacher_probs.view(num_global_views, batch, -1)
        student_views = student_log_probs.view(-1, batch, num_classes)
        if student_views.shape[0] < 2:
            raise ValueError("DINO needs at least two views per image (two global crops)")

        # sum over pairs (t, s != t) of -q_t . log p_s = (sum_t q_t) . (sum_s log p_s) - sum_t q_t . log p_t
        all_pairs = (teacher_views.sum(0) * student_views.sum(0)).sum()
        same_view = (teacher_views * student_views[:num_global_views]).sum()
        num_pairs = num_global_views * student_views.shape[0] - num_global_views
        loss = -(all_pairs - same_view) / (num_pairs * batch)

        with torch.no_grad():
            entropy = -(teacher_probs * torch.log(teacher_probs.clamp_min(1e-12))).sum(-1).mean()
            stats = {"teacher_entropy": entropy, "teacher_student_kl": loss.detach() - entropy}
            if self.training:
                self.update_center(teacher_logits)
        return loss, stats

    @torch.no_grad()
    def update_center(self, teacher_logits: torch.Tensor) -> None:
        """EMA of the teacher's batch mean over all processes (DINO Eq. 4)."""
        batch_sum = all_reduce_sum(teacher_logits.sum(dim=0, keepdim=True).float())
        batch_center = batch_sum / (teacher_logits.shape[0] * world_size())
        self.center.mul_(self.center_momentum).add_(batch_center, alpha=1 - self.center_momentum)

