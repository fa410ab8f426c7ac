"""Temporal ensembling (Laine & Aila 2017, "Temporal Ensembling for Semi-Supervised Learning", ICLR,
arXiv:1610.02242, §2.2).

Each unlabelled example keeps an exponential moving average of the classifier's past predictions on it, ``Z_i <-
alpha Z_i + (1 - alpha) z_i`` with ``z_i = softmax(f(x_i))``; the bias-corrected ``Z_i / (1 - alpha^{t_i})``
(``t_i``: the updates example ``i`` has had) is the target of the current prediction:

    l_u = mean_{b kept, c} (softmax(f(x_b))_c - Z_b,c / (1 - alpha^{t_b}))^2,   kept: examples with t_b >= 1
    loss = CE(labelled) + w(t) l_u

The paper updates ``Z`` once per epoch from the predictions of that epoch; here each example's ``Z`` is updated at
each visit, after its target has been read, which is the same when every example is visited once per epoch (the
unlabelled stream's sampler) and needs no epoch-sized prediction store. The memory ``Z`` ``(N, K)`` and the counts
``t`` ``(N,)`` are buffers of the method, so they are in every checkpoint (exact resume), and every process applies
the updates of the whole global batch (indices and predictions gathered), so the memory is the same on every rank.

Defaults: ``alpha = 0.6``, ``w = 30`` with the sigmoid ramp-up ``exp(-5 (1 - t)^2)`` over 40 % of training (the paper:
``w_max = 30`` on CIFAR-10 with its label share, a ramp-up over 80 of 300 epochs), ``mu = 1``; the one view's
augmentation and dropout are the noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..distributed import all_gather_no_grad
from ..schedules import TrainingProgress
from .base import (
    SemiSupervisedConfig,
    SemiSupervisedMethod,
    SemiSupervisedOutput,
    classifier_logits,
    prediction_labels,
    split_labels,
)


@dataclass
class TemporalEnsemblingConfig(SemiSupervisedConfig):
    """Temporal ensembling's settings. ensemble_momentum: ``alpha``, the weight of the past predictions."""

    method = "temporal_ensembling"
    unlabelled_views = ("weak",)

    unlabelled_batch_ratio: int = 1
    unsupervised_weight: float = 30.0
    rampup_fraction: float = 0.4
    ensemble_momentum: float = 0.6

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= self.ensemble_momentum < 1.0:
            raise ValueError(f"ensemble_momentum must be in [0, 1), got {self.ensemble_momentum}")


class TemporalEnsembling(SemiSupervisedMethod):
    """Temporal ensembling over any transformers classifier; see the module docstring.

    State in the checkpoint: ``ensemble`` ``(num_unlabelled, num_classes)``, ``ensemble_updates``
    ``(num_unlabelled,)``.
    """

    config_class = TemporalEnsemblingConfig
    paper = "Laine & Aila 2017. Temporal Ensembling for Semi-Supervised Learning. arXiv:1610.02242"

    def setup(self, model: nn.Module, *, num_unlabelled: int, labelled_class_counts: torch.Tensor | None = None) -> None:
        super().setup(model, num_unlabelled=num_unlabelled, labelled_class_counts=labelled_class_counts)
        if not hasattr(self, "ensemble"):
            device = next(model.parameters()).device
            self.register_buffer("ensemble", torch.zeros(num_unlabelled, self.num_classes, device=device))
            self.register_buffer("ensemble_updates", torch.zeros(num_unlabelled, dtype=torch.long, device=device))

    def compute_loss(
        self, model: nn.Module, labelled: dict[str, torch.Tensor], unlabelled: dict[str, Any], progress: TrainingProgress
    ) -> SemiSupervisedOutput:
        inputs, labels = split_labels(labelled)
        (view,) = unlabelled["views"]
        logits_labelled, logits_unlabelled = classifier_logits(model, [inputs, view])
        supervised = self.supervised_loss(logits_labelled, labels)
        indices = unlabelled["indices"].to(self.ensemble.device)
        targets, kept = self.targets(indices)
        probabilities = logits_unlabelled.float().softmax(dim=-1)
        squared = ((probabilities - targets) ** 2).mean(dim=-1)
        unsupervised = (squared * kept).sum() / kept.sum().clamp(min=1.0)
        if self.training:
            self.remember(indices, probabilities.detach())
        diagnostics = self.diagnostics(prediction_labels(logits_unlabelled), unlabelled.get("audit_labels"))
        diagnostics["ensemble_kept_rate"] = kept.mean()
        return self.combine(supervised, unsupervised, progress, diagnostics)

    @torch.no_grad()
    def targets(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The bias-corrected ensemble predictions ``(B, K)`` of ``indices`` and a ``(B,)`` mask of the examples that
        have one (updated at least once)."""
        updates = self.ensemble_updates[indices]
        correction = 1.0 - self.config.ensemble_momentum ** updates.clamp(min=1).float()
        return self.ensemble[indices] / correction[:, None], (updates > 0).float()

    @torch.no_grad()
    def remember(self, indices: torch.Tensor, probabilities: torch.Tensor) -> None:
        """``Z_i <- alpha Z_i + (1 - alpha) z_i`` for every example of the global batch (gathered from every
        process). An example drawn twice in one global batch is updated once per draw, in order."""
        indices, probabilities = all_gather_no_grad(indices), all_gather_no_grad(probabilities)
        momentum = self.config.ensemble_momentum
        if indices.unique().numel() == indices.numel():  # the usual case: one vectorised update
            self.ensemble[indices] = momentum * self.ensemble[indices] + (1.0 - momentum) * probabilities
            self.ensemble_updates[indices] += 1
            return
        for index, prediction in zip(indices.tolist(), probabilities):
            self.ensemble[index] = momentum * self.ensemble[index] + (1.0 - momentum) * prediction
            self.ensemble_updates[index] += 1
