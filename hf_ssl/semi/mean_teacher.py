"""Mean Teacher (Tarvainen & Valpola 2017, "Mean teachers are better role models: Weight-averaged consistency targets
improve semi-supervised deep learning results", arXiv:1703.01780).

The teacher is an exponential moving average of the student (parameters and BatchNorm buffers, as timm's
``ModelEmaV2``); the student is trained on the labels and to agree with the teacher's prediction on another noisy
view of each unlabelled example:

    loss = CE(labelled) + w(t) mean_{b, c} (softmax f_student(view_1(u))_bc - softmax f_teacher(view_2(u))_bc)^2

``w(t)`` ramps up with ``exp(-5 (1 - t)^2)`` (§3 / Appendix). The published model is the teacher. Defaults: EMA
decay 0.999 (the paper's after its ramp-up), ``mu = 1``, ``w = 50`` over a ramp-up of 40 % of training (USB's
CIFAR settings, Wang et al. 2022, for the MSE of softmax outputs averaged over classes used here).

USB's implementation computes this consistency on the student's own two predictions while its EMA teacher stays
unused, so its loss misses the teacher entirely (USB issues #102, #226); here the teacher's output is the target, and
a test checks that the consistency term is non-zero and moves the student. The teacher runs in evaluation mode (no
dropout, BatchNorm from its averaged statistics); the two views supply the noise.
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
class MeanTeacherConfig(SemiSupervisedConfig):
    """Mean Teacher's settings; ``ema_decay`` is the teacher's (it must be set: the teacher is the method)."""

    method = "mean_teacher"
    unlabelled_views = ("weak", "weak")

    unlabelled_batch_ratio: int = 1
    unsupervised_weight: float = 50.0
    rampup_fraction: float = 0.4
    ema_decay: float | None = 0.999

    def __post_init__(self):
        super().__post_init__()
        if self.ema_decay is None:
            raise ValueError("Mean Teacher needs ema_decay (the teacher is the EMA of the student), e.g. 0.999")


class MeanTeacher(SemiSupervisedMethod):
    """Mean Teacher over any transformers classifier; see the module docstring."""

    config_class = MeanTeacherConfig
    paper = ("Tarvainen & Valpola 2017. Mean teachers are better role models: Weight-averaged consistency targets "
             "improve semi-supervised deep learning results. arXiv:1703.01780")

    def __init__(self, config: MeanTeacherConfig | None = None, **settings):
        super().__init__(config, **settings)
        self.consistency = SoftmaxMSELoss()

    def compute_loss(
        self, model: nn.Module, labelled: dict[str, torch.Tensor], unlabelled: dict[str, Any], progress: TrainingProgress
    ) -> SemiSupervisedOutput:
        inputs, labels = split_labels(labelled)
        student_view, teacher_view = unlabelled["views"]
        logits_labelled, logits_student = classifier_logits(model, [inputs, student_view])
        with torch.no_grad():
            logits_teacher = self.ema_model(**teacher_view).logits
        supervised = self.supervised_loss(logits_labelled, labels)
        unsupervised = self.consistency(logits_student, logits_teacher)
        return self.combine(supervised, unsupervised, progress, self.diagnostics(
            prediction_labels(logits_teacher), unlabelled.get("audit_labels")))

