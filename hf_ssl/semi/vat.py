"""Virtual adversarial training (Miyato et al. 2018, "Virtual Adversarial Training: A Regularization Method for
Supervised and Semi-Supervised Learning", TPAMI, arXiv:1704.03976), with entropy minimisation (its "VAT + EntMin",
§4.2) as an option; on text the perturbation is applied to the input embeddings (Miyato, Dai & Goodfellow 2017,
"Adversarial Training Methods for Semi-Supervised Text Classification", arXiv:1605.07725), never to token ids.

The unlabelled example's input ``x`` (pixels, audio samples, or token embeddings) is pushed in the direction that
changes the prediction most, and the classifier learns to keep its prediction there (Eq. 7-9):

    d <- random unit vector; repeat K times: d <- normalise(grad_r KL(p(y|x) || p(y|x + r)) at r = xi d)
    l_u = mean_b KL(p(y|x_b) || p(y|x_b + eps d_b)),   p(y|x) a constant (no gradient)
    loss = CE(labelled) + lambda_u [ l_u + w_H mean_b H(p(y|x_b)) ]

``normalise`` is per example, over all its input dimensions (and, for embeddings, only over the real tokens:
padding is never perturbed). Defaults: one power iteration, ``xi = 1e-6``, ``eps = 6``, ``lambda_u = 0.3`` with a
ramp-up over 40 % of training, entropy weight 0 (0.06 with ``entropy_weight``): USB's CIFAR settings (Wang et al.
2022) for the paper's method; ``eps`` is in the units of the input, so images normalised otherwise, or embeddings, may
need another (the text paper used 5.0 on normalised embeddings).

The power iteration runs on the unwrapped classifier and differentiates with respect to ``r`` only, so no parameter
gradient and no DDP hook is involved; the adversarial input then goes through the (wrapped) classifier in the step's
one joint forward pass with the labelled batch. Its clean prediction, the KL's constant target, is reused for the loss
(each row of a classifier without BatchNorm depends on that row alone); with the entropy term, which trains through
``p(y|x)``, or with BatchNorm, the clean input joins that pass too.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..losses.consistency import EntropyLoss, soft_target_kl
from ..schedules import TrainingProgress
from .base import (
    SemiSupervisedConfig,
    SemiSupervisedMethod,
    SemiSupervisedOutput,
    as_embeddings,
    classifier_logits,
    passes_targets_alone,
    prediction_labels,
    split_labels,
)

#: The continuous input of each kind of classifier batch, perturbed in place of the batch's own key.
CONTINUOUS_INPUTS = ("pixel_values", "input_values", "input_features")


@dataclass
class VATConfig(SemiSupervisedConfig):
    """VAT's settings (see the module docstring). epsilon: ``eps``, the perturbation's L2 norm per example. xi: the
    finite-difference step of the power iteration. power_iterations: ``K``. entropy_weight: ``w_H`` (0: none)."""

    method = "vat"
    unlabelled_views = ("weak",)

    unlabelled_batch_ratio: int = 1
    unsupervised_weight: float = 0.3
    rampup_fraction: float = 0.4
    rampup_shape: str = "linear"
    epsilon: float = 6.0
    xi: float = 1e-6
    power_iterations: int = 1
    entropy_weight: float = 0.0

    def __post_init__(self):
        super().__post_init__()
        if self.epsilon <= 0 or self.xi <= 0:
            raise ValueError(f"epsilon and xi must be > 0, got {self.epsilon} and {self.xi}")
        if self.power_iterations < 1:
            raise ValueError(f"power_iterations must be >= 1, got {self.power_iterations}")
        if self.entropy_weight < 0:
            raise ValueError(f"entropy_weight must be >= 0, got {self.entropy_weight}")


def kl_from_logits(target_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """``mean_b KL(softmax(target_b) || softmax(logits_b))``; the target is detached."""
    return soft_target_kl(target_logits.float().log_softmax(dim=-1), logits).mean()


def normalise_per_example(tensor: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Each example (first dimension) scaled to unit L2 norm over its other dimensions; ``mask`` ``(B, L)`` zeroes
    padded positions of ``(B, L, D)`` embeddings first."""
    if mask is not None:
        tensor = tensor * mask[..., None].to(tensor.dtype)
    norm = tensor.flatten(1).norm(dim=1).clamp(min=1e-12)
    return tensor / norm.view(-1, *([1] * (tensor.dim() - 1)))


