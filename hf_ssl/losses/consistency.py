"""The unsupervised objectives of the semi-supervised methods, on classifier logits ``(batch, num_classes)``.

- :class:`PseudoLabelLoss`: cross-entropy against hard pseudo-labels taken from another prediction, kept where its
  confidence reaches a threshold (pseudo-labelling, Lee 2013; FixMatch, Sohn et al. 2020, Eq. 4; FlexMatch's
  class-wise thresholds, Zhang et al. 2021).
- :class:`SoftmaxMSELoss`: squared distance between two softmax outputs (Pi-model, Laine & Aila 2017 §2.1; Mean
  Teacher, Tarvainen & Valpola 2017 §3).
- :class:`EntropyLoss`: the entropy of the predictions, minimised to push decision boundaries into low-density regions
  (Grandvalet & Bengio 2005).
- :class:`DistillationLoss`: a teacher's softened predictions as targets, with the ``T^2`` factor (Hinton et al. 2015).
- :class:`SharpenedKLLoss`: KL divergence from a sharpened, confidence-masked target distribution to the prediction
  (UDA, Xie et al. 2020, §3.2 and Appendix C).

Targets never carry gradients: pseudo-labels and teacher outputs are detached here, whatever the caller passes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass
class PseudoLabels:
    """What :class:`PseudoLabelLoss` decided per unlabelled example: ``labels`` ``(batch,)`` (argmax of the target
    distribution), ``confidence`` ``(batch,)`` (its probability), ``mask`` ``(batch,)`` float (1 where kept)."""

    labels: torch.Tensor
    confidence: torch.Tensor
    mask: torch.Tensor


class PseudoLabelLoss(nn.Module):
    """``mean_b [ mask_b * CE(logits_b, argmax p_b) ]`` with ``p = softmax(target_logits)`` (or the given target
    probabilities) and ``mask_b = [max p_b >= threshold_{argmax p_b}]``.

    The mean runs over the whole unlabelled batch, masked examples included (FixMatch, Eq. 4: ``1 / (mu B)``), so the
    loss shrinks as fewer pseudo-labels pass the threshold. ``threshold``: a float, or a ``(num_classes,)`` tensor of
    class-wise thresholds (FlexMatch). Returns ``(loss, PseudoLabels)``.
    """

    def __init__(self, threshold: float = 0.95):
        super().__init__()
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"the confidence threshold must be in [0, 1], got {threshold}")
        self.threshold = threshold

    def forward(
        self,
        logits: torch.Tensor,
        target_logits: torch.Tensor | None = None,
        *,
        target_probabilities: torch.Tensor | None = None,
        threshold: float | torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, PseudoLabels]:
        if (target_logits is None) == (target_probabilities is None):
            raise ValueError("pass exactly one of target_logits and target_probabilities")
        with torch.no_grad():
            probabilities = (
                target_probabilities.detach() if target_probabilities is not None
                else target_logits.detach().float().softmax(dim=-1)
            )
            confidence, labels = probabilities.max(dim=-1)
            cutoff = self.threshold if threshold is None else threshold
            if isinstance(cutoff, torch.Tensor):
                cutoff = cutoff.to(confidence.device)[labels]
            mask = (confidence >= cutoff).float()
        loss = (F.cross_entropy(logits.float(), labels, reduction="none") * mask).mean()
        return loss, PseudoLabels(labels, confidence, mask)


class SoftmaxMSELoss(nn.Module):
    """``mean_{b, c} (softmax(logits)_bc - softmax(target_logits)_bc)^2``: the consistency of the Pi-model and Mean
    Teacher (the reference code of Mean Teacher sums over classes and divides by their number: the same mean).
    ``target_logits`` are detached (the teacher / the other view is a target, not trained through)."""

    def forward(self, logits: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
        if logits.shape != target_logits.shape:
            raise ValueError(f"consistency needs logits of the same shape, got {tuple(logits.shape)} and "
                             f"{tuple(target_logits.shape)}")
        return F.mse_loss(logits.float().softmax(dim=-1), target_logits.detach().float().softmax(dim=-1))


class EntropyLoss(nn.Module):
    """``mean_b H(softmax(logits_b)) = - mean_b sum_c p_bc log p_bc`` (Grandvalet & Bengio 2005): minimised, it makes
    the classifier confident on unlabelled data."""

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        log_probabilities = logits.float().log_softmax(dim=-1)
        return -(log_probabilities.exp() * log_probabilities).sum(dim=-1).mean()


def soft_target_kl(target_log_probabilities: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Per example, ``KL(q_b || softmax(logits_b)) = sum_c q_bc (log q_bc - log softmax(logits_b)_c)`` ``(B,)``, from
    the target's log-probabilities ``log q`` ``(B, K)`` (detached: a target is a constant). The one KL of UDA,
    distillation and VAT."""
    target = target_log_probabilities.detach().float()
    return (target.exp() * (target - logits.float().log_softmax(dim=-1))).sum(dim=-1)


