"""Colour spaces of normalised image batches: CIE Lab (through kornia) and the grey image an encoder sees of L.

Model inputs are normalised RGB (``(rgb - mean) / std``, what :mod:`hf_ssl.views` and the published image processor
produce). Colourisation (Zhang et al. 2016, arXiv:1603.08511) needs the Lab image of that input (sRGB, D65: kornia's
``rgb_to_lab``, which applies the sRGB transfer curve first) and shows the encoder the lightness ``L`` alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import kornia
import torch


def _statistics(mean: Sequence[float], std: Sequence[float], like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean_t = torch.as_tensor(list(mean), dtype=like.dtype, device=like.device).view(1, -1, 1, 1)
    std_t = torch.as_tensor(list(std), dtype=like.dtype, device=like.device).view(1, -1, 1, 1)
    return mean_t, std_t


def normalised_rgb_to_lab(pixel_values: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(B, 3, H, W)`` normalised RGB -> ``(B, 3, H, W)`` Lab (L in [0, 100], a and b within about [-110, 110]).

    The RGB values are un-normalised with ``mean`` / ``std`` and clipped to [0, 1] (resampling may overshoot a little).
    """
    if pixel_values.dim() != 4 or pixel_values.shape[1] != 3:
        raise ValueError(
            f"colour conversion needs RGB images (batch, 3, height, width), got {tuple(pixel_values.shape)}"
        )
    pixels = pixel_values.float()
    mean_t, std_t = _statistics(mean, std, pixels)
    return kornia.color.rgb_to_lab((pixels * std_t + mean_t).clamp(0, 1))


def lab_to_normalised_rgb(lab: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Inverse of :func:`normalised_rgb_to_lab`: ``(B, 3, H, W)`` Lab -> normalised RGB (out-of-gamut colours
    clipped)."""
    mean_t, std_t = _statistics(mean, std, lab.float())
    return (kornia.color.lab_to_rgb(lab.float(), clip=True) - mean_t) / std_t


def grey_from_lightness(lightness: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(B, 1, H, W)`` Lab lightness -> ``(B, 3, H, W)`` normalised grey image: the sRGB image of Lab ``(L, 0, 0)``,
    the photograph with its colour removed (R = G = B), normalised like any input. An RGB encoder thus sees the
    lightness exactly as the image processor presents a grey photograph, and nothing of the colour."""
    if lightness.dim() != 4 or lightness.shape[1] != 1:
        raise ValueError(f"lightness must be (batch, 1, height, width), got {tuple(lightness.shape)}")
    lightness = lightness.float()
    colourless = torch.cat([lightness, torch.zeros_like(lightness).expand(-1, 2, -1, -1)], dim=1)
    return lab_to_normalised_rgb(colourless, mean, std)
