"""FixMatch (Sohn et al. 2020, "FixMatch: Simplifying Semi-Supervised Learning with Consistency and Confidence",
arXiv:2001.07685), with distribution alignment (ReMixMatch, Berthelot et al. 2020, arXiv:1911.09785, §3.2) and
FlexMatch's class-wise thresholds (Zhang et al. 2021, "FlexMatch: Boosting Semi-Supervised Learning with Curriculum
Pseudo Labeling", arXiv:2110.08263, §3.2) as options.

Per unlabelled example, the prediction on the weak view gives a hard pseudo-label, kept where its confidence reaches
``tau``, and the model learns to predict it on the strong view (Eq. 4):

    l_u = 1 / (mu B) sum_b 1[max q_b >= tau] CE(argmax q_b, p(y | strong(u_b))),     q_b = p(y | weak(u_b)), no gradient
    loss = l_s + lambda_u l_u

Defaults are the paper's: ``mu = 7``, ``lambda_u = 1``, ``tau = 0.95``, and an EMA of the weights (decay 0.999) for
evaluation and publishing. Labelled and strong batches go through the classifier in one forward pass where their
inputs can be concatenated; the weak batch, which only gives the pseudo-labels, joins that pass in a model with
BatchNorm (whose statistics then see the joint batch, as in the reference implementation) and otherwise goes through a
no-grad pass of its own, which gives the same loss and gradients at less cost (see ``classifier_logits``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..distributed import all_gather_no_grad
from ..losses.consistency import PseudoLabelLoss
from ..schedules import TrainingProgress
from .base import (
    SemiSupervisedConfig,
    SemiSupervisedMethod,
    SemiSupervisedOutput,
    classifier_logits,
    global_mean,
    split_labels,
)


@dataclass
class FixMatchConfig(SemiSupervisedConfig):
    """FixMatch's settings (defaults: the paper's, §4 and Appendix B.1).

    threshold: ``tau``, the confidence a pseudo-label needs. distribution_alignment: scale the weak-view predictions
    by ``p(y) / p~(y)`` before the pseudo-labels are taken, with ``p(y)`` the labelled class distribution and
    ``p~(y)`` a running mean (momentum ``distribution_alignment_momentum``) of the predictions on unlabelled data
    (ReMixMatch). classwise_thresholds: FlexMatch's curriculum: class ``c`` needs ``tau * M(beta_c)``, ``M(x) = x /
    (2 - x)``, with ``beta_c`` the share of unlabelled examples last pseudo-labelled ``c`` with confidence ``>= tau``
    over the largest such share; with ``threshold_warmup`` the not-yet-labelled examples count in that largest share.
    """

    method = "fixmatch"
    unlabelled_views = ("weak", "strong")

    unlabelled_batch_ratio: int = 7
    unsupervised_weight: float = 1.0
    ema_decay: float | None = 0.999
    threshold: float = 0.95
    distribution_alignment: bool = False
    distribution_alignment_momentum: float = 0.999
    classwise_thresholds: bool = False
    threshold_warmup: bool = True

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")
        if not 0.0 <= self.distribution_alignment_momentum < 1.0:
            raise ValueError(f"distribution_alignment_momentum must be in [0, 1), got {self.distribution_alignment_momentum}")


class FixMatch(SemiSupervisedMethod):
    """FixMatch over any transformers classifier; see the module docstring.

    State in the checkpoint: the EMA classifier; with distribution alignment, ``class_prior`` (labelled class
    distribution) and ``prediction_mean`` (running mean of unlabelled predictions); with class-wise thresholds,
    ``selected_labels`` ``(num_unlabelled,)``, each unlabelled example's last confident pseudo-label (-1: none yet).
    """

    config_class = FixMatchConfig
    paper = ("Sohn et al. 2020. FixMatch: Simplifying Semi-Supervised Learning with Consistency and Confidence. "
             "arXiv:2001.07685")

    def __init__(self, config: FixMatchConfig | None = None, **settings):
        super().__init__(config, **settings)
        self.pseudo_label_loss = PseudoLabelLoss(self.config.threshold)

    def setup(self, model: nn.Module, *, num_unlabelled: int, labelled_class_counts: torch.Tensor | None = None) -> None:
        super().setup(model, num_unlabelled=num_unlabelled, labelled_class_counts=labelled_class_counts)
        device = next(model.parameters()).device
        classes = self.num_classes
        if self.config.distribution_alignment and not hasattr(self, "class_prior"):
            prior = (labelled_class_counts.float() if labelled_class_counts is not None else torch.ones(classes))
            self.register_buffer("class_prior", (prior / prior.sum()).to(device))
            self.register_buffer("prediction_mean", torch.full((classes,), 1.0 / classes, device=device))
        if self.config.classwise_thresholds and not hasattr(self, "selected_labels"):
            self.register_buffer("selected_labels", torch.full((num_unlabelled,), -1, dtype=torch.long, device=device))

    def compute_loss(
        self, model: nn.Module, labelled: dict[str, torch.Tensor], unlabelled: dict[str, Any], progress: TrainingProgress
    ) -> SemiSupervisedOutput:
        inputs, labels = split_labels(labelled)
        weak, strong = unlabelled["views"]
        logits_labelled, logits_weak, logits_strong = classifier_logits(
            model, [inputs, weak, strong], targets_only=(1,))
        supervised = self.supervised_loss(logits_labelled, labels)
        with torch.no_grad():
            probabilities = logits_weak.detach().float().softmax(dim=-1)
            if self.config.distribution_alignment:
                probabilities = self._align(probabilities)
        unsupervised, pseudo = self.pseudo_label_loss(
            logits_strong, target_probabilities=probabilities, threshold=self._thresholds()
        )
        if self.config.classwise_thresholds and self.training:
            self._remember(unlabelled["indices"], pseudo.labels, pseudo.confidence)
        return self.combine(supervised, unsupervised, progress, self.diagnostics(pseudo, unlabelled.get("audit_labels")))

    # ----------------------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _align(self, probabilities: torch.Tensor) -> torch.Tensor:
        """ReMixMatch's distribution alignment: ``normalise(q * p(y) / p~(y))``, then update ``p~`` (over processes)."""
        if self.training:
            momentum = self.config.distribution_alignment_momentum
            self.prediction_mean.mul_(momentum).add_(global_mean(probabilities), alpha=1.0 - momentum)
        aligned = probabilities * self.class_prior / self.prediction_mean.clamp(min=1e-12)
        return aligned / aligned.sum(dim=-1, keepdim=True)

    @torch.no_grad()
    def _thresholds(self) -> float | torch.Tensor:
        """``tau``, or FlexMatch's class-wise ``tau * M(beta_c)``."""
        if not self.config.classwise_thresholds:
            return self.config.threshold
        counts = torch.bincount(self.selected_labels + 1, minlength=self.num_classes + 1).float()
        unused, per_class = counts[0], counts[1:]
        # beta_c = sigma_c / max(max_c sigma_c, unused) with warm-up, else / max_c sigma_c; all 0 while nothing has been
        # confidently labelled (FlexMatch's code then keeps its zero-initialised estimates: every pseudo-label counts).
        largest = torch.maximum(per_class.max(), unused) if self.config.threshold_warmup else per_class.max()
        beta = per_class / largest.clamp(min=1)
        return self.config.threshold * beta / (2.0 - beta)

    @torch.no_grad()
    def _remember(self, indices: torch.Tensor, labels: torch.Tensor, confidence: torch.Tensor) -> None:
        """Record the confident pseudo-labels of this step's unlabelled examples, from every process."""
        indices, labels, confidence = (all_gather_no_grad(tensor) for tensor in (indices, labels, confidence))
        confident = confidence >= self.config.threshold
        self.selected_labels[indices[confident]] = labels[confident]
