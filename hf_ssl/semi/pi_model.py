"""The Pi-model (Laine & Aila 2017, "Temporal Ensembling for Semi-Supervised Learning", arXiv:1610.02242, §2.1).

Each unlabelled example goes through the classifier twice, under two independent draws of the augmentation (and of
dropout where the classifier has it); the two softmax outputs must agree:

    loss = CE(labelled) + w(t) mean_{b, c} (softmax f(view_1(u))_bc - softmax f(view_2(u))_bc)^2

with ``w(t)`` ramped up by ``exp(-5 (1 - t)^2)`` (§3.1). The second prediction is the target (no gradient through it),
as in the common implementations (USB's ``pimodel``); the paper back-propagates through both. Defaults: ``mu = 1``,
``w = 10`` over a ramp-up of 40 % of training (USB's CIFAR settings; the paper's ``w_max = 100 M / N`` counts the
labelled share).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..losses.consistency import SoftmaxMSELoss
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
class PiModelConfig(SemiSupervisedConfig):
    """The Pi-model's settings (no EMA by default: the paper evaluates the trained network)."""

    method = "pi_model"
    unlabelled_views = ("weak", "weak")

    unlabelled_batch_ratio: int = 1
    unsupervised_weight: float = 10.0
    rampup_fraction: float = 0.4


class PiModel(SemiSupervisedMethod):
    """The Pi-model over any transformers classifier; see the module docstring."""

    config_class = PiModelConfig
    paper = "Laine & Aila 2017. Temporal Ensembling for Semi-Supervised Learning. arXiv:1610.02242"

    def __init__(self, config: PiModelConfig | None = None, **settings):
        super().__init__(config, **settings)
        self.consistency = SoftmaxMSELoss()

    def compute_loss(
        self, model: nn.Module, labelled: dict[str, torch.Tensor], unlabelled: dict[str, Any], progress: TrainingProgress
    ) -> SemiSupervisedOutput:
        inputs, labels = split_labels(labelled)
        first, second = unlabelled["views"]
        logits_labelled, logits_first, logits_second = classifier_logits(
            model, [inputs, first, second], targets_only=(2,))
        supervised = self.supervised_loss(logits_labelled, labels)
        unsupervised = self.consistency(logits_first, logits_second.detach())
        return self.combine(supervised, unsupervised, progress, self.diagnostics(
            prediction_labels(logits_second), unlabelled.get("audit_labels")))
