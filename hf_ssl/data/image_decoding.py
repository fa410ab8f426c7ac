"""Decoding image files: every Pillow mode to correct RGB, decoding errors that name the file, and a fast scan for
unreadable files before training.

- :func:`to_rgb`: the one conversion of a decoded image to 8-bit RGB that every image pipeline of hf_ssl uses (views,
  probes, collators). Pillow's own ``image.convert("RGB")`` clips 16-bit and 32-bit data to 255 (a 16-bit PNG becomes
  a white square), drops alpha (transparent pixels show whatever colour they hold) and ignores the EXIF orientation;
  :func:`to_rgb` scales, composites over :data:`ALPHA_BACKGROUND` and applies the orientation.
- :class:`PathReportingImage`: the ``datasets.Image`` feature of the standard form (:mod:`hf_ssl.data.images`); a file
  that fails to decode raises :class:`UnreadableImageError` with its path, wherever that happens (a data-loader worker
  in the middle of a run included).
- :func:`find_unreadable_images`: a parallel pre-scan of image files (header, PNG checksums, a reduced-size JPEG
  decode that reads every byte), so a bad file stops a run before its first step, with every bad file named.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from datasets import Image as ImageFeature
from PIL import Image, ImageOps

#: The colour transparent pixels are composited over: white, as image viewers and browsers show transparent PNGs
#: (icons, product shots, emoji).
ALPHA_BACKGROUND = (255, 255, 255)

#: Largest value of 16-bit samples (``I;16`` images, and ``I`` images within this range: Pillow opens 16-bit PNGs
#: and TIFFs as either).
UINT16_MAX = 65535

#: Side of the reduced JPEG decode of the scan: JPEG decodes at 1/8 scale without the inverse DCT's full cost, yet
#: reads every byte, so truncated files fail.
_SCAN_DRAFT_SIZE = (64, 64)

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


class UnreadableImageError(OSError):
    """An image file that Pillow cannot decode; the message names the file and the fix."""


def to_rgb(image):
    """A PIL image of any mode -> the same image as 8-bit ``RGB`` (other inputs, e.g. tensors, are returned as is).

    - EXIF orientation: applied (``PIL.ImageOps.exif_transpose``), so rotated phone photos stand upright.
    - ``I;16`` (16-bit): values scaled by 255 / 65535, not clipped at 255.
    - ``I`` (32-bit integer): read as 16-bit when all values lie in [0, 65535] (how Pillow may open 16-bit PNGs);
      otherwise scaled from its minimum to its maximum.
    - ``F`` (32-bit float): values in [0, 1] are scaled by 255; other ranges from their minimum to their maximum.
    - alpha (``RGBA``, ``LA``, ``PA``, palette or ``L`` / ``RGB`` images with a transparent colour): composited over
      :data:`ALPHA_BACKGROUND` (white).
    - ``1``, ``L``, ``P``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``: Pillow's conversion.
    """
    if not isinstance(image, Image.Image):
        return image
    if image.getexif().get(Image.ExifTags.Base.Orientation, 1) != 1:
        image = ImageOps.exif_transpose(image)
    if image.mode in _SIXTEEN_BIT_MODES or image.mode in ("I", "F"):
        image = _scaled_to_8_bit(image)
    if image.mode in _ALPHA_MODES or (image.mode in ("P", "L", "RGB") and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*ALPHA_BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def _scaled_to_8_bit(image: Image.Image) -> Image.Image:
    """A mode ``I;16*``, ``I`` or ``F`` image as mode ``L``, scaled as :func:`to_rgb` says."""
    values = np.asarray(image).astype(np.float64)
    if image.mode in _SIXTEEN_BIT_MODES:
        low, high = 0.0, float(UINT16_MAX)
    elif image.mode == "F" and values.size and 0.0 <= values.min() and values.max() <= 1.0:
        low, high = 0.0, 1.0
    elif image.mode == "I" and values.size and 0 <= values.min() and values.max() <= UINT16_MAX:
        low, high = 0.0, float(UINT16_MAX)
    else:
        low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
    scaled = (values - low) * (255.0 / max(high - low, 1e-12))
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")


@dataclass
class PathReportingImage(ImageFeature):
    """``datasets.Image`` whose decoding failures raise :class:`UnreadableImageError` naming the file.

    It decodes exactly as ``datasets.Image`` does (mode as stored, EXIF orientation applied) and is saved and
    reloaded as a plain ``Image`` feature. Encoded bytes without a path are named as such.
    """

    _type: str = field(default="Image", init=False, repr=False)

    def decode_example(self, value, token_per_repo_id=None):
        try:
            return super().decode_example(value, token_per_repo_id=token_per_repo_id)
        except Exception as error:  # noqa: BLE001 - re-raised with the file named
            where = (value.get("path") if isinstance(value, dict) else value) or "an image stored as bytes"
            raise UnreadableImageError(
                f"cannot decode image file {where} ({type(error).__name__}: {error}); replace or remove it, or train "
                "with --skip_bad_files (and the file scan on: --check_image_files true) to leave unreadable files out"
            ) from error


def check_image_file(path: str | os.PathLike) -> str | None:
    """``None`` when ``path`` decodes, else why not (one line). Cheap: PNGs are checked by their chunk checksums
    (``Image.verify``), JPEGs by a reduced-size decode that still reads every byte, other formats fully decoded."""
    try:
        with Image.open(path) as image:
            if image.format == "PNG":
                image.verify()
                return None
            if image.format == "JPEG":
                image.draft("RGB", _SCAN_DRAFT_SIZE)
            image.load()
    except Exception as error:  # noqa: BLE001 - any failure means "unreadable"
        return f"{type(error).__name__}: {error}"
    return None


def find_unreadable_images(paths: Sequence[str | os.PathLike], max_workers: int | None = None) -> dict[str, str]:
    """``{path: reason}`` of the files among ``paths`` that do not decode (:func:`check_image_file`), checked in
    parallel threads (Pillow's decoders release the GIL); in the order of ``paths``."""
    paths = [str(path) for path in paths]
    workers = max_workers or min(32, (os.cpu_count() or 1) * 4)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        reasons = list(pool.map(check_image_file, paths))
    return {path: reason for path, reason in zip(paths, reasons) if reason is not None}
