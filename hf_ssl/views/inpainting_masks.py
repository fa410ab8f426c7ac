"""The regions a context encoder fills in (Pathak et al. 2016, arXiv:1604.07379, §3.3 "Region masks", Fig. 3).

``(B, 1, H, W)`` float masks, 1 = dropped. Three kinds:

- ``"central"``: the central square covering ``fraction`` of the image (a quarter: the 64 x 64 centre of 128 x 128
  images), shrunk by ``shrink`` pixels on each side (the context encoder then predicts the whole square, see
  :mod:`hf_ssl.losses.context_encoder`);
- ``"random_block"``: ``ceil(fraction / block_area)`` squares of side ``block_fraction`` x the image side at random
  positions, possibly overlapping, so they cover *up to* ``fraction`` of the image (the paper's "number of smaller
  possibly overlapping masks, covering up to 1/4 of the image");
- ``"random_region"``: a random blob-shaped region, as the authors' code draws it: uniform noise on a coarse grid
  (``region_resolution`` cells per pixel, 0.06 there), upsampled bicubically, a random window of it thresholded. The
  paper crops PASCAL VOC segmentation shapes; its code thresholds the noise and keeps windows covering 20-30 %; here
  the threshold is the window's ``fraction`` quantile, so every region covers exactly ``fraction``.

The random kinds draw from one ``torch.Generator`` per example, seeded by that example's seed: the same example gets the
same region in any batch, on any process and after a resume.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

MASK_KINDS = ("central", "random_block", "random_region")
#: The dropped share of the image (the paper: a quarter, for every kind).
MASK_FRACTION = 0.25
#: Side of each random block, as a share of the image side (1/4: each block is 1/16 of the image).
BLOCK_FRACTION = 0.25
#: Noise cells per pixel of the random regions (the authors' code: res = 0.06).
REGION_RESOLUTION = 0.06


def central_mask(height: int, width: int, fraction: float = MASK_FRACTION, shrink: int = 0) -> torch.Tensor:
    """``(1, H, W)``: the central square (rectangle for non-square images) of area ``fraction``, minus ``shrink``
    pixels on each side."""
    mask = torch.zeros(1, height, width)
    side_h, side_w = round(height * math.sqrt(fraction)), round(width * math.sqrt(fraction))
    top, left = (height - side_h) // 2 + shrink, (width - side_w) // 2 + shrink
    bottom, right = top + side_h - 2 * shrink, left + side_w - 2 * shrink
    if bottom <= top or right <= left:
        raise ValueError(f"the central region ({side_h}x{side_w} px) is gone after shrinking it by {shrink} px on each "
                         "side: lower overlap_pixels or raise mask_fraction")
    mask[:, top:bottom, left:right] = 1
    return mask


def random_block_mask(height: int, width: int, generator: torch.Generator, fraction: float = MASK_FRACTION,
                      block_fraction: float = BLOCK_FRACTION) -> torch.Tensor:
    """``(1, H, W)``: ``ceil(fraction / block_fraction^2)`` random, possibly overlapping squares."""
    block = max(1, round(min(height, width) * block_fraction))
    count = math.ceil(fraction / block_fraction**2)
    mask = torch.zeros(1, height, width)
    tops = torch.randint(0, height - block + 1, (count,), generator=generator).tolist()
    lefts = torch.randint(0, width - block + 1, (count,), generator=generator).tolist()
    for top, left in zip(tops, lefts):
        mask[:, top:top + block, left:left + block] = 1
    return mask


def random_region_mask(height: int, width: int, generator: torch.Generator, fraction: float = MASK_FRACTION,
                       resolution: float = REGION_RESOLUTION) -> torch.Tensor:
    """``(1, H, W)``: a blob-shaped region covering ``fraction`` of the image (thresholded smooth noise)."""
    cells = max(1, math.ceil(max(height, width) * resolution)) + 3  # a margin for the bicubic kernel and the window
    noise = torch.rand(1, 1, cells, cells, generator=generator)
    size = max(math.ceil(cells / resolution), height + 1, width + 1)
    smooth = F.interpolate(noise, size=(size, size), mode="bicubic", align_corners=False)[0]
    top = int(torch.randint(0, size - height + 1, (), generator=generator))
    left = int(torch.randint(0, size - width + 1, (), generator=generator))
    window = smooth[:, top:top + height, left:left + width]
    threshold = torch.quantile(window.flatten(), fraction)
    return (window <= threshold).float()


def inpainting_masks(kind: str, seeds: torch.Tensor | None, height: int, width: int, *,
                     fraction: float = MASK_FRACTION, shrink: int = 0, block_fraction: float = BLOCK_FRACTION,
                     resolution: float = REGION_RESOLUTION, batch_size: int | None = None) -> torch.Tensor:
    """``(B, 1, H, W)`` masks of ``kind`` (:data:`MASK_KINDS`), one per seed in ``seeds (B,)`` (the central kind needs
    no seeds: give ``batch_size``). ``shrink`` applies to the central kind only."""
    if kind not in MASK_KINDS:
        raise ValueError(f"mask kind must be one of {MASK_KINDS}, got {kind!r}")
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"the masked fraction must be strictly between 0 and 1 (the paper's is 0.25), got {fraction}")
    if kind == "central":
        count = batch_size if seeds is None else len(seeds)
        return central_mask(height, width, fraction, shrink).expand(count, -1, -1, -1).clone()
    if seeds is None:
        raise ValueError(f"{kind} masks need one seed per example")
    masks = []
    for seed in seeds.tolist():
        generator = torch.Generator().manual_seed(int(seed))
        if kind == "random_block":
            masks.append(random_block_mask(height, width, generator, fraction, block_fraction))
        else:
            masks.append(random_region_mask(height, width, generator, fraction, resolution))
    return torch.stack(masks)