class VAT(SemiSupervisedMethod):
    """Virtual adversarial training over any transformers classifier; see the module docstring."""

    config_class = VATConfig
    paper = ("Miyato et al. 2018. Virtual Adversarial Training: A Regularization Method for Supervised and "
             "Semi-Supervised Learning. arXiv:1704.03976")

    def __init__(self, config: VATConfig | None = None, **settings):
        super().__init__(config, **settings)
        self.entropy = EntropyLoss()

    def compute_loss(
        self, model: nn.Module, labelled: dict[str, torch.Tensor], unlabelled: dict[str, Any], progress: TrainingProgress
    ) -> SemiSupervisedOutput:
        inputs, labels = split_labels(labelled)
        (view,) = unlabelled["views"]
        classifier = getattr(model, "module", model)  # the power iteration needs no DDP hooks (see the docstring)
        if "input_ids" in view:  # text: perturb the embeddings of every batch, so the batches still join in one pass
            inputs, view = (as_embeddings(classifier, batch) for batch in (inputs, view))
        clean_logits, adversarial = self.adversarial_batch(classifier, view)
        if self.config.entropy_weight == 0 and passes_targets_alone(classifier):
            logits_clean = clean_logits  # only the KL's target: the power iteration's no-grad p(y|x) serves
            logits_labelled, logits_adversarial = classifier_logits(model, [inputs, adversarial])
        else:
            logits_labelled, logits_clean, logits_adversarial = classifier_logits(model, [inputs, view, adversarial])
        supervised = self.supervised_loss(logits_labelled, labels)
        unsupervised = kl_from_logits(logits_clean, logits_adversarial)
        if self.config.entropy_weight > 0:
            unsupervised = unsupervised + self.config.entropy_weight * self.entropy(logits_clean)
        return self.combine(supervised, unsupervised, progress, self.diagnostics(
            prediction_labels(logits_clean), unlabelled.get("audit_labels")))

    def adversarial_batch(
        self, classifier: nn.Module, view: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(p(y|x)'s logits without gradient, view with its continuous input moved by eps d)``, ``d`` from the power
        iteration."""
        key = next((name for name in (*CONTINUOUS_INPUTS, "inputs_embeds") if name in view), None)
        if key is None:
            raise ValueError(f"VAT perturbs a continuous input ({', '.join(CONTINUOUS_INPUTS)}, or token embeddings); "
                             f"the batch has {sorted(view)}")
        inputs = view[key].detach()
        mask = view.get("attention_mask") if key == "inputs_embeds" else None
        with torch.no_grad():
            clean_logits = classifier(**view).logits
        direction = normalise_per_example(torch.randn_like(inputs), mask)
        with input_gradients_allowed(classifier):  # one walk over the modules per step, not per iteration
            for _ in range(self.config.power_iterations):
                step = (self.config.xi * direction).requires_grad_(True)
                logits = classifier(**{**view, key: inputs + step}).logits
                (gradient,) = torch.autograd.grad(kl_from_logits(clean_logits, logits), step)
                # An example whose prediction did not move at all in float32 (a tiny xi on a tiny model) keeps its
                # previous direction instead of a zero one.
                moved = gradient.flatten(1).norm(dim=1) > 0
                direction = torch.where(moved.view(-1, *([1] * (gradient.dim() - 1))),
                                        normalise_per_example(gradient.detach(), mask), direction)
        # the input itself keeps its graph (token embeddings train through the adversarial term too, as in Miyato et
        # al. 2017); only the direction is a constant
        return clean_logits, {**view, key: view[key] + self.config.epsilon * direction}


@contextlib.contextmanager
def input_gradients_allowed(model: nn.Module):
    """Let ``model`` take an input that requires grad in training mode. transformers' audio feature encoders
    (Wav2Vec2's and its relatives') set ``requires_grad`` on a view of their input when their ``_requires_grad`` flag
    is on (for gradient checkpointing), which fails on an input that already requires grad, and is not needed then:
    the flag is turned off inside the block and restored after."""
    flagged = [module for module in model.modules() if getattr(module, "_requires_grad", None) is True]
    for module in flagged:
        module._requires_grad = False
    try:
        yield
    finally:
        for module in flagged:
            module._requires_grad = True
