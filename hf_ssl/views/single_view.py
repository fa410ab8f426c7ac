"""One augmented view per image (MAE, He et al. 2021 §A.1: RandomResizedCrop(scale=(0.2, 1)) + flip)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from PIL import Image
from torchvision.transforms import v2
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from .base import ImageViewTransform


@dataclass
class SingleViewConfig:
    """One augmented view per image (MAE, He et al. 2021 §A.1: RandomResizedCrop(scale=(0.2, 1)) + flip).

    global_crop_size: side of the view, which must equal the encoder's image size and be a multiple of the patch.
    crop_scale: area fractions of RandomResizedCrop.
    """

    global_crop_size: int = 224
    crop_scale: list[float] = field(default_factory=lambda: [0.2, 1.0])
    horizontal_flip_probability: float = 0.5
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_DEFAULT_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_DEFAULT_STD))

    def __post_init__(self):
        if self.global_crop_size < 1:
            raise ValueError(f"global_crop_size must be positive, got {self.global_crop_size}")
        if len(self.crop_scale) != 2 or not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise ValueError(f"crop_scale takes 2 values with 0 < low <= high <= 1, got {self.crop_scale}")
        if not 0 <= self.horizontal_flip_probability <= 1:
            raise ValueError(f"horizontal_flip_probability must be in [0, 1], got {self.horizontal_flip_probability}")

    @property
    def local_crop_size(self) -> int:
        """No local crops: the one view is the only size the patch grid must tile (read by ``build_image_model``)."""
        return self.global_crop_size


class SingleViewTransform(ImageViewTransform):
    """``{"image": [PIL, ...]}`` -> ``{"pixel_values": [(C, H, W), ...], "mask_seed": [int64 scalar, ...]}``, one random
    view per image and the seed of its MAE mask (:class:`hf_ssl.methods.mae.MAEForPreTraining` takes ``mask_seed``).

    Reproducible as :class:`hf_ssl.views.MultiCropTransform`: with the ``ssl_index`` column (added by
    :func:`hf_ssl.views.apply_views`) each example's view is seeded by ``(seed, epoch, index)``, so resumes and
    process counts do not change the views. :class:`hf_ssl.training.trainer.SSLTrainer` calls :meth:`set_epoch`.
    """

    config_class = SingleViewConfig

    def build(self) -> None:
        cfg = self.config
        self.pipeline = v2.Compose(
            [
                v2.ToImage(),
                v2.RandomResizedCrop(cfg.global_crop_size, scale=tuple(cfg.crop_scale), antialias=True),
                v2.RandomHorizontalFlip(cfg.horizontal_flip_probability),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(cfg.mean, cfg.std),
            ]
        )

    def views(self, image: Image.Image) -> dict[str, torch.Tensor]:
        # The seed of the example's MAE mask, drawn from the same per-example stream as its view: the mask then
        # depends on the example alone, not on its batch, its process or a resume.
        return {"pixel_values": self.pipeline(image), "mask_seed": torch.randint(2**62, (), dtype=torch.int64)}
