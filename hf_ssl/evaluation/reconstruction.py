"""The MAE reconstruction figure (He et al. 2021, Figs. 2-4): original / masked / reconstruction, one column per image.

:class:`ReconstructionFigure` is an evaluator (a callable ``model -> metrics`` for
:class:`hf_ssl.training.trainer.SSLTrainer`
and the final evaluation): on a fixed set of held-out images and fixed masks it writes the PNG and returns the
held-out masked-patch loss, so figures and numbers from successive evaluations are comparable.

Reconstruction panel: visible patches are the original pixels, masked patches the decoder's prediction (as the
paper's figures, "reconstruction + visible"). A model trained with ``norm_pix_loss`` predicts each patch normalised
by its own mean and standard deviation; the figure puts the prediction back on the original patch's mean and
standard deviation (the information the loss withheld), as the MAE authors' visualisation does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from ..data.image_decoding import to_rgb
from ..losses.masked_pixels import normalized_patch_targets, patchify, unpatchify
from .features import as_pil_image, check_image_dataset

DEFAULT_FIGURE_NAME = "reconstructions.png"


@torch.no_grad()
def reconstruction_panels(
    model, pixel_values: torch.Tensor, noise: torch.Tensor | None = None
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Run an MAE model (``logits``/``mask`` outputs, ``loss_fn.patch_size``) on ``pixel_values (B, C, H, W)``.

    Returns ``({"original", "masked", "reconstruction"}: (B, C, H, W) in the model's input space, loss)``. Masked
    patches of the ``"masked"`` panel are 0 in input space (the dataset's mean colour once un-normalised).
    """
    patch_size = model.loss_fn.patch_size
    height, width = pixel_values.shape[-2:]
    was_training = model.training
    model.eval()
    try:
        outputs = model(pixel_values=pixel_values, noise=noise)
    finally:
        model.train(was_training)
    patches = patchify(pixel_values, patch_size)
    predicted = outputs.logits.float()
    if model.loss_fn.norm_pix_loss:
        _, mean, std = normalized_patch_targets(patches)
        predicted = predicted * std + mean
    mask = outputs.mask.unsqueeze(-1).to(patches.dtype)  # (B, L, 1), 1 = masked
    panels = {
        "original": pixel_values,
        "masked": unpatchify(patches * (1 - mask), patch_size, height, width),
        "reconstruction": unpatchify(patches * (1 - mask) + predicted * mask, patch_size, height, width),
    }
    return panels, outputs.loss


def save_reconstruction_figure(
    panels: dict[str, torch.Tensor],
    path: str | Path,
    mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
    std: Sequence[float] = IMAGENET_DEFAULT_STD,
    title: str | None = None,
) -> Path:
    """Write ``panels`` (``{row name: (B, C, H, W)}`` in normalised input space) as a labelled PNG grid.

    One row per panel, one column per image; pixels are un-normalised with ``mean`` / ``std`` and clipped to [0, 1].
    The grid is assembled with ``torchvision.utils.make_grid`` and drawn with matplotlib (row labels).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from torchvision.utils import make_grid

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mean_t = torch.tensor(list(mean)).view(1, -1, 1, 1)
    std_t = torch.tensor(list(std)).view(1, -1, 1, 1)
    rows = list(panels.items())
    count = rows[0][1].shape[0]
    figure, axes = plt.subplots(len(rows), 1, figsize=(max(4.0, 1.1 * count), 1.3 * len(rows) + (0.4 if title else 0)))
    for axis, (name, images) in zip(axes, rows):
        images = (images.detach().float().cpu() * std_t + mean_t).clamp(0, 1)
        grid = make_grid(images, nrow=count, padding=2, pad_value=1.0)
        axis.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
        axis.set_xticks([])
        axis.set_yticks([])
        axis.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
        for spine in axis.spines.values():
            spine.set_visible(False)
    if title:
        figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=150)
    plt.close(figure)
    return path


class ReconstructionFigure:
    """Evaluator: writes ``output_dir/reconstructions.png`` and returns ``{"masked_pixel_loss": float}``.

    A model with a ``figure_panels(pixel_values, generator) -> (panels, metrics, title)`` method (colourisation, the
    context encoder) supplies its own rows, held-out metrics and title; the figure is drawn the same way.

    Args:
        dataset: held-out ``datasets.Dataset`` with an image column.
        output_path: where the PNG goes (overwritten at each call).
        transform: PIL image -> ``(C, H, W)`` tensor at the model's input size (the evaluation transform).
        num_images: images shown in the figure (spread evenly over ``dataset``, so class-sorted splits show many
            classes).
        num_loss_images: images over which the held-out loss is averaged (the figure's images among them).
        seed: seeds the fixed masks (the same at every call).
        mean / std: the normalisation of ``transform``, undone for display.
    """

    def __init__(
        self,
        dataset,
        output_path: str | Path,
        transform: Callable[[Any], torch.Tensor],
        *,
        num_images: int = 8,
        num_loss_images: int = 256,
        seed: int = 0,
        mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
        std: Sequence[float] = IMAGENET_DEFAULT_STD,
        image_column: str = "image",
    ):
        if num_images < 1:
            raise ValueError(f"num_images must be >= 1, got {num_images}")
        check_image_dataset(dataset, image_column, "dataset")
        count = min(len(dataset), max(num_images, num_loss_images))
        # Evenly spaced rows: split files sorted by class (CIFAR-10's) still show every class.
        rows = torch.linspace(0, len(dataset) - 1, count).round().long().unique().tolist()
        plain = dataset.select_columns([image_column]).with_format(None)
        images = plain.select(rows)[image_column]
        count = len(rows)
        self.pixel_values = torch.stack([transform(to_rgb(as_pil_image(image))) for image in images])
        self.num_images = min(num_images, count)
        self.output_path = Path(output_path)
        self.seed = seed
        self.mean, self.std = list(mean), list(std)
        self.calls = 0

    def __call__(self, model) -> dict[str, float]:
        device = next(model.parameters()).device
        pixels = self.pixel_values.to(device)
        generator = torch.Generator().manual_seed(self.seed)
        if hasattr(model, "figure_panels"):  # other generative methods (colourisation, context encoder) draw their own
            panels, metrics, title = model.figure_panels(pixels, generator)
        else:
            noise = torch.rand(pixels.shape[0], model.num_patches, generator=generator).to(device)
            panels, loss = reconstruction_panels(model, pixels, noise)
            metrics = {"masked_pixel_loss": float(loss)}
            title = f"MAE reconstructions of held-out images ({model.method_config.mask_ratio:.0%} of patches masked)"
            if model.loss_fn.norm_pix_loss:
                title += "\nnormalised-pixel model: predicted patches shown at the original patch's mean and std"
        shown_rows = torch.linspace(0, pixels.shape[0] - 1, self.num_images).round().long().unique().to(device)
        shown = {name: images[shown_rows] for name, images in panels.items()}
        save_reconstruction_figure(shown, self.output_path, self.mean, self.std, title=title)
        self.calls += 1
        return metrics
