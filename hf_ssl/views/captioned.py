"""One augmented view per captioned image, for image-text training (CLIP-style, Radford et al. 2021): the image
becomes ``pixel_values``, its caption and any other column pass through, and the view is seeded by
``(seed, epoch, index)`` like every other view (:mod:`hf_ssl.views.seeding`), so a resumed run, a sharded run and
an uninterrupted one crop each image alike. :class:`hf_ssl.data.collators.ImageCaptionCollator` stacks the views and
tokenises the captions."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..data.image_decoding import to_rgb
from .seeding import INDEX_COLUMN, seeded_map


class CaptionedImageView:
    """``{"image": [PIL, ...], "text": [...], ...}`` -> ``{"pixel_values": [(C, H, W), ...], "text": [...], ...}``.

    image_transform: ``PIL image -> (C, H, W)`` tensor (the job's training augmentation).
    Use it with :func:`hf_ssl.views.apply_views` (adds the ``ssl_index`` column); ``SSLTrainer`` sets :attr:`seed`
    and calls :meth:`set_epoch`. Without ``ssl_index`` the views come from torch's global random stream.
    """

    def __init__(self, image_transform: Callable[..., torch.Tensor], *, image_column: str = "image", seed: int = 0):
        self.image_transform = image_transform
        self.image_column = image_column
        self.label_column = None  # labels, when present, pass through with the other columns
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _view(self, image) -> torch.Tensor:
        return self.image_transform(to_rgb(image))

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        output = {name: values for name, values in batch.items() if name not in (self.image_column, INDEX_COLUMN)}
        output["pixel_values"] = seeded_map(self._view, batch[self.image_column], batch.get(INDEX_COLUMN), self.seed,
                                            self.epoch)
        return output
