"""MixMatch (Berthelot et al. 2019, "MixMatch: A Holistic Approach to Semi-Supervised Learning", NeurIPS,
arXiv:1905.02249, Algorithm 1).

Per step:
1. guess each unlabelled example's label by averaging the predictions over its ``K`` augmentations and sharpening the
   average with temperature ``T`` (no gradient);
2. MixUp every example of the labelled batch (one-hot labels) and of the ``K`` unlabelled batches (guessed labels)
   with a random partner from all of them, with ``lambda ~ Beta(alpha, alpha)`` and ``lambda' = max(lambda, 1 -
   lambda)``, so each mixed example stays closer to its own input;
3. learn the mixed labelled examples with a soft-target cross-entropy and the mixed unlabelled ones with the squared
   error of the softmax outputs:

    loss = CE(mixed labelled) + lambda_u(t) mean_{u, c} (softmax(f(u'))_c - q'_c)^2

Defaults: ``K = 2``, ``T = 0.5``, ``alpha = 0.75``, ``lambda_u = 75`` (the paper's CIFAR-10 settings), ramped up
linearly over 40 % of training (the paper ramps it over its first 16,000 steps), ``mu = 1``, an EMA of the weights
(0.999) evaluated and published (the paper evaluates an EMA too). One ``lambda`` per step, the mixing partners a
permutation of the local batch (as the reference implementation per device); the draws come from torch's global
generator, which Trainer checkpoints. MixUp blends continuous inputs: images (``pixel_values``), audio
(``input_values`` or spectrogram ``input_features``; clips of different lengths right-padded to the longest, a mixed
clip's ``attention_mask`` covering both partners) and, for text, the token embeddings ``(B, L, D)`` of the
classifier's own embedding table (padding zeroed, the mask covering both partners' tokens, each example keeping its
own ``token_type_ids``): MixUp at the input layer, where MixText (Chen et al. 2020, arXiv:2004.12239) blends the
hidden states of a middle layer; the embedding table trains through the mixed batch, as VAT's does on text (Miyato et
al. 2017). The paper's BatchNorm "interleaving" (all batches in one pass so the statistics see a mix) is what
:func:`~hf_ssl.semi.base.classifier_logits`'s single joint pass does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..losses.consistency import sharpen
from ..schedules import TrainingProgress
from .base import (
    SemiSupervisedConfig,
    SemiSupervisedMethod,
    SemiSupervisedOutput,
    as_embeddings,
    join_batches,
    prediction_labels,
    split_labels,
)

#: The inputs MixUp can blend (continuous; text batches are turned into ``inputs_embeds`` first).
MIXABLE_INPUTS = ("pixel_values", "input_values", "input_features", "inputs_embeds")


@dataclass
class MixMatchConfig(SemiSupervisedConfig):
    """MixMatch's settings (see the module docstring). augmentations: ``K``, the unlabelled views averaged for the
    guess. temperature: ``T``. mixup_beta_alpha: ``alpha`` of the Beta distribution of ``lambda``."""

    method = "mixmatch"
    unlabelled_views = ("weak", "weak")

    unlabelled_batch_ratio: int = 1
    unsupervised_weight: float = 75.0
    rampup_fraction: float = 0.4
    rampup_shape: str = "linear"
    ema_decay: float | None = 0.999
    temperature: float = 0.5
    mixup_beta_alpha: float = 0.75

    def __post_init__(self):
        super().__post_init__()
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.mixup_beta_alpha <= 0:
            raise ValueError(f"mixup_beta_alpha must be > 0, got {self.mixup_beta_alpha}")


class MixMatch(SemiSupervisedMethod):
    """MixMatch over any image, audio or text classifier; see the module docstring."""

    config_class = MixMatchConfig
    paper = ("Berthelot et al. 2019. MixMatch: A Holistic Approach to Semi-Supervised Learning. arXiv:1905.02249")

    def compute_loss(
        self, model: nn.Module, labelled: dict[str, torch.Tensor], unlabelled: dict[str, Any], progress: TrainingProgress
    ) -> SemiSupervisedOutput:
        inputs, labels = split_labels(labelled)
        views = unlabelled["views"]
        if "input_ids" in inputs:  # text: MixUp of the token embeddings (see the module docstring)
            classifier = getattr(model, "module", model)
            inputs, views = as_embeddings(classifier, inputs), [as_embeddings(classifier, view) for view in views]
        key = mixable_key(inputs)
        with torch.no_grad():
            guesses = torch.stack([model(**view).logits.float().softmax(dim=-1) for view in views]).mean(dim=0)
            guessed = sharpen(guesses, self.config.temperature)
        targets = labels.float() if labels.dim() == 2 else F.one_hot(labels, self.num_classes).float()
        # one batch of all examples (audio clips of different lengths right-padded with zeros, masked out)
        joint = join_batches([inputs, *views])
        if joint is None:
            raise ValueError(f"MixMatch joins the labelled and unlabelled batches to mix them; they differ in keys or "
                             f"shapes ({sorted(inputs)} vs {sorted(views[0])}): give every view the same inputs")
        all_targets = torch.cat([targets, *([guessed] * len(views))])
        # a padded position adds nothing to its partner's token there
        if key == "inputs_embeds" and "attention_mask" in joint:
            joint[key] = joint[key] * joint["attention_mask"].unsqueeze(-1).to(joint[key].dtype)
        mixed_inputs, mixed_targets, partners = self.mixup(joint.pop(key), all_targets)
        # what is left in ``joint`` goes with the blended input (the attention_mask of an audio or text batch): a mixed
        # clip or sequence holds the samples or tokens of both partners, so its mask covers both
        if "attention_mask" in joint:
            joint["attention_mask"] = torch.maximum(joint["attention_mask"], joint["attention_mask"][partners])
        logits = model(**joint, **{key: mixed_inputs}).logits
        labelled_count = targets.shape[0]
        supervised = self.supervised_loss(logits[:labelled_count], mixed_targets[:labelled_count])
        unsupervised = F.mse_loss(logits[labelled_count:].float().softmax(dim=-1), mixed_targets[labelled_count:])
        return self.combine(supervised, unsupervised, progress, self.diagnostics(
            prediction_labels(guessed.log()), unlabelled.get("audit_labels")))

    def mixup(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """MixUp with ``lambda' = max(lambda, 1 - lambda)`` and a random partner per example (Algorithm 1, lines
        11-16); ``inputs`` ``(N, ...)``, ``targets`` ``(N, K)``. Returns the mixed inputs and targets and the
        partners ``(N,)`` (indices). Not torchvision's ``v2.MixUp`` (which :mod:`hf_ssl.views.mixing` uses for
        labelled batches): it takes class indices, not the guessed distributions, and has no ``lambda'``."""
        alpha = torch.tensor(self.config.mixup_beta_alpha)
        weight = torch.distributions.Beta(alpha, alpha).sample().item()
        weight = max(weight, 1.0 - weight)
        partners = torch.randperm(inputs.shape[0]).to(inputs.device)
        return (weight * inputs + (1.0 - weight) * inputs[partners],
                weight * targets + (1.0 - weight) * targets[partners], partners)


def mixable_key(batch: dict[str, torch.Tensor]) -> str:
    for key in MIXABLE_INPUTS:
        if key in batch:
            return key
    raise ValueError(f"MixMatch blends continuous inputs ({', '.join(MIXABLE_INPUTS)}) or token ids (as embeddings); "
                     f"the batch has {sorted(batch)}: give the classifier's processor output, or use --method fixmatch")
