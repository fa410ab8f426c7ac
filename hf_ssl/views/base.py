"""What every image view transform shares: the ``datasets`` transform interface, the epoch, the size check, and the
per-example seeding of :mod:`hf_ssl.views.seeding`. Subclasses say only how one image becomes its views."""

from __future__ import annotations

import abc
from typing import ClassVar

import torch
from PIL import Image

from ..data.image_decoding import to_rgb
from .seeding import INDEX_COLUMN, seeded_map


class ImageViewTransform(abc.ABC):
    """``{"image": [PIL, ...], ...}`` -> ``{name: [tensor per example], ...}`` with the names :meth:`views` returns,
    plus ``labels`` copied from ``label_column`` when one is named (``None``, the default for label-free pretraining:
    no labels). :func:`hf_ssl.data.collators.stack_views` keeps them, and ``SSLTrainer`` hands them to a model whose
    forward takes ``labels`` (a classifier, a semi-supervised method) and to no other.

    Use it with :func:`hf_ssl.views.apply_views`, which adds the ``ssl_index`` column that seeds each example's views
    by ``(seed, epoch, index)``; call :meth:`set_epoch` at each epoch (``SSLTrainer`` does). ``config`` (default:
    ``config_class()``) must have ``global_crop_size``, the largest view, which no image may be smaller than.
    """

    #: The dataclass of the views' settings.
    config_class: ClassVar[type]

    def __init__(self, config=None, *, image_column: str = "image", label_column: str | None = None, seed: int = 0):
        self.config = config if config is not None else self.config_class()
        self.image_column = image_column
        self.label_column = label_column
        self.seed = seed
        self.epoch = 0
        self.build()

    @abc.abstractmethod
    def build(self) -> None:
        """Build the augmentation pipelines from ``self.config`` (called once, at construction)."""

    @abc.abstractmethod
    def views(self, image: Image.Image) -> dict[str, torch.Tensor]:
        """The views of one RGB image, one tensor per name (e.g. ``{"global_crops": (G, C, H, W)}``)."""

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def check_image(self, image: Image.Image) -> None:
        """Fail fast on images smaller than the largest view (they would be upsampled silently)."""
        width, height = image.size
        size = self.config.global_crop_size
        if min(width, height) < size:
            raise ValueError(
                f"images are {width}x{height} but global_crop_size is {size}: set `--global_crop_size` (and a smaller "
                f"`--local_crop_size`) to at most {min(width, height)}, a multiple of the patch size, or resize the "
                "dataset's images first"
            )

    def _checked_views(self, image: Image.Image) -> dict[str, torch.Tensor]:
        self.check_image(image)
        return self.views(to_rgb(image))

    def __call__(self, batch: dict[str, list]) -> dict[str, list[torch.Tensor]]:
        if self.image_column not in batch:
            raise ValueError(
                f"the dataset has no {self.image_column!r} column (columns: {sorted(batch)}); pass the image column "
                "with `image_column=` / `--image_column`, or load the data with hf_ssl.data.load_image_dataset"
            )
        output: dict[str, list[torch.Tensor]] = {}
        images = batch[self.image_column]
        for views in seeded_map(self._checked_views, images, batch.get(INDEX_COLUMN), self.seed, self.epoch):
            for key, value in views.items():
                output.setdefault(key, []).append(value)
        if self.label_column is not None:
            if self.label_column not in batch:
                raise ValueError(
                    f"the dataset has no label column {self.label_column!r} (columns: {sorted(batch)}); name it with "
                    "`label_column=`, or pass label_column=None for label-free views"
                )
            output["labels"] = list(batch[self.label_column])
        return output
