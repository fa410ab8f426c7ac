"""Pseudo-labelling (Lee 2013, "Pseudo-Label: The Simple and Efficient Semi-Supervised Learning Method for Deep
Neural Networks", ICML Workshop on Challenges in Representation Learning), with entropy minimisation (Grandvalet &
Bengio 2005, "Semi-supervised Learning by Entropy Minimization", NeurIPS) as an option.

The classifier's own prediction on an unlabelled example, hardened to its argmax, is a target for that example:

    loss = CE(labelled) + a(t) [ mean_b 1[max p_b >= tau] CE(argmax p_b, p_b) + w_H mean_b H(p_b) ]

``a(t)`` ramps up linearly over the first 40 % of training (Lee's ``alpha(t)`` ramps linearly; the share is USB's).
``tau = 0.95`` keeps confident pseudo-labels only, as USB's reference implementation (Wang et al. 2022); ``tau = 0``
is Lee's original, which labels every example.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..losses.consistency import EntropyLoss, PseudoLabelLoss
from ..schedules import TrainingProgress
from .base import (
    SemiSupervisedConfig,
    SemiSupervisedMethod,
    SemiSupervisedOutput,
    classifier_logits,
    split_labels,
)


@dataclass
class PseudoLabelConfig(SemiSupervisedConfig):
    """Pseudo-labelling's settings. entropy_weight: ``w_H``, the weight of the entropy term (0: none)."""

    method = "pseudo_label"
    unlabelled_views = ("weak",)

    unlabelled_batch_ratio: int = 1
    unsupervised_weight: float = 1.0
    rampup_fraction: float = 0.4
    rampup_shape: str = "linear"
    threshold: float = 0.95
    entropy_weight: float = 0.0

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")
        if self.entropy_weight < 0:
            raise ValueError(f"entropy_weight must be >= 0, got {self.entropy_weight}")


class PseudoLabel(SemiSupervisedMethod):
    """Pseudo-labelling over any transformers classifier; see the module docstring."""

    config_class = PseudoLabelConfig
    paper = ("Lee 2013. Pseudo-Label: The Simple and Efficient Semi-Supervised Learning Method for Deep Neural "
             "Networks. ICML 2013 Workshop on Challenges in Representation Learning")

    def __init__(self, config: PseudoLabelConfig | None = None, **settings):
        super().__init__(config, **settings)
        self.pseudo_label_loss = PseudoLabelLoss(self.config.threshold)
        self.entropy = EntropyLoss()

    def compute_loss(
        self, model: nn.Module, labelled: dict[str, torch.Tensor], unlabelled: dict[str, Any], progress: TrainingProgress
    ) -> SemiSupervisedOutput:
        inputs, labels = split_labels(labelled)
        (view,) = unlabelled["views"]
        logits_labelled, logits_unlabelled = classifier_logits(model, [inputs, view])
        supervised = self.supervised_loss(logits_labelled, labels)
        unsupervised, pseudo = self.pseudo_label_loss(logits_unlabelled, logits_unlabelled)
        if self.config.entropy_weight > 0:
            unsupervised = unsupervised + self.config.entropy_weight * self.entropy(logits_unlabelled)
        return self.combine(supervised, unsupervised, progress, self.diagnostics(pseudo, unlabelled.get("audit_labels")))
