"""Masked-patch pixel reconstruction loss of MAE (He et al. 2021, "Masked Autoencoders Are Scalable Vision
Learners", arXiv:2111.06377, §3 "Reconstruction target").

The decoder predicts the pixels of every patch; the loss is the mean squared error per patch, averaged over the
*masked* patches only (visible patches are not scored, "similar to BERT"). With ``norm_pix_loss`` the target of each
patch is that patch's pixels normalised by their own mean and standard deviation, which the paper finds improves
representation quality (Table 1d: 68.6 -> 73.5 linear probe, ViT-L).

Patch layout: :func:`patchify` flattens each ``p x p`` patch as ``(row, column, channel)``, row-major over the patch
grid; the same layout as ``transformers.ViTMAEForPreTraining.patchify``, so our decoder and transformers' predict the
same vector for the same patch (the loss parity test compares the two exactly).
"""

from __future__ import annotations

import torch
from torch import nn


def patchify(pixel_values: torch.Tensor, patch_size: int) -> torch.Tensor:
    """``(B, C, H, W) -> (B, (H / p) * (W / p), p * p * C)``: each patch flattened as (row, column, channel)."""
    if pixel_values.dim() != 4:
        raise ValueError(f"pixel_values must be (batch, channels, height, width), got {tuple(pixel_values.shape)}")
    batch, channels, height, width = pixel_values.shape
    check_tiles(height, width, patch_size)
    rows, columns = height // patch_size, width // patch_size
    patches = pixel_values.reshape(batch, channels, rows, patch_size, columns, patch_size)
    patches = patches.permute(0, 2, 4, 3, 5, 1)  # (B, rows, columns, p, p, C)
    return patches.reshape(batch, rows * columns, patch_size * patch_size * channels)


def unpatchify(patches: torch.Tensor, patch_size: int, height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`patchify`: ``(B, L, p * p * C) -> (B, C, H, W)``."""
    batch, length, dim = patches.shape
    rows, columns = height // patch_size, width // patch_size
    if rows * columns != length:
        raise ValueError(f"{length} patches do not form a {height}x{width} image with patch size {patch_size}")
    channels = dim // (patch_size * patch_size)
    pixels = patches.reshape(batch, rows, columns, patch_size, patch_size, channels)
    pixels = pixels.permute(0, 5, 1, 3, 2, 4)  # (B, C, rows, p, columns, p)
    return pixels.reshape(batch, channels, height, width)


def check_tiles(height: int, width: int, patch_size: int) -> None:
    """Refuse images that the patch grid does not tile exactly, naming the sizes that would."""
    if height % patch_size or width % patch_size:
        raise ValueError(
            f"images of {height}x{width} pixels are not a whole number of {patch_size}x{patch_size} patches: crop or "
            f"resize them to a multiple of the patch size (e.g. `--global_crop_size "
            f"{max(patch_size, (min(height, width) // patch_size) * patch_size)}`), or choose a patch size that "
            "divides the image size"
        )


def normalized_patch_targets(patches: torch.Tensor, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-patch normalisation of MAE's ``norm_pix_loss``: ``(x - mean) / sqrt(var + eps)`` over each patch's pixels.

    ``patches (B, L, P)`` -> ``(targets (B, L, P), mean (B, L, 1), std (B, L, 1))``; ``var`` is the unbiased
    variance, as in the reference implementation (``target.var(dim=-1)``). ``mean`` / ``std`` undo it (figures).
    """
    mean = patches.mean(dim=-1, keepdim=True)
    std = (patches.var(dim=-1, keepdim=True) + eps) ** 0.5
    return (patches - mean) / std, mean, std


def masked_mean(per_patch: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``sum(per_patch * mask) / sum(mask)`` for ``per_patch, mask (B, L)``; the mean over the patches where mask = 1."""
    if mask.shape != per_patch.shape:
        raise ValueError(f"mask must be (batch, num_patches) = {tuple(per_patch.shape)}, got {tuple(mask.shape)}")
    mask = mask.to(per_patch.dtype)
    return (per_patch * mask).sum() / mask.sum().clamp_min(1.0)


class MaskedPixelLoss(nn.Module):
    """Mean squared error of predicted patch pixels, averaged over masked patches only (He et al. 2021, §3).

    ``loss = sum_{b,l} mask[b,l] * mean_j (pred[b,l,j] - target[b,l,j])^2 / sum_{b,l} mask[b,l]``

    Args:
        patch_size: side ``p`` of the square patches.
        norm_pix_loss: normalise each target patch by its own mean and standard deviation (the paper's default).

    Inputs: ``pixel_values (B, C, H, W)`` (the images the encoder saw, before masking), ``predictions (B, L, p*p*C)``
    (decoder output, patch order of :func:`patchify`), ``mask (B, L)`` (1 = masked = scored, 0 = visible).
    Returns the scalar loss. Related: transformers' ``ViTMAEForPreTraining.forward`` computes the same number.
    """

    def __init__(self, patch_size: int, norm_pix_loss: bool = True):
        super().__init__()
        if patch_size < 1:
            raise ValueError(f"patch_size must be >= 1, got {patch_size}")
        self.patch_size = patch_size
        self.norm_pix_loss = norm_pix_loss

    def targets(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The reconstruction target ``(B, L, p*p*C)`` of ``pixel_values (B, C, H, W)``."""
        target = patchify(pixel_values, self.patch_size)
        if self.norm_pix_loss:
            target = normalized_patch_targets(target)[0]
        return target

    def per_patch_error(self, pixel_values: torch.Tensor, predictions: torch.Tensor) -> torch.Tensor:
        """``(B, L)`` mean squared error of every patch, masked or not (``mean_j (pred - target)^2``)."""
        target = self.targets(pixel_values)
        if predictions.shape != target.shape:
            raise ValueError(
                f"predictions {tuple(predictions.shape)} do not match the patchified target {tuple(target.shape)}; "
                "the decoder must predict patch_size**2 * channels values per patch"
            )
        return (predictions - target).pow(2).mean(dim=-1)

    def forward(self, pixel_values: torch.Tensor, predictions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        per_patch = self.per_patch_error(pixel_values, predictions)
        return masked_mean(per_patch, mask)

    def get_config_dict(self) -> dict:
        return {"patch_size": self.patch_size, "norm_pix_loss": self.norm_pix_loss}
