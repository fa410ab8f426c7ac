"""Square tiles cut from a grid over each image, with gaps and random jitter between them: the views of jigsaw puzzles
(Noroozi & Favaro 2016, arXiv:1603.09246) and relative patch location (Doersch et al. 2015, arXiv:1505.05192).

Geometry (:class:`TileGrid`): the central ``grid_size * cell`` square of a ``side x side`` image is cut into
``grid_size x grid_size`` cells of side ``cell = side // grid_size``; tile ``i`` (row-major: ``row = i // grid_size``,
``col = i % grid_size``) has side ``tile_size`` and sits at the centre of its cell, shifted by a uniform integer in
``[-jitter, jitter]`` along each axis, independently per tile. Neighbouring tiles are therefore
``cell - tile_size`` pixels apart on average and never touch when ``2 * jitter < cell - tile_size``: both papers keep
such a gap so that the network cannot solve the task from low-level cues (edges continuing across the border,
Doersch et al. §3; Noroozi & Favaro §3.2), and the jitter keeps exact alignment from giving the position away.

Randomness comes from the global torch RNG (checkpointed by the Trainer, so a resumed run cuts the same tiles).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TileGrid:
    """A ``grid_size x grid_size`` layout of ``tile_size`` tiles with up to ``jitter`` px of random shift, in a
    ``side x side`` image (see the module docstring)."""

    side: int
    grid_size: int
    tile_size: int
    jitter: int

    def __post_init__(self):
        if self.grid_size < 2:
            raise ValueError(f"grid_size must be >= 2, got {self.grid_size}")
        cell = self.cell_size
        if not 1 <= self.tile_size <= cell:
            raise ValueError(
                f"tile_size {self.tile_size} does not fit the {cell} px cells of a {self.grid_size}x{self.grid_size} "
                f"grid over {self.side} px images: choose a tile_size between 1 and {cell} or use larger images"
            )
        if self.jitter < 0 or 2 * self.jitter > cell - self.tile_size:
            raise ValueError(
                f"tile_jitter {self.jitter} must be between 0 and {(cell - self.tile_size) // 2} (half the "
                f"{cell - self.tile_size} px left between a {self.tile_size} px tile and its {cell} px cell)"
            )

    @property
    def cell_size(self) -> int:
        return self.side // self.grid_size

    @property
    def num_tiles(self) -> int:
        return self.grid_size**2

    def origins(self) -> torch.Tensor:
        """``(num_tiles, 2)`` top-left ``(y, x)`` of each tile without jitter, row-major."""
        cell = self.cell_size
        margin = (self.side - self.grid_size * cell) // 2
        centring = (cell - self.tile_size) // 2
        starts = margin + centring + cell * torch.arange(self.grid_size)
        return torch.cartesian_prod(starts, starts)

    def positions(self, tile_indices: torch.Tensor, jitter: bool = True) -> torch.Tensor:
        """``tile_indices (B, T)`` (grid positions, row-major) -> ``(B, T, 2)`` top-left ``(y, x)`` of each tile, each
        shifted by its own random jitter (``torch.randint``, global RNG) unless ``jitter=False``."""
        positions = self.origins().to(tile_indices.device)[tile_indices]
        if jitter and self.jitter > 0:
            positions = positions + torch.randint(
                -self.jitter, self.jitter + 1, positions.shape, device=tile_indices.device
            )
        return positions

    def crop(self, images: torch.Tensor, tile_indices: torch.Tensor, jitter: bool = True) -> torch.Tensor:
        """Cut tiles ``tile_indices (B, T)`` of every image ``images (B, C, side, side)`` -> ``(B, T, C, t, t)``."""
        if images.dim() != 4 or tuple(images.shape[-2:]) != (self.side, self.side):
            raise ValueError(
                f"images must be (batch, channels, {self.side}, {self.side}), got {tuple(images.shape)}"
            )
        return crop_tiles(images, self.positions(tile_indices, jitter), self.tile_size)


def crop_tiles(images: torch.Tensor, positions: torch.Tensor, tile_size: int) -> torch.Tensor:
    """``images (B, C, H, W)``, top-left ``positions (B, T, 2)`` as ``(y, x)`` -> tiles ``(B, T, C, t, t)``
    (one gather; gradients flow to ``images``)."""
    offsets = torch.arange(tile_size, device=images.device)
    rows = (positions[..., 0, None, None] + offsets[:, None]).long()  # (B, T, t, 1)
    cols = (positions[..., 1, None, None] + offsets[None, :]).long()  # (B, T, 1, t)
    batch = torch.arange(images.shape[0], device=images.device)[:, None, None, None]
    return images.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 1, 4, 2, 3)


def largest_tile_size(cell_size: int, fraction: float, multiple: int = 1) -> int:
    """The largest multiple of ``multiple`` (the encoder's patch size; 1 for CNNs) that is at most ``fraction`` of
    ``cell_size`` (and at least ``multiple``, as long as that leaves room in the cell)."""
    size = int(fraction * cell_size) // multiple * multiple
    size = max(size, multiple)
    if size > cell_size:
        raise ValueError(
            f"the cells are {cell_size} px but the encoder's patches are {multiple} px: use larger images, a smaller "
            "grid_size or a smaller patch_size"
        )
    return size


def drop_color_channels(tiles: torch.Tensor, noise_scale: float = 0.01) -> torch.Tensor:
    """Colour dropping (Doersch et al. 2015, §3 "Avoiding trivial solutions"): in each tile keep one colour channel at
    random and replace the other two with Gaussian noise of ``noise_scale`` times that channel's standard deviation,
    so that chromatic aberration (which varies across the lens) cannot tell where a tile came from.

    ``tiles (..., 3, t, t)`` -> the same shape; randomness from the global torch RNG.
    """
    if tiles.shape[-3] != 3:
        raise ValueError(f"colour dropping needs 3-channel tiles, got {tiles.shape[-3]} channels")
    flat = tiles.reshape(-1, 3, *tiles.shape[-2:])
    kept = torch.randint(3, (flat.shape[0],), device=tiles.device)
    keep_mask = torch.nn.functional.one_hot(kept, 3).to(tiles.dtype)[:, :, None, None]  # (N, 3, 1, 1)
    kept_channel = flat[torch.arange(flat.shape[0], device=tiles.device), kept]  # (N, t, t)
    scale = noise_scale * kept_channel.flatten(1).std(dim=1, unbiased=False)[:, None, None, None]
    noise = torch.randn_like(flat) * scale
    return (flat * keep_mask + noise * (1 - keep_mask)).reshape(tiles.shape)


def standardize_tiles(tiles: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Normalise each tile to zero mean and unit standard deviation over its channels and pixels (Noroozi & Favaro
    2016, §3.2: so that tiles cannot be matched by their mean colour or contrast). ``(..., C, t, t)`` -> same shape."""
    dims = (-3, -2, -1)
    mean = tiles.mean(dim=dims, keepdim=True)
    std = tiles.std(dim=dims, keepdim=True, unbiased=False)
    return (tiles - mean) / (std + eps)


def patch_multiple(encoder_config) -> int:
    """The side every tile must be a multiple of for ``encoder_config``: its ``patch_size`` (ViT), else 1 (CNNs)."""
    patch = getattr(encoder_config, "patch_size", None)
    if patch is None:
        return 1
    return int(patch if isinstance(patch, int) else patch[0])


def check_tile_multiple(tile_size: int, multiple: int) -> None:
    """Raise a clear error when a ViT with ``multiple`` px patches cannot tile ``tile_size`` px tiles."""
    if tile_size % multiple:
        raise ValueError(
            f"tile_size {tile_size} is not a multiple of the encoder's patch size {multiple}: choose a tile_size among "
            f"{[multiple * k for k in range(1, 5)]} (or leave it unset to size it automatically)"
        )
