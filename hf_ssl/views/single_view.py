"""One augmented view per image (MAE, He et al. 2021 §A.1: RandomResizedCrop(scale=(0.2, 1)) + flip)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from PIL import Image
from torchvision.transforms import v2
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from .seeding import INDEX_COLUMN, seeded_map


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


class SingleViewTransform:
    """``{"image": [PIL, ...]}`` -> ``{"pixel_values": [(C, H, W), ...]}``, one random view per image.

    Reproducible as :class:`hf_ssl.views.MultiCropTransform`: with the ``ssl_index`` column (added by
    :func:`hf_ssl.views.apply_views`) each example's view is seeded by ``(seed, epoch, index)``, so resumes and
    process counts do not change the views. :class:`hf_ssl.training.trainer.SSLTrainer` calls :meth:`set_epoch`.
    """

    def __init__(self, config: SingleViewConfig | None = None, *, image_column: str = "image", seed: int = 0):
        self.config = config or SingleViewConfig()
        self.image_column = image_column
        self.seed = seed
        self.epoch = 0
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

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def check_image(self, image: Image.Image) -> None:
        """Fail fast on images smaller than the view (they would be upsampled silently)."""
        width, height = image.size
        size = self.config.global_crop_size
        if min(width, height) < size:
            raise ValueError(
                f"images are {width}x{height} but global_crop_size is {size}: set `--global_crop_size` to at most "
                f"{min(width, height)} (a multiple of the patch size), or resize the dataset's images first"
            )

    def view(self, image: Image.Image) -> torch.Tensor:
        self.check_image(image)
        return self.pipeline(image.convert("RGB"))

    def __call__(self, batch: dict[str, list]) -> dict[str, list[torch.Tensor]]:
        if self.image_column not in batch:
            raise ValueError(
                f"the dataset has no {self.image_column!r} column (columns: {sorted(batch)}); pass `--image_column`"
            )
        views = seeded_map(self.view, batch[self.image_column], batch.get(INDEX_COLUMN), self.seed, self.epoch)
        return {"pixel_values": views}
