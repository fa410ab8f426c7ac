"""Context encoders: feature learning by inpainting (Pathak et al. 2016, "Context Encoders: Feature Learning by
Inpainting", arXiv:1604.07379).

A region of each image is dropped (filled with the mean colour) and the network reconstructs it from its context.
With a ViT: the encoder sees the *whole* corrupted image, every patch included (the dropped pixels are 0 in the
normalised input, i.e. the normalisation mean: the ImageNet mean by default, which is what the authors' code fills
with), and a per-patch MLP head over its patch tokens predicts the pixels of every patch; the loss scores the dropped
region only (:mod:`hf_ssl.losses.context_encoder`).

- Regions (``mask_type``, §3.3 and :mod:`hf_ssl.views.inpainting_masks`): ``"central"`` (the default, a quarter of the
  image at its centre: the paper's main inpainting setting), ``"random_block"`` and ``"random_region"``. §3.3 notes
  that features learned with the fixed central square latch onto its boundary and favours random regions for feature
  learning (the CIFAR-10 recipe uses them). The random kinds are drawn per example from ``mask_seed`` (one seed per
  example, emitted by :class:`hf_ssl.views.single_view.SingleViewTransform`), or from the torch RNG without it;
  either way a resumed run draws the same regions.
- Loss: the masked L2 of Eq. 1, over the dropped region grown by ``overlap_pixels`` into the context, that border
  weighted ``overlap_loss_weight`` x (the authors' code: 4 px and 10x at 128 px; 1 px suits 32 px images). For the
  central region the hole is the central square shrunk by ``overlap_pixels``, so the predicted region is exactly the
  central square, as in the authors' code.
- Not built: the adversarial term of §3.2 (a discriminator and the joint loss ``0.999 L_rec + 0.001 L_adv``). It
  sharpens the fills, but it needs a second optimiser alternating with this one, which a single ``Trainer`` step does
  not have, and the paper itself keeps it out of its feature-learning runs (§3.2: AlexNet training diverged with it).
  This is the L2-only context encoder.

The published encoder is the plain ``ViTModel`` (``AutoModel.from_pretrained`` loads it): downstream it sees whole,
uncorrupted images.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import PretrainedConfig
from transformers.utils import ModelOutput

from ..losses.context_encoder import (
    OVERLAP_PIXELS,
    OVERLAP_WEIGHT,
    region_l2_loss,
    region_weights,
)
from ..losses.masked_pixels import patchify, unpatchify
from ..modules.backbones import require_vit, square_side
from ..views.inpainting_masks import (
    BLOCK_FRACTION,
    MASK_FRACTION,
    MASK_KINDS,
    REGION_RESOLUTION,
    inpainting_masks,
)
from .base import SSLMethodConfig, SSLPreTrainedModel


@dataclass
class ContextEncoderConfig(SSLMethodConfig):
    """Context-encoder hyperparameters (defaults: the paper's and its code's, Pathak et al. 2016 §3.3, §5).

    mask_type: "central", "random_block" or "random_region".
    mask_fraction: share of the image dropped (0.25).
    overlap_pixels: the predicted region reaches this far into the context (4 px at 128 px in the authors' code).
    overlap_loss_weight: weight of that border in the loss (10); the hole weighs 1.
    block_fraction: side of each random block as a share of the image side (random_block).
    region_resolution: noise cells per pixel of the random regions (random_region; 0.06 in the authors' code).
    head_hidden_size: hidden width of the per-patch MLP head that predicts pixels (0: a linear head).
    """

    method = "context_encoder"

    mask_type: str = "central"
    mask_fraction: float = MASK_FRACTION
    overlap_pixels: int = OVERLAP_PIXELS
    overlap_loss_weight: float = OVERLAP_WEIGHT
    block_fraction: float = BLOCK_FRACTION
    region_resolution: float = REGION_RESOLUTION
    head_hidden_size: int = 512

    def __post_init__(self):
        if self.mask_type not in MASK_KINDS:
            raise ValueError(f"mask_type must be one of {MASK_KINDS}, got {self.mask_type!r}")
        if not 0.0 < self.mask_fraction < 1.0:
            raise ValueError(f"mask_fraction must be strictly between 0 and 1 (the paper drops 0.25), got "
                             f"{self.mask_fraction}")
        if not 0.0 < self.block_fraction <= 1.0:
            raise ValueError(f"block_fraction must be in (0, 1], got {self.block_fraction}")
        self.check_ranges(positive=("overlap_loss_weight", "region_resolution"))
        if self.overlap_pixels < 0 or self.head_hidden_size < 0:
            raise ValueError(f"overlap_pixels and head_hidden_size must be >= 0, got {self.overlap_pixels} and "
                             f"{self.head_hidden_size}")


@dataclass
class ContextEncoderOutput(ModelOutput):
    """Output of :class:`ContextEncoderForPreTraining`.

    loss: scalar weighted L2 over the predicted region (:func:`hf_ssl.losses.context_encoder.region_l2_loss`).
    hole_l2: mean squared error over the dropped pixels alone, no overlap weighting (a logged diagnostic).
    reconstruction: ``(batch, C, H, W)`` the predicted image (every pixel; only the region is scored), normalised.
    hidden_mask: ``(batch, 1, H, W)``, 1 where the input was dropped.
    """

    loss: torch.Tensor | None = None
    hole_l2: torch.Tensor | None = None
    reconstruction: torch.Tensor | None = None
    hidden_mask: torch.Tensor | None = None


class ContextEncoderForPreTraining(SSLPreTrainedModel):
    """Context encoder over a transformers ``ViTModel``.

    Modules: ``vit`` (the published ``ViTModel``), ``head`` (per-patch MLP to ``patch_size**2 * channels`` pixels).

    Inputs: ``pixel_values (batch, C, H, W)`` (one view per image), optionally ``mask_seed (batch,)`` (per-example seeds
    of the random regions) or ``hidden_mask (batch, 1, H, W)`` (1 = drop; overrides ``mask_type``).
    """

    method_config_class = ContextEncoderConfig
    pretraining_job = "masked_image"
    paper = "Pathak et al. 2016. Context Encoders: Feature Learning by Inpainting. arXiv:1604.07379"

    def __init__(self, config: PretrainedConfig):
        super().__init__(config)
        settings: ContextEncoderConfig = self.method_config
        require_vit(config, "the context encoder (pixels per patch token)")
        self.register_published_encoder(self.build_encoder())
        self.patch_size = square_side(config.patch_size)
        self.num_channels = config.num_channels
        hidden = settings.head_hidden_size
        pixels = self.patch_size**2 * self.num_channels
        layers = [nn.Linear(config.hidden_size, hidden), nn.GELU()] if hidden else []
        layers.append(nn.Linear(hidden or config.hidden_size, pixels))
        self.head = nn.Sequential(*layers)
        self.post_init()

    def hidden_masks(self, pixel_values: torch.Tensor, mask_seed: torch.Tensor | None = None,
                     generator: torch.Generator | None = None) -> torch.Tensor:
        """``(B, 1, H, W)`` regions to drop, of the configured kind: per-example seeds from ``mask_seed``, else drawn
        from ``generator`` (default: the torch RNG)."""
        settings: ContextEncoderConfig = self.method_config
        batch, _, height, width = pixel_values.shape
        if mask_seed is None and settings.mask_type != "central":
            mask_seed = torch.randint(2**62, (batch,), generator=generator)
        masks = inpainting_masks(
            settings.mask_type, None if mask_seed is None else mask_seed.cpu(), height, width,
            fraction=settings.mask_fraction, shrink=settings.overlap_pixels, block_fraction=settings.block_fraction,
            resolution=settings.region_resolution, batch_size=batch,
        )
        return masks.to(device=pixel_values.device, dtype=pixel_values.dtype)

    def reconstruct(self, corrupted: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` corrupted input -> ``(B, C, H, W)`` predicted image, from the ViT's patch tokens."""
        height, width = corrupted.shape[-2:]
        tokens = self.vit(pixel_values=corrupted, interpolate_pos_encoding=True).last_hidden_state[:, 1:]
        return unpatchify(self.head(tokens), self.patch_size, height, width)

    def forward(
        self,
        pixel_values: torch.Tensor,
        mask_seed: torch.Tensor | None = None,
        hidden_mask: torch.Tensor | None = None,
        return_loss: bool = True,
        **kwargs,
    ) -> ContextEncoderOutput:
        if pixel_values.dim() != 4:
            raise ValueError(f"pixel_values must be (batch, channels, height, width), got {tuple(pixel_values.shape)};"
                             " the context encoder takes one view per image (SingleViewTransform)")
        patchify(pixel_values[:1], self.patch_size)  # refuses sizes the patch grid does not tile, naming the fix
        if hidden_mask is None:
            hidden_mask = self.hidden_masks(pixel_values, mask_seed)
        elif hidden_mask.shape != (pixel_values.shape[0], 1, *pixel_values.shape[2:]):
            raise ValueError(f"hidden_mask must be (batch, 1, height, width), got {tuple(hidden_mask.shape)}")
        hidden_mask = hidden_mask.to(pixel_values.dtype)
        reconstruction = self.reconstruct(pixel_values * (1 - hidden_mask))  # dropped pixels = the mean colour
        if not return_loss:
            return ContextEncoderOutput(reconstruction=reconstruction, hidden_mask=hidden_mask)
        settings: ContextEncoderConfig = self.method_config
        weights = region_weights(hidden_mask, settings.overlap_pixels, settings.overlap_loss_weight)
        loss = region_l2_loss(reconstruction, pixel_values, weights)
        with torch.no_grad():
            hole_l2 = region_l2_loss(reconstruction, pixel_values, hidden_mask.float())
        return ContextEncoderOutput(loss=loss, hole_l2=hole_l2, reconstruction=reconstruction, hidden_mask=hidden_mask)

    @torch.no_grad()
    def figure_panels(
        self, pixel_values: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[dict[str, torch.Tensor], dict[str, float], str]:
        """The rows of :class:`hf_ssl.evaluation.reconstruction.ReconstructionFigure`: original, the corrupted input,
        the fill pasted into the hole (normalised); the held-out loss; the title. ``generator`` fixes the regions."""
        was_training = self.training
        self.eval()
        try:
            hidden = self.hidden_masks(pixel_values, generator=generator)
            outputs = self(pixel_values, hidden_mask=hidden)
        finally:
            self.train(was_training)
        panels = {
            "original": pixel_values,
            "context": pixel_values * (1 - hidden),
            "inpainted": pixel_values * (1 - hidden) + outputs.reconstruction * hidden,
        }
        settings: ContextEncoderConfig = self.method_config
        title = (f"Context-encoder fills of held-out images ({settings.mask_type.replace('_', ' ')} mask, "
                 f"{settings.mask_fraction:.0%} of the image)")
        return panels, {"inpainting_loss": float(outputs.loss), "hole_l2": float(outputs.hole_l2)}, title
