"""Self-attention maps of a ViT's CLS token, per head, as in the DINO paper (Caron et al. 2021, arXiv:2104.14294,
Figs. 1 and 3): where the last layer's CLS query looks, on held-out images.

* :func:`last_layer_cls_attention`: the CLS row of the last layer's attention, ``(batch, heads, tokens)``, a softmax
  row (it sums to 1 over CLS + patches).
* :func:`cls_attention_maps`: its patch part on the patch grid, ``(batch, heads, grid_h, grid_w)``.
* :func:`save_attention_figure`: one row per image, the image and one heat map per head (upsampled to the image).
* :class:`AttentionMapFigure`: an evaluator (``model -> {}``) writing ``attention_maps.png`` on fixed held-out images
  at every evaluation; the run's card shows the last one. An encoder without patch attention (a ResNet) gets none.

Any transformers ViT-like encoder that returns attentions works (``ViTModel``, ``DeiTModel``, ``Dinov2Model``): the
attention is computed with the ``eager`` implementation for the call (SDPA does not return its weights).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.functional import interpolate
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from ..data.image_decoding import to_rgb
from .features import (
    as_pil_image,
    check_image_dataset,
    frozen,
    module_device,
    published_encoder,
)

logger = logging.getLogger(__name__)

DEFAULT_FIGURE_NAME = "attention_maps.png"


def has_attention_maps(encoder: nn.Module) -> bool:
    """Whether ``encoder`` (or an hf_ssl model's published encoder) is a patch transformer with attention heads."""
    config = getattr(published_encoder(encoder), "config", None)
    return getattr(config, "patch_size", None) is not None and getattr(config, "num_attention_heads", None) is not None


@contextlib.contextmanager
def eager_attention(encoder: nn.Module):
    """Run ``encoder`` with the eager attention implementation inside (SDPA and flash attention return no weights)."""
    config = encoder.config
    previous = getattr(config, "_attn_implementation", None)
    if previous in (None, "eager"):
        yield
        return
    encoder.set_attn_implementation("eager")
    try:
        yield
    finally:
        encoder.set_attn_implementation(previous)


@torch.no_grad()
def last_layer_cls_attention(encoder: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """The last layer's attention weights of the CLS query, ``(batch, heads, tokens)``: tokens are CLS, any register
    tokens, then the patches in raster order. Each row is a softmax, so it sums to 1.

    ``encoder``: a ViT-like transformers model or an hf_ssl pretraining model (its published encoder is used, for
    DINO the teacher). ``pixel_values``: ``(batch, C, H, W)``, normalised as in training; a resolution other than the
    encoder's runs with interpolated position embeddings.
    """
    model = published_encoder(encoder)
    if not has_attention_maps(model):
        raise ValueError(
            f"{type(model).__name__} has no patch attention (no patch_size / num_attention_heads in its config); "
            "attention maps need a ViT-like encoder"
        )
    size = getattr(model.config, "image_size", None)
    kwargs = {"interpolate_pos_encoding": True} if size is not None and tuple(pixel_values.shape[-2:]) != (
        (size, size) if isinstance(size, int) else tuple(size)) else {}
    with frozen(model), eager_attention(model):
        outputs = model(pixel_values=pixel_values.to(module_device(model)), output_attentions=True, **kwargs)
    if not outputs.attentions:
        raise ValueError(f"{type(model).__name__} returned no attention weights with output_attentions=True")
    return outputs.attentions[-1][:, :, 0, :].float().cpu()


def cls_attention_maps(encoder: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """The CLS attention to each patch, per head, on the patch grid: ``(batch, heads, H // patch, W // patch)``.

    The maps are the patch entries of :func:`last_layer_cls_attention` (not renormalised: with the CLS token's
    attention to itself and any registers they sum to 1).
    """
    rows = last_layer_cls_attention(encoder, pixel_values)
    patch = published_encoder(encoder).config.patch_size
    patch = patch if isinstance(patch, int) else patch[0]
    grid_h, grid_w = pixel_values.shape[-2] // patch, pixel_values.shape[-1] // patch
    return rows[:, :, -grid_h * grid_w:].reshape(*rows.shape[:2], grid_h, grid_w)


def save_attention_figure(
    pixel_values: torch.Tensor,
    maps: torch.Tensor,
    path: str | Path,
    mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
    std: Sequence[float] = IMAGENET_DEFAULT_STD,
    title: str | None = None,
) -> Path:
    """Write a PNG with one row per image: the image (``pixel_values (B, C, H, W)``, un-normalised with ``mean`` /
    ``std``) and one heat map per head (``maps (B, heads, h, w)``, upsampled to ``H x W`` by nearest neighbour, each
    scaled to its own range, as DINO's ``visualize_attention.py``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = (pixel_values.detach().float().cpu() * torch.tensor(list(std)).view(1, -1, 1, 1)
              + torch.tensor(list(mean)).view(1, -1, 1, 1)).clamp(0, 1)
    heat = interpolate(maps.float(), size=tuple(images.shape[-2:]), mode="nearest")
    count, heads = heat.shape[:2]
    figure, axes = plt.subplots(count, heads + 1, figsize=(1.4 * (heads + 1), 1.4 * count + (0.5 if title else 0.2)),
                                squeeze=False)
    for row in range(count):
        axes[row, 0].imshow(images[row].permute(1, 2, 0).numpy(), interpolation="nearest")
        for head in range(heads):
            axes[row, head + 1].imshow(heat[row, head].numpy(), cmap="inferno", interpolation="nearest")
    for column in range(heads + 1):
        axes[0, column].set_title("image" if column == 0 else f"head {column}", fontsize=8)
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
    if title:
        figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


class AttentionMapFigure:
    """Evaluator: writes the last layer's CLS attention per head on fixed held-out images to ``output_path`` and
    returns no metric (``{}``). Images are spread evenly over ``dataset`` (class-sorted splits show many classes).

    Args:
        dataset: held-out ``datasets.Dataset`` with an image column.
        output_path: where the PNG goes (overwritten at each call).
        transform: PIL image -> ``(C, H, W)`` tensor at the encoder's input size (the evaluation transform).
        num_images: images (rows) in the figure.
        mean / std: the normalisation of ``transform``, undone for display.
    """

    def __init__(
        self,
        dataset,
        output_path: str | Path,
        transform: Callable[[Any], torch.Tensor],
        *,
        num_images: int = 4,
        mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
        std: Sequence[float] = IMAGENET_DEFAULT_STD,
        image_column: str = "image",
    ):
        if num_images < 1:
            raise ValueError(f"num_images must be >= 1, got {num_images}")
        check_image_dataset(dataset, image_column, "dataset")
        rows = torch.linspace(0, len(dataset) - 1, min(num_images, len(dataset))).round().long().unique().tolist()
        images = dataset.select_columns([image_column]).with_format(None).select(rows)[image_column]
        self.pixel_values = torch.stack([transform(to_rgb(as_pil_image(image))) for image in images])
        self.output_path = Path(output_path)
        self.mean, self.std = list(mean), list(std)
        self.skipped = False

    def __call__(self, model) -> dict[str, float]:
        if not has_attention_maps(model):  # a CNN encoder (DINO's ResNet setting) has no attention to show
            if not self.skipped:
                logger.info("no attention-map figure: %s has no patch attention", type(published_encoder(model)).__name__)
            self.skipped = True
            return {}
        maps = cls_attention_maps(model, self.pixel_values)
        title = "Last-layer CLS self-attention per head, held-out images"
        save_attention_figure(self.pixel_values, maps, self.output_path, self.mean, self.std, title=title)
        return {}