def sharpen(probabilities: torch.Tensor, temperature: float) -> torch.Tensor:
    """``p^(1/T) / sum_c p_c^(1/T)`` per row of ``(batch, num_classes)`` probabilities (MixMatch's and UDA's
    sharpening; ``T = 1``: unchanged, ``T -> 0``: one-hot). Computed in log space, so tiny probabilities stay finite."""
    if temperature <= 0:
        raise ValueError(f"the sharpening temperature must be > 0, got {temperature}")
    return (probabilities.clamp(min=1e-12).log() / temperature).softmax(dim=-1)


class SharpenedKLLoss(nn.Module):
    """``mean_b [ mask_b * KL(q_b || softmax(logits_b)) ]`` with ``q_b = sharpen(softmax(target_logits_b), T)`` and
    ``mask_b = [max softmax(target_logits_b) >= threshold]`` (the confidence before sharpening), UDA's consistency
    (Xie et al. 2020, Eq. 1 with the confidence-based masking and sharpening of §3.2 / Appendix C).

    As in :class:`PseudoLabelLoss`, the mean runs over the whole unlabelled batch. ``q`` carries no gradient; the
    KL's ``sum q log q`` term is constant in the classifier's parameters, so the gradient is the soft-target
    cross-entropy's. Returns ``(loss, PseudoLabels)`` (argmax, confidence and mask of the target, for diagnostics).
    """

    def __init__(self, temperature: float = 0.4, threshold: float = 0.8):
        super().__init__()
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"the confidence threshold must be in [0, 1], got {threshold}")
        sharpen(torch.ones(1, 1), temperature)  # refuses a temperature <= 0 now rather than at the first step
        self.temperature = temperature
        self.threshold = threshold

    def forward(self, logits: torch.Tensor, target_logits: torch.Tensor) -> tuple[torch.Tensor, PseudoLabels]:
        with torch.no_grad():
            probabilities = target_logits.detach().float().softmax(dim=-1)
            confidence, labels = probabilities.max(dim=-1)
            mask = (confidence >= self.threshold).float()
            target = sharpen(probabilities, self.temperature)
        divergence = soft_target_kl(target.clamp(min=1e-12).log(), logits)
        return (divergence * mask).mean(), PseudoLabels(labels, confidence, mask)


class DistillationLoss(nn.Module):
    """``T^2 mean_b KL(softmax(teacher_b / T) || softmax(student_b / T))`` (Hinton, Vinyals & Dean 2015, "Distilling
    the Knowledge in a Neural Network", arXiv:1503.02531, §2): the ``T^2`` factor keeps the gradient's scale
    independent of ``T`` (the soft-target gradients scale as ``1 / T^2``). Logits ``(batch, num_classes)``; the
    teacher's are detached."""

    def __init__(self, temperature: float = 2.0):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"the distillation temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        if student_logits.shape != teacher_logits.shape:
            raise ValueError(f"student and teacher must predict the same classes, got logits {tuple(student_logits.shape)}"
                             f" and {tuple(teacher_logits.shape)}")
        temperature = self.temperature
        target = (teacher_logits.detach().float() / temperature).log_softmax(dim=-1)
        return temperature ** 2 * soft_target_kl(target, student_logits.float() / temperature).mean()

