"""Weak and strong views of an image, as FixMatch (Sohn et al. 2020, §2.3 and Appendix) makes them.

- weak: random horizontal flip + random translation by up to 12.5 % of the side (pad with reflection, crop back to
  the original size: 4 px on 32 px CIFAR-10);
- strong: the same geometric step, then RandAugment (Cubuk et al. 2020) with a magnitude drawn per image from
  [1, 10], as FixMatch's "RA" variant (or TrivialAugment, Müller & Hutter 2021), then Cutout (DeVries & Taylor
  2017) of a square half the image side, filled with the mean.

Both end as a normalised ``(C, image_size, image_size)`` float32 tensor; ``collate`` stacks them into
``{"pixel_values": (B, C, H, W)}``, the input of ``AutoModelForImageClassification``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from ...data.image_decoding import to_rgb
from .protocol import check_columns, split_value

STRONG_AUGMENTATIONS = ("randaugment", "trivialaugment", "none")

#: RandAugment's magnitude scale here: with 11 bins, magnitude m in 1..10 is m tenths of each operation's maximum,
#: FixMatch's scale (its RA draws magnitudes from [1, 10] on a 10-step scale); torchvision's default has 31 bins.
RANDAUGMENT_BINS = 11


@dataclass
class ImageWeakStrongConfig:
    """Weak and strong image views (defaults: FixMatch's, at the 224 px of a ViT).

    image_size: side of the output (the classifier's image size). Images of another size are resized to
        ``(image_size, image_size)`` after the geometric step, as ``ViTImageProcessor`` does (non-square images are
        squashed, not cropped). Images smaller than ``image_size`` are refused unless ``upsample`` is true.
    horizontal_flip_probability: of the weak flip (0.5).
    translate_fraction: largest translation, as a fraction of each side (0.125: FixMatch's 4 px at 32 px); the image
        is reflect-padded by that much and randomly cropped back to its size.
    strong: ``"randaugment"`` (``randaugment_num_ops`` operations, one magnitude drawn uniformly from the integers
        in ``randaugment_magnitudes`` per image), ``"trivialaugment"`` (``v2.TrivialAugmentWide``), or ``"none"``
        (Cutout only).
    cutout_fraction: side of the Cutout square as a fraction of the image side (0.5: FixMatch's "Cutout 0.5"); 0
        turns Cutout off.
    mean, std: normalisation (ImageNet's); Cutout and the empty areas of RandAugment's rotations and shears are
        filled with ``mean``, which is 0 after normalisation.
    """

    image_size: int = 224
    horizontal_flip_probability: float = 0.5
    translate_fraction: float = 0.125
    strong: str = "randaugment"
    randaugment_num_ops: int = 2
    randaugment_magnitudes: list[int] = field(default_factory=lambda: [1, 10])
    cutout_fraction: float = 0.5
    upsample: bool = False
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_DEFAULT_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_DEFAULT_STD))

    def __post_init__(self):
        if self.image_size < 1:
            raise ValueError(f"image_size must be positive (the classifier's input side), got {self.image_size}")
        if not 0 <= self.horizontal_flip_probability <= 1:
            raise ValueError(f"horizontal_flip_probability must be in [0, 1], got {self.horizontal_flip_probability}")
        if not 0 <= self.translate_fraction <= 0.5:
            raise ValueError(f"translate_fraction must be in [0, 0.5] (FixMatch: 0.125), got {self.translate_fraction}")
        if self.strong not in STRONG_AUGMENTATIONS:
            raise ValueError(f"strong must be one of {STRONG_AUGMENTATIONS}, got {self.strong!r}")
        if self.randaugment_num_ops < 1:
            raise ValueError(f"randaugment_num_ops must be >= 1 (FixMatch: 2), got {self.randaugment_num_ops}")
        magnitudes = self.randaugment_magnitudes
        if len(magnitudes) != 2 or not 0 <= magnitudes[0] <= magnitudes[1] <= RANDAUGMENT_BINS - 1:
            raise ValueError(
                f"randaugment_magnitudes takes 2 integers low <= high in [0, {RANDAUGMENT_BINS - 1}] (FixMatch: "
                f"[1, 10]), got {magnitudes}"
            )
        if not 0 <= self.cutout_fraction < 1:
            raise ValueError(f"cutout_fraction must be in [0, 1) (FixMatch: 0.5; 0 turns Cutout off), got "
                             f"{self.cutout_fraction}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"images are converted to RGB: give 3 values of mean and std, got {self.mean}, {self.std}")
        if min(self.std) <= 0:
            raise ValueError(f"std must be positive, got {self.std}")


class ImageWeakStrongViews:
    """FixMatch's weak and strong views of an image (a :class:`~hf_ssl.views.weak_strong.WeakStrongViews`).

    ``weak(image, rng)`` / ``strong(image, rng)``: a PIL image (grayscale and RGBA become RGB) -> a normalised
    ``(3, image_size, image_size)`` float32 tensor. ``collate(tensors)`` -> ``{"pixel_values": (B, 3, H, W)}``.

    Random draws: the flip, the translation offsets, RandAugment's magnitude and the Cutout position come from
    ``rng``; RandAugment's / TrivialAugment's own choices come from torch's global generator, which the caller seeds
    (:func:`~hf_ssl.views.weak_strong.draw_view`). ``strong`` draws its geometric step first, like ``weak``: under one
    seed the strong view is the weak view's flip and translation, photometrically augmented and cut out.
    """

    config_class = ImageWeakStrongConfig

    def __init__(self, config: ImageWeakStrongConfig | None = None, *, image_column: str = "image"):
        self.config = config if config is not None else ImageWeakStrongConfig()
        self.input_columns = (image_column,)
        cfg = self.config
        # RandAugment's rotations, shears and translations fill with the mean colour (FixMatch fills with gray).
        fill = [round(255 * value) for value in cfg.mean]
        if cfg.strong == "randaugment":
            low, high = cfg.randaugment_magnitudes
            self._augmentations = {
                magnitude: v2.RandAugment(
                    num_ops=cfg.randaugment_num_ops, magnitude=magnitude, num_magnitude_bins=RANDAUGMENT_BINS, fill=fill
                )
                for magnitude in range(low, high + 1)
            }
        elif cfg.strong == "trivialaugment":
            self._augmentations = {0: v2.TrivialAugmentWide(fill=fill)}
        else:
            self._augmentations = {}

    # -- the interface -------------------------------------------------------------------------------------------------

    def plain(self, value) -> torch.Tensor:
        """The evaluation view: no augmentation, ``(3, image_size, image_size)`` normalised float32."""
        return self._to_pixels(self._image(value))

    def weak(self, value, rng: np.random.Generator) -> torch.Tensor:
        """Flip + translate, then ``(3, image_size, image_size)`` normalised float32."""
        return self._to_pixels(self._geometric(self._image(value), rng))

    def strong(self, value, rng: np.random.Generator) -> torch.Tensor:
        """Flip + translate, RandAugment / TrivialAugment, then normalised float32 with a Cutout square."""
        image = self._geometric(self._image(value), rng)
        if self.config.strong == "randaugment":
            low, high = self.config.randaugment_magnitudes
            image = self._augmentations[int(rng.integers(low, high + 1))](image)
        elif self.config.strong == "trivialaugment":
            image = self._augmentations[0](image)
        return cutout(self._to_pixels(image), self.config.cutout_fraction, rng)

    def collate(self, values: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """``{"pixel_values": (B, 3, image_size, image_size) float32}``."""
        if not values:
            raise ValueError("collate got an empty batch: drop empty batches before collating")
        return {"pixel_values": torch.stack(values).to(torch.float32)}

    # -- checks --------------------------------------------------------------------------------------------------------

    def check_columns(self, column_names) -> None:
        """Refuse a dataset without the image column (call it once on ``dataset.column_names``)."""
        check_columns(
            self.input_columns,
            column_names,
            "pass the image column with `image_column=`, or load the data with hf_ssl.data.load_image_dataset",
        )

    def check_image(self, image: Image.Image) -> None:
        """Refuse images smaller than ``image_size`` unless ``upsample`` is set (they would be enlarged silently)."""
        width, height = image.size
        size = self.config.image_size
        if min(width, height) < size and not self.config.upsample:
            raise ValueError(
                f"images are {width}x{height} but image_size is {size}: set image_size to at most "
                f"{min(width, height)}, set upsample=True to enlarge them (e.g. CIFAR-10 for a 224 px ViT), or resize "
                "the dataset's images first"
            )

    # -- steps ---------------------------------------------------------------------------------------------------------

    def _image(self, value) -> Image.Image:
        (image,) = split_value(value, self.input_columns)
        if not isinstance(image, Image.Image):
            raise TypeError(
                f"the {self.input_columns[0]!r} column holds {type(image).__name__}, not a PIL image: load the data "
                "with hf_ssl.data.load_image_dataset (or cast the column to datasets.Image())"
            )
        self.check_image(image)
        return to_rgb(image)

    def _geometric(self, image: Image.Image, rng: np.random.Generator) -> Image.Image:
        cfg = self.config
        return flip_and_translate(image, rng, cfg.horizontal_flip_probability, cfg.translate_fraction)

    def _to_pixels(self, image: Image.Image) -> torch.Tensor:
        cfg = self.config
        pixels = F.to_dtype(F.to_image(image), torch.float32, scale=True)
        if tuple(pixels.shape[-2:]) != (cfg.image_size, cfg.image_size):
            pixels = F.resize(pixels, [cfg.image_size, cfg.image_size], antialias=True)
        return F.normalize(pixels, cfg.mean, cfg.std).as_subclass(torch.Tensor)


def flip_and_translate(
    image: Image.Image, rng: np.random.Generator, flip_probability: float, translate_fraction: float
) -> Image.Image:
    """FixMatch's weak augmentation: flip with ``flip_probability``, then shift by up to ``translate_fraction`` of
    each side: reflect-pad by ``round(fraction * side)`` and crop the original size at a uniform random offset (a
    shift of ``pad - offset`` pixels). Same size as the input."""
    if rng.random() < flip_probability:
        image = F.horizontal_flip(image)
    width, height = image.size
    pad_x, pad_y = round(translate_fraction * width), round(translate_fraction * height)
    if pad_x or pad_y:
        padded = F.pad(image, [pad_x, pad_y], padding_mode="reflect")
        top, left = int(rng.integers(0, 2 * pad_y + 1)), int(rng.integers(0, 2 * pad_x + 1))
        image = F.crop(padded, top, left, height, width)
    return image


def cutout(pixels: torch.Tensor, fraction: float, rng: np.random.Generator, value: float = 0.0) -> torch.Tensor:
    """Cutout (DeVries & Taylor 2017): a copy of ``pixels`` ``(C, H, W)`` with a square of side
    ``round(fraction * min(H, W))`` (at least 1) set to ``value``, at a uniform position inside the image.

    Written here rather than with ``v2.RandomErasing(p=1, scale=(f², f²), ratio=(1, 1))``: RandomErasing derives the
    side through ``sqrt(area)`` of a non-square image's area, and when the square does not fit it silently returns
    the image unchanged; here the side is exact and the position is drawn from ``rng``. Unlike DeVries & Taylor's
    (centre anywhere, square clipped at the border) the square always lies wholly inside, so every strong view loses
    the same area.
    """
    if fraction <= 0:
        return pixels
    height, width = pixels.shape[-2:]
    side = min(max(1, round(fraction * min(height, width))), height, width)
    top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
    pixels = pixels.clone()
    pixels[..., top : top + side, left : left + side] = value
    return pixels
