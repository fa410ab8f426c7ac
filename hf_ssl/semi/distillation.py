"""Knowledge distillation (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network",
arXiv:1503.02531) from any classifier teacher to any student classifier of the same classes, on labelled and
unlabelled data.

The teacher is frozen; its softened predictions on each unlabelled example are the student's targets:

    loss = w_s CE(labelled) + lambda_u T^2 mean_b KL(softmax(teacher(u_b) / T) || softmax(student(u_b) / T))

With ``supervised_weight = 0`` and the unlabelled set only, this is SimCLRv2's third step (Chen et al. 2020, "Big
Self-Supervised Models are Strong Semi-Supervised Learners", arXiv:2006.10029, §2, Eq. 3): a fine-tuned big model
distilled into a small one without labels. Teacher and student see the same view of an example (``weak``), so they
must take the same inputs: the same image size and normalisation, or the same tokenizer, or the same feature
extractor.

The teacher is given by path or Hub id (``teacher``, loaded with the ``AutoModelFor*Classification`` class of the
student's task) or as a model (``Distillation(teacher_model=...)``). It is not part of the checkpoints: a resumed run
loads it again from ``teacher``. Defaults: ``T = 2`` (Hinton et al. report temperatures from 2 to 20; 2 to 4 is
common for classifiers), ``lambda_u = 1``, ``w_s = 1``, ``mu = 1``, no EMA.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import (
    AutoModelForAudioClassification,
    AutoModelForImageClassification,
    AutoModelForSequenceClassification,
)

from ..losses.consistency import DistillationLoss
from ..schedules import TrainingProgress
from .base import (
    SemiSupervisedConfig,
    SemiSupervisedMethod,
    SemiSupervisedOutput,
    classifier_logits,
    prediction_labels,
    split_labels,
)

#: The Auto classes a teacher is loaded with: the first whose mapping holds the student's class.
CLASSIFIER_AUTO_CLASSES = (AutoModelForImageClassification, AutoModelForSequenceClassification,
                           AutoModelForAudioClassification)


@dataclass
class DistillationConfig(SemiSupervisedConfig):
    """Distillation's settings. teacher: path or Hub id of the teacher classifier (or pass ``teacher_model=``).
    temperature: ``T``. supervised_weight: ``w_s``, the weight of the label loss (0: distillation only)."""

    method = "distillation"
    unlabelled_views = ("weak",)

    unlabelled_batch_ratio: int = 1
    unsupervised_weight: float = 1.0
    teacher: str | None = None
    temperature: float = 2.0
    supervised_weight: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.supervised_weight < 0:
            raise ValueError(f"supervised_weight must be >= 0, got {self.supervised_weight}")


class Distillation(SemiSupervisedMethod):
    """Knowledge distillation into any transformers classifier; see the module docstring."""

    config_class = DistillationConfig
    paper = "Hinton, Vinyals & Dean 2015. Distilling the Knowledge in a Neural Network. arXiv:1503.02531"

    def __init__(self, config: DistillationConfig | None = None, *, teacher_model: nn.Module | None = None,
                 **settings):
        super().__init__(config, **settings)
        self.distillation = DistillationLoss(self.config.temperature)
        # Kept outside the module tree (no state_dict entry, no optimizer group): the teacher is an input, not state.
        object.__setattr__(self, "teacher_model", teacher_model)

    def setup(self, model: nn.Module, *, num_unlabelled: int, labelled_class_counts: torch.Tensor | None = None) -> None:
        super().setup(model, num_unlabelled=num_unlabelled, labelled_class_counts=labelled_class_counts)
        attach_teacher(self, model)

    def compute_loss(
        self, model: nn.Module, labelled: dict[str, torch.Tensor], unlabelled: dict[str, Any], progress: TrainingProgress
    ) -> SemiSupervisedOutput:
        inputs, labels = split_labels(labelled)
        (view,) = unlabelled["views"]
        logits_labelled, logits_student = classifier_logits(model, [inputs, view])
        with torch.no_grad():
            logits_teacher = self.teacher_model.eval()(**view).logits
        supervised = self.config.supervised_weight * self.supervised_loss(logits_labelled, labels)
        unsupervised = self.distillation(logits_student, logits_teacher)
        return self.combine(supervised, unsupervised, progress, self.diagnostics(
            prediction_labels(logits_teacher), unlabelled.get("audit_labels")))


def attach_teacher(method: SemiSupervisedMethod, model: nn.Module) -> None:
    """Give ``method`` its frozen teacher (``method.teacher_model``, else loaded from ``method.config.teacher``), in
    evaluation mode on the student's device, outside the module tree (no state_dict entry, no optimizer group: the
    teacher is an input, not state). Refuses a teacher of another class count."""
    teacher = method.teacher_model if method.teacher_model is not None else load_teacher(method.config.teacher, model)
    if int(teacher.config.num_labels) != method.num_classes:
        raise ValueError(f"the teacher predicts {teacher.config.num_labels} classes and the student "
                         f"{method.num_classes}; use a teacher classifier of the same classes")
    teacher.requires_grad_(False)
    object.__setattr__(method, "teacher_model", teacher.to(next(model.parameters()).device).eval())


def load_teacher(teacher: str | None, student: nn.Module) -> nn.Module:
    """The teacher classifier at ``teacher`` (path or Hub id), with the Auto class of the student's task."""
    if not teacher:
        raise ValueError("distillation needs a teacher: --teacher <path or Hub id of a classifier> (or, in Python, "
                         "Distillation(teacher_model=...))")
    config_class = type(student.config)
    for auto_class in CLASSIFIER_AUTO_CLASSES:
        mapping = auto_class._model_mapping  # config class -> model class of that task
        if config_class in mapping and mapping[config_class] is type(student):
            return auto_class.from_pretrained(teacher)
    raise ValueError(f"the student {type(student).__name__} is not an image, sequence or audio classifier; pass the "
                     "teacher as Distillation(teacher_model=...)")
