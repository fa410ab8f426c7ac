"""Mixup (Zhang et al. 2018, "mixup: Beyond Empirical Risk Minimization", arXiv:1710.09412) and CutMix (Yun et al.
2019, "CutMix: Regularization Strategy to Train Strong Classifiers with Localizable Features", arXiv:1905.04899) on a
labelled image batch, with soft targets.

A batch ``pixel_values (B, C, H, W)`` + ``labels (B,)`` becomes mixed images + ``labels (B, K)`` (probabilities):
mixup blends each image with another of the batch with weight ``lambda ~ Beta(alpha, alpha)``; CutMix pastes a box of
another image covering ``1 - lambda`` of the area. With both enabled, each batch takes one of them at random (timm's
and torchvision's convention). torchvision's ``transforms.v2.MixUp`` / ``CutMix`` do the work (the draws come from
torch's global generator, which Trainer checkpoints, so a resumed run draws the same); the classifier then learns
from the soft targets with a probability-target cross-entropy (``SemiSupervisedMethod.supervised_loss``).
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2


class LabelledBatchMixer:
    """Mixup and/or CutMix of a labelled image batch (see the module docstring); ``alpha = 0`` turns one off.

    Args:
        num_classes: ``K``, the width of the soft targets.
        mixup_alpha / cutmix_alpha: the Beta distributions' ``alpha`` (the papers use 0.2-1.0 and 1.0).
    """

    def __init__(self, num_classes: int, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0):
        if mixup_alpha < 0 or cutmix_alpha < 0:
            raise ValueError(f"mixup_alpha and cutmix_alpha must be >= 0, got {mixup_alpha} and {cutmix_alpha}")
        mixers = ([v2.MixUp(alpha=mixup_alpha, num_classes=num_classes)] if mixup_alpha > 0 else []) + (
            [v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes)] if cutmix_alpha > 0 else [])
        if not mixers:
            raise ValueError("set mixup_alpha or cutmix_alpha > 0 to mix labelled batches")
        self.mix = mixers[0] if len(mixers) == 1 else v2.RandomChoice(mixers)

    def __call__(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``{"pixel_values": (B, C, H, W), "labels": (B,), ...}`` -> the same keys, mixed images, ``labels (B, K)``."""
        if "pixel_values" not in batch or batch["pixel_values"].dim() != 4:
            raise ValueError("mixup and CutMix mix images: they need a batch of pixel_values (B, C, H, W); leave "
                             "mixup_alpha and cutmix_alpha at 0 for text and audio")
        pixels, labels = self.mix(batch["pixel_values"], batch["labels"])
        return {**batch, "pixel_values": pixels, "labels": labels}
