"""Multi-crop views for images (Caron et al. 2020 SwAV §3.2; DINO's augmentations, Caron et al. 2021 Appendix).

Applied on the fly as a ``datasets`` transform (:func:`hf_ssl.views.apply_views`), with torchvision.transforms.v2.
Each image becomes ``num_global_crops`` large crops and ``num_local_crops`` small crops.

Reproducible views: when the dataset carries an ``ssl_index`` column (``apply_views`` adds it), the random stream
of every example is seeded by ``(seed, epoch, index)``. The views of an image then depend on nothing else: not on the
number of processes, the dataloader workers, or a resume in the middle of an epoch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from PIL import Image
from torchvision.transforms import v2
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from .base import ImageViewTransform


@dataclass
class MultiCropConfig:
    """Crop sizes, scales and photometric augmentations (defaults: DINO at 224 px, scaled by ``global_crop_size``).

    global_crop_scale / local_crop_scale: area fractions of RandomResizedCrop (DINO: (0.4, 1) and (0.05, 0.4)).
    color_jitter: strength s of ColorJitter(0.4s, 0.4s, 0.2s, 0.1s) applied with p=0.8; grayscale_probability 0.2.
    blur_probabilities: Gaussian blur probability for (global crop 1, global crop 2, local crops): (1.0, 0.1, 0.5).
    solarize_probability: for the second global crop (0.2).
    """

    global_crop_size: int = 224
    local_crop_size: int = 96
    num_global_crops: int = 2
    num_local_crops: int = 6
    global_crop_scale: list[float] = field(default_factory=lambda: [0.4, 1.0])
    local_crop_scale: list[float] = field(default_factory=lambda: [0.05, 0.4])
    horizontal_flip_probability: float = 0.5
    color_jitter: float = 1.0
    grayscale_probability: float = 0.2
    blur_probabilities: list[float] = field(default_factory=lambda: [1.0, 0.1, 0.5])
    solarize_probability: float = 0.2
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_DEFAULT_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_DEFAULT_STD))

    def __post_init__(self):
        if self.num_global_crops < 1:
            raise ValueError(f"num_global_crops must be >= 1, got {self.num_global_crops}")
        if self.num_local_crops < 0:
            raise ValueError(f"num_local_crops must be >= 0, got {self.num_local_crops}")
        if self.num_global_crops + self.num_local_crops < 2:
            raise ValueError("multi-crop needs at least 2 crops per image; raise num_global_crops or num_local_crops")
        if len(self.blur_probabilities) != 3:
            raise ValueError("blur_probabilities takes 3 values: first global crop, second global crop, local crops")
        for name in ("global_crop_scale", "local_crop_scale"):
            if len(getattr(self, name)) != 2:
                raise ValueError(f"{name} takes 2 values (low high), got {getattr(self, name)}")
            low, high = getattr(self, name)
            if not 0 < low <= high <= 1:
                raise ValueError(f"{name} must satisfy 0 < low <= high <= 1, got {(low, high)}")
        if self.global_crop_size < 1 or self.local_crop_size < 1:
            raise ValueError("crop sizes must be positive")


class MultiCropTransform(ImageViewTransform):
    """Turns a batch ``{"image": [PIL, ...], ...}`` into ``{"global_crops": [(G, C, H, W), ...],
    "local_crops": [(L, C, h, w), ...]}`` (one tensor per example; :func:`hf_ssl.data.collators.stack_views` batches
    them).

    Use it with :func:`hf_ssl.views.apply_views`; call :meth:`set_epoch` at each epoch (``SSLTrainer`` does).
    """

    config_class = MultiCropConfig

    def build(self) -> None:
        cfg = self.config
        blur_global_1, blur_global_2, blur_local = cfg.blur_probabilities
        self.global_transforms = [
            self._pipeline(cfg.global_crop_size, cfg.global_crop_scale, blur_global_1, 0.0),
            self._pipeline(cfg.global_crop_size, cfg.global_crop_scale, blur_global_2, cfg.solarize_probability),
        ]
        self.local_transform = self._pipeline(cfg.local_crop_size, cfg.local_crop_scale, blur_local, 0.0)

    def _pipeline(self, size: int, scale: Sequence[float], blur: float, solarize: float) -> v2.Compose:
        cfg = self.config
        strength = cfg.color_jitter
        # Kernel about 10% of the crop (DINO uses 23 px at 224 px), odd, at least 3.
        kernel = max(3, int(0.1 * size) // 2 * 2 + 1)
        # Geometric and colour steps run on the PIL image and the tensor conversion comes last: on small images
        # PIL's kernels are cheaper than the tensor ones (torchvision's tensor hue shift alone took 4 ms per 16 px
        # crop here, about twice PIL's whole colour jitter); the random parameters are drawn the same way.
        steps: list[v2.Transform] = [
            v2.RandomResizedCrop(size, scale=tuple(scale), antialias=True),
            v2.RandomHorizontalFlip(cfg.horizontal_flip_probability),
        ]
        if strength > 0:
            jitter = v2.ColorJitter(0.4 * strength, 0.4 * strength, 0.2 * strength, 0.1 * strength)
            steps.append(v2.RandomApply([jitter], p=0.8))
        steps.append(v2.RandomGrayscale(cfg.grayscale_probability))
        if blur > 0:
            steps.append(v2.RandomApply([v2.GaussianBlur(kernel, sigma=(0.1, 2.0))], p=blur))
        if solarize > 0:
            steps.append(v2.RandomSolarize(threshold=128, p=solarize))
        steps += [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(cfg.mean, cfg.std)]
        return v2.Compose(steps)

    def views(self, image: Image.Image) -> dict[str, torch.Tensor]:
        """All crops of one image: ``global_crops (G, C, H, W)``, ``local_crops (L, C, h, w)``."""
        cfg = self.config
        global_crops = [self.global_transforms[i % 2](image) for i in range(cfg.num_global_crops)]
        local_crops = [self.local_transform(image) for _ in range(cfg.num_local_crops)]
        views = {"global_crops": torch.stack(global_crops)}
        if local_crops:
            views["local_crops"] = torch.stack(local_crops)
        return views
