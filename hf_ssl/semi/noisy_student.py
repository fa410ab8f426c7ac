"""Noisy Student (Xie et al. 2020, "Self-training with Noisy Student improves ImageNet classification", CVPR,
arXiv:1911.04252, Algorithm 1), one round: a fixed teacher pseudo-labels the unlabelled examples on their clean(er)
view, and a noised student learns from the labels and the pseudo-labels; :func:`hf_ssl.jobs.rounds.run_rounds`
repeats it, each student becoming the next round's teacher.

    q_i = softmax(teacher(weak(u_i)))   once per example (the pseudo-label memory), kept where max q_i >= c
    l_u = sum_{b kept} w_b CE(q_b or argmax q_b, student(strong(u_b))) / sum_{b kept} w_b
    loss = CE(labelled) + lambda_u l_u

Noise on the student: the strong view (RandAugment + Cutout on images; masks on audio; TF-IDF replacement on text),
and the classifier's own dropout / stochastic depth where its config has them (e.g. ``--encoder_config_overrides
'{"hidden_dropout_prob": 0.1}'``); the teacher runs in evaluation mode, un-noised, as the paper requires.

The teacher labels each unlabelled example the first time it is drawn (for the first unlabelled epoch; the paper
labels the whole set before training, which gives the same labels) and the memory (``pseudo_labels`` ``(N, K)``,
``pseudo_labelled`` ``(N,)``) is method state, so every checkpoint of a round holds its pseudo-labels and a resumed
round reuses them. With ``class_balance`` each kept example is weighted by ``n / (K n_c)`` (``n_c``: kept pseudo-labels
of its class so far), so each class weighs the same, where the paper duplicates images of rare classes and keeps the
most confident of frequent ones: a re-weighting instead of a re-sampling, since the stream is sampled uniformly.

Defaults: soft pseudo-labels, confidence 0.3 (the paper's ImageNet filter), ``lambda_u = 1``, ``mu = 3``, no EMA.
The teacher is ``teacher`` (a path or Hub id, loaded as :mod:`hf_ssl.semi.distillation` does) or ``teacher_model=``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..distributed import all_gather_no_grad
from ..losses.consistency import PseudoLabels
from ..schedules import TrainingProgress
from .base import (
    SemiSupervisedConfig,
    SemiSupervisedMethod,
    SemiSupervisedOutput,
    classifier_logits,
    split_labels,
)
from .distillation import attach_teacher


@dataclass
class NoisyStudentConfig(SemiSupervisedConfig):
    """Noisy Student's settings (see the module docstring). teacher: path or Hub id of the teacher classifier.
    soft_pseudo_labels: the teacher's distribution (True) or its argmax. confidence_threshold: ``c``. class_balance:
    weigh each class's pseudo-labels equally. rounds: how many teacher -> student rounds ``hf-ssl finetune`` runs (each
    student teaches the next; see :func:`hf_ssl.jobs.rounds.run_rounds`)."""

    method = "noisy_student"
    unlabelled_views = ("weak", "strong")

    unlabelled_batch_ratio: int = 3
    unsupervised_weight: float = 1.0
    teacher: str | None = None
    soft_pseudo_labels: bool = True
    confidence_threshold: float = 0.3
    class_balance: bool = False
    rounds: int = 1

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= self.confidence_threshold <= 1.0:
            raise ValueError(f"confidence_threshold must be in [0, 1], got {self.confidence_threshold}")
        if self.rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {self.rounds}")


class NoisyStudent(SemiSupervisedMethod):
    """One Noisy Student round over any transformers classifier; see the module docstring."""

    config_class = NoisyStudentConfig
    paper = ("Xie et al. 2020. Self-training with Noisy Student improves ImageNet classification. "
             "arXiv:1911.04252")

    def __init__(self, config: NoisyStudentConfig | None = None, *, teacher_model: nn.Module | None = None,
                 **settings):
        super().__init__(config, **settings)
        object.__setattr__(self, "teacher_model", teacher_model)  # an input, not state (as in Distillation)

    def setup(self, model: nn.Module, *, num_unlabelled: int, labelled_class_counts: torch.Tensor | None = None) -> None:
        super().setup(model, num_unlabelled=num_unlabelled, labelled_class_counts=labelled_class_counts)
        attach_teacher(self, model)
        device = next(model.parameters()).device
        if not hasattr(self, "pseudo_labels"):
            self.register_buffer("pseudo_labels", torch.zeros(num_unlabelled, self.num_classes, device=device))
            self.register_buffer("pseudo_labelled", torch.zeros(num_unlabelled, dtype=torch.bool, device=device))

    def compute_loss(
        self, model: nn.Module, labelled: dict[str, torch.Tensor], unlabelled: dict[str, Any], progress: TrainingProgress
    ) -> SemiSupervisedOutput:
        inputs, labels = split_labels(labelled)
        clean, noised = unlabelled["views"]
        indices = unlabelled["indices"].to(self.pseudo_labels.device)
        targets = self.label(indices, clean)
        logits_labelled, logits_student = classifier_logits(model, [inputs, noised])
        supervised = self.supervised_loss(logits_labelled, labels)
        confidence, hard = targets.max(dim=-1)
        kept = (confidence >= self.config.confidence_threshold).float()
        weights = kept * self.class_weights()[hard] if self.config.class_balance else kept
        target = targets if self.config.soft_pseudo_labels else hard
        per_example = F.cross_entropy(logits_student.float(), target, reduction="none")
        unsupervised = (weights * per_example).sum() / weights.sum().clamp(min=1e-12)
        return self.combine(supervised, unsupervised, progress, self.diagnostics(
            PseudoLabels(hard, confidence, kept), unlabelled.get("audit_labels")))

    @torch.no_grad()
    def label(self, indices: torch.Tensor, clean_view: dict[str, torch.Tensor]) -> torch.Tensor:
        """The teacher's distributions ``(B, K)`` for ``indices``: from the memory, after the teacher has labelled
        the examples it has not seen yet (those of the whole global batch, gathered, so every process's memory is the
        same)."""
        new = ~self.pseudo_labelled[indices]
        predictions = self.teacher_model.eval()(**clean_view).logits.float().softmax(dim=-1) if bool(new.any()) \
            else None
        if self.training:
            fresh = all_gather_no_grad(new.long()).bool()
            if bool(fresh.any()):
                gathered_indices = all_gather_no_grad(indices)
                if predictions is None:  # this process's examples were all labelled, another's were not
                    predictions = self.pseudo_labels[indices]
                gathered = all_gather_no_grad(predictions)
                self.pseudo_labels[gathered_indices[fresh]] = gathered[fresh]
                self.pseudo_labelled[gathered_indices[fresh]] = True
        memory = self.pseudo_labels[indices]
        return torch.where(new[:, None], predictions, memory) if predictions is not None else memory

    @torch.no_grad()
    def class_weights(self) -> torch.Tensor:
        """``n / (K n_c)`` per class ``c`` over the confident pseudo-labels so far (1 for a class with none)."""
        confidence, hard = self.pseudo_labels[self.pseudo_labelled].max(dim=-1)
        counts = torch.bincount(hard[confidence >= self.config.confidence_threshold],
                                minlength=self.num_classes).float()
        return torch.where(counts > 0, counts.sum() / (self.num_classes * counts.clamp(min=1)), torch.ones_like(counts))
