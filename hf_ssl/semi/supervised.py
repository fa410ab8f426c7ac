"""Supervised-only training on the labelled examples: the baseline every semi-supervised method must beat, on the
same classifier, labelled batches, weak view and budget (USB's ``fullysupervised`` on the labelled subset).

The unlabelled stream is still drawn (so the labelled batches are the very ones the other methods see at each step)
but gets no views and no loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..schedules import TrainingProgress
from .base import (
    SemiSupervisedConfig,
    SemiSupervisedMethod,
    SemiSupervisedOutput,
    split_labels,
)


@dataclass
class SupervisedOnlyConfig(SemiSupervisedConfig):
    """No unlabelled views and no unsupervised term; ``ema_decay`` optional (off by default)."""

    method = "supervised"
    unlabelled_views = ()

    unsupervised_weight: float = 0.0


class SupervisedOnly(SemiSupervisedMethod):
    """Cross-entropy on the weak view of the labelled batch only; see the module docstring."""

    config_class = SupervisedOnlyConfig
    paper = ""

    def compute_loss(
        self, model: nn.Module, labelled: dict[str, torch.Tensor], unlabelled: dict[str, Any], progress: TrainingProgress
    ) -> SemiSupervisedOutput:
        inputs, labels = split_labels(labelled)
        logits = model(**inputs).logits
        supervised = self.supervised_loss(logits, labels)
        return self.combine(supervised, supervised.new_zeros(()), progress, {})
