"""The transformers image processor of a run: the deterministic transform its evaluation used, as a processor saved
beside the weights, so that ``AutoImageProcessor`` and ``pipeline("image-feature-extraction" | "image-classification"
| ...)`` prepare images exactly as the run evaluated them, without hf_ssl.

The size and the normalisation come from the run's view settings (``MultiCropConfig`` / ``SingleViewConfig``: the
encoder's native resolution and ``mean`` / ``std``; ``ImageWeakStrongConfig``: ``image_size``, ``mean``, ``std``).
"""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image
from transformers import BitImageProcessor, ViTImageProcessor
from transformers.image_processing_utils import BaseImageProcessor


def build_image_processor(
    image_size: int, mean: Sequence[float], std: Sequence[float], *, center_crop: bool = True
) -> BaseImageProcessor:
    """The processor of images ``image_size`` px square, normalised by ``(x - mean) / std`` after scaling to [0, 1].

    ``center_crop=True``: :class:`~transformers.BitImageProcessor` (the class of DINOv2's checkpoints): RGB, resize
    of the shorter side to ``image_size`` (bilinear), center crop to ``image_size`` x ``image_size``: the transform
    of every probe of the pretraining jobs (:func:`hf_ssl.evaluation.features.default_eval_transform`).
    ``center_crop=False``: :class:`~transformers.ViTImageProcessor`: resize to ``image_size`` x ``image_size``
    (other aspect ratios are squashed, not cropped), as the plain view of the semi-supervised image views does.
    """
    if image_size < 1:
        raise ValueError(f"image_size must be a positive number of pixels, got {image_size}")
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"images are converted to RGB: give 3 values of mean and std, got {list(mean)}, {list(std)}")
    settings = dict(image_mean=[float(value) for value in mean], image_std=[float(value) for value in std],
                    resample=Image.Resampling.BILINEAR)
    if center_crop:
        return BitImageProcessor(size={"shortest_edge": int(image_size)},
                                 crop_size={"height": int(image_size), "width": int(image_size)}, **settings)
    return ViTImageProcessor(size={"height": int(image_size), "width": int(image_size)}, **settings)
