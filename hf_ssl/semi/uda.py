"""UDA (Xie et al. 2020, "Unsupervised Data Augmentation for Consistency Training", NeurIPS, arXiv:1904.12848), with
training-signal annealing (TSA, §3.2) as an option.

The prediction on the weak view of an unlabelled example, sharpened with temperature ``T`` and kept where its
confidence reaches ``beta``, is a soft target for the prediction on the strong view (§3.2, Appendix C):

    l_u = 1 / (mu B) sum_b 1[max q_b >= beta] KL(sharpen(q_b, T) || p(y | strong(u_b))),   q_b = p(y | weak(u_b)), no gradient
    loss = l_s + lambda_u l_u

Unlike FixMatch, the target stays a distribution (sharpened, not hardened to its argmax) and the threshold is lower.
On text, the strong view is UDA's TF-IDF word replacement (the text job's ``tfidf`` strong view, computed offline
from the unlabelled corpus); back-translation, the paper's other text augmentation, needs a translation model.

With TSA, a labelled example whose correct-class probability already exceeds ``eta_t`` leaves the supervised loss, so
the few labels are not memorised before the unlabelled signal builds up: ``eta_t = alpha_t (1 - 1/K) + 1/K`` with
``alpha_t`` = ``t/T`` (linear), ``1 - exp(-5 t/T)`` (log) or ``exp(5 (t/T - 1))`` (exp); the supervised loss is the
mean over the examples kept.

Defaults: ``T = 0.4``, ``beta = 0.8``, ``lambda_u = 1`` (the paper's CIFAR-10 settings), ``mu = 7`` (its 7x larger
unlabelled batch), no TSA, and an EMA of the weights (0.999) evaluated and published, as for FixMatch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..losses.consistency import SharpenedKLLoss
from ..schedules import TrainingProgress
from .base import (
    SemiSupervisedConfig,
    SemiSupervisedMethod,
    SemiSupervisedOutput,
    classifier_logits,
    split_labels,
)

#: ``alpha_t`` of each training-signal-annealing schedule, as a function of the training fraction ``t/T`` in [0, 1].
TSA_SCHEDULES = {
    "linear": lambda fraction: fraction,
    "log": lambda fraction: 1.0 - math.exp(-5.0 * fraction),
    "exp": lambda fraction: math.exp(5.0 * (fraction - 1.0)),
}


@dataclass
class UDAConfig(SemiSupervisedConfig):
    """UDA's settings (defaults: the paper's CIFAR-10 ones, see the module docstring).

    temperature: ``T``, the sharpening of the weak-view target. threshold: ``beta``, the confidence (before
    sharpening) a target needs. tsa_schedule: ``"none"``, ``"linear"``, ``"log"`` or ``"exp"``.
    """

    method = "uda"
    unlabelled_views = ("weak", "strong")

    unlabelled_batch_ratio: int = 7
    unsupervised_weight: float = 1.0
    ema_decay: float | None = 0.999
    temperature: float = 0.4
    threshold: float = 0.8
    tsa_schedule: str = "none"

    def __post_init__(self):
        super().__post_init__()
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")
        if self.tsa_schedule != "none" and self.tsa_schedule not in TSA_SCHEDULES:
            raise ValueError(f"tsa_schedule must be 'none' or one of {sorted(TSA_SCHEDULES)}, got {self.tsa_schedule!r}")
        if self.tsa_schedule != "none" and (self.mixup_alpha > 0 or self.cutmix_alpha > 0):
            raise ValueError("training-signal annealing needs each labelled example's class: use tsa_schedule none with "
                             "mixup / CutMix, or leave mixup_alpha and cutmix_alpha at 0")


def tsa_threshold(step: int, max_steps: int, num_classes: int, schedule: str) -> float:
    """``eta_t = alpha_t (1 - 1/K) + 1/K`` at ``step`` of ``max_steps`` (1.0, i.e. nothing annealed, for ``"none"``)."""
    if schedule == "none":
        return 1.0
    fraction = min(max(step / max(max_steps, 1), 0.0), 1.0)
    return TSA_SCHEDULES[schedule](fraction) * (1.0 - 1.0 / num_classes) + 1.0 / num_classes


class UDA(SemiSupervisedMethod):
    """UDA over any transformers classifier; see the module docstring."""

    config_class = UDAConfig
    paper = "Xie et al. 2020. Unsupervised Data Augmentation for Consistency Training. arXiv:1904.12848"

    def __init__(self, config: UDAConfig | None = None, **settings):
        super().__init__(config, **settings)
        self.consistency = SharpenedKLLoss(self.config.temperature, self.config.threshold)

    def compute_loss(
        self, model: nn.Module, labelled: dict[str, torch.Tensor], unlabelled: dict[str, Any], progress: TrainingProgress
    ) -> SemiSupervisedOutput:
        inputs, labels = split_labels(labelled)
        weak, strong = unlabelled["views"]
        logits_labelled, logits_weak, logits_strong = classifier_logits(
            model, [inputs, weak, strong], targets_only=(1,))
        supervised, kept = self.annealed_supervised_loss(logits_labelled, labels, progress)
        unsupervised, targets = self.consistency(logits_strong, logits_weak)
        diagnostics = self.diagnostics(targets, unlabelled.get("audit_labels"))
        diagnostics["tsa_kept_rate"] = kept
        return self.combine(supervised, unsupervised, progress, diagnostics)

    def annealed_supervised_loss(
        self, logits: torch.Tensor, labels: torch.Tensor, progress: TrainingProgress
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy over the labelled examples whose correct-class probability is at most ``eta_t`` (all of them
        without TSA), averaged over those kept; returns ``(loss, share kept)``."""
        out_of_range = labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= logits.shape[-1])
        if self.config.tsa_schedule == "none" or out_of_range:  # (labels out of range: refused there, with the fix)
            return self.supervised_loss(logits, labels), torch.tensor(1.0)
        eta = tsa_threshold(progress.step, progress.max_steps, logits.shape[-1], self.config.tsa_schedule)
        per_example = F.cross_entropy(logits.float(), labels, reduction="none", label_smoothing=self.label_smoothing)
        with torch.no_grad():
            correct_probability = logits.detach().float().softmax(dim=-1).gather(1, labels[:, None]).squeeze(1)
            mask = (correct_probability <= eta).float()
        return (per_example * mask).sum() / mask.sum().clamp(min=1.0), mask.mean()
