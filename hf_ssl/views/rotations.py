"""Images rotated by multiples of 90 degrees, the views of rotation prediction (Gidaris et al. 2018, "Unsupervised
Representation Learning by Predicting Image Rotations", arXiv:1803.07728).

Label ``k`` (0, 1, 2, 3) means a rotation by ``k * 90`` degrees counter-clockwise (as displayed, rows downwards):
``torch.rot90(image, k, dims=(-2, -1))``. These four rotations, unlike arbitrary angles, leave no interpolation
artefact or empty corner that would give the label away (§3.2 of the paper).
"""

from __future__ import annotations

import torch

#: The rotations of label 0, 1, 2, 3, in degrees counter-clockwise.
ROTATION_DEGREES = (0, 90, 180, 270)


def check_square(images: torch.Tensor) -> None:
    """Raise a clear error unless ``images`` is ``(batch, channels, side, side)``."""
    if images.dim() != 4 or images.shape[-1] != images.shape[-2]:
        raise ValueError(
            f"rotation needs square images (batch, channels, side, side), got {tuple(images.shape)}: use square crops "
            "(--global_crop_size N)"
        )


def rotate_quarter_turns(images: torch.Tensor, quarter_turns: torch.Tensor) -> torch.Tensor:
    """Rotate each image by its own multiple of 90 degrees.

    Args:
        images: ``(batch, C, S, S)``.
        quarter_turns: ``(batch,)`` integers in 0..3 (label ``k``: ``k * 90`` degrees counter-clockwise).

    Returns:
        ``(batch, C, S, S)``.
    """
    check_square(images)
    if quarter_turns.shape != images.shape[:1]:
        raise ValueError(f"quarter_turns must be (batch,) = ({images.shape[0]},), got {tuple(quarter_turns.shape)}")
    rotated = images.clone()
    for turns in range(1, len(ROTATION_DEGREES)):
        chosen = quarter_turns == turns
        if chosen.any():
            rotated[chosen] = torch.rot90(images[chosen], turns, dims=(-2, -1))
    return rotated


def four_rotations(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image in all four rotations (the paper feeds the four copies of an image in the same batch, §3.2).

    ``images (batch, C, S, S)`` -> ``rotated (4 * batch, C, S, S)``, rotation-major (rows ``k * batch`` to
    ``(k + 1) * batch - 1`` are the images rotated by ``k * 90`` degrees), and ``labels (4 * batch,)``.
    """
    check_square(images)
    rotated = torch.cat([torch.rot90(images, turns, dims=(-2, -1)) for turns in range(len(ROTATION_DEGREES))])
    labels = torch.arange(len(ROTATION_DEGREES), device=images.device).repeat_interleave(images.shape[0])
    return rotated, labels


def random_rotations(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image in one rotation drawn uniformly from the four, with the global torch RNG (which the Trainer
    checkpoints, so a resumed run draws the same ones): ``(batch, C, S, S)`` -> ``rotated``, ``labels (batch,)``.
    An unbiased estimate of :func:`four_rotations`' loss at a quarter of its cost (the auxiliary rotation loss)."""
    labels = torch.randint(len(ROTATION_DEGREES), (images.shape[0],), device=images.device)
    return rotate_quarter_turns(images, labels), labels
