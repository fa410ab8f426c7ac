"""Colourisation as a pretext task (Zhang et al. 2016, "Colorful Image Colorization", arXiv:1603.08511).

The encoder sees the lightness ``L`` of an image and a head predicts its colour, the ab channels of CIE Lab, at every
position. Objective (``objective``):

- ``"classification"`` (default, the paper's method, §2.1-2.2): a distribution over the 313 in-gamut ab bins at every
  position, scored against the soft-encoded ground truth (5 nearest bins, Gaussian ``sigma = 5``) by the
  class-rebalanced cross-entropy (``λ = 0.5``); colours are read back as the annealed mean (``T = 0.38``).
  :mod:`hf_ssl.losses.colourisation` holds each piece. Why the default: regression to ab (the L2 loss) is pulled to
  the mean of multimodal colours (desaturated, brownish results, §2.1), while the multinomial loss with rebalancing
  keeps rare, saturated colours: the harder, more semantic task, and the version whose features the paper evaluates
  as a self-supervised representation (§3.2).
- ``"regression"``: the paper's L2 baseline (Eq. 1), ``1/2 ||Ŷ - Y||^2`` on ab scaled by 1/110 (so both ab channels
  span about [-1, 1]), averaged over positions.

The empirical bin distribution ``p̃`` behind the rebalancing weights is counted from the training batches themselves
(``ab_bin_counts``, a buffer saved with the model and summed over processes): the paper counts it over the whole of
ImageNet beforehand; after a few batches of 128 images (about 10^5 positions each) the estimate has settled.

Encoder input (the published encoder must stay a plain transformers model that takes the standard processor output):
the ViT keeps its 3 input channels and is shown the *grey* photograph, the sRGB image of Lab ``(L, 0, 0)`` (R = G = B),
normalised like every input (:func:`hf_ssl.views.colour.grey_from_lightness`). So ``AutoModel.from_pretrained`` and
the published image processor work as for any other method; a 1-channel ViT would need its own processor and could
not take colour images. Downstream, colour images are a shift from pretraining (the paper's features only ever see
grey images); turn them grey first (Pillow's ``convert("L")``, the channel repeated three times) to show the
encoder exactly what pretraining saw.

Head: a per-patch MLP over the ViT's patch tokens (the CLS token is not used) that predicts
``predictions_per_patch_side ** 2`` positions per patch; the loss compares them with the ab image averaged over
the same cells. One prediction per 4 x 4 pixels (patch 4, or patch 8 with 2 x 2 per patch) is the paper's output
resolution, a quarter of the input's side; colourised images upsample it bilinearly.

The model needs the views' normalisation (``image_mean`` / ``image_std``, the same as the views' ``mean`` / ``std``;
both default to the ImageNet statistics) to get RGB, hence Lab, back from its normalised input.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from transformers.utils import ModelOutput

from ..distributed import all_reduce_sum
from ..losses.colourisation import (
    AB_GRID_SIZE,
    AB_LIMIT,
    ANNEALED_MEAN_TEMPERATURE,
    PRIOR_SMOOTHING_SIGMA,
    REBALANCING_LAMBDA,
    SOFT_ENCODING_NEIGHBOURS,
    SOFT_ENCODING_SIGMA,
    annealed_mean,
    in_gamut_ab_bins,
    rebalanced_cross_entropy,
    rebalancing_weights,
    smoothed_bin_distribution,
    soft_encode_ab,
)
from ..modules.backbones import require_vit, square_side
from ..views.colour import (
    grey_from_lightness,
    lab_to_normalised_rgb,
    normalised_rgb_to_lab,
)
from .base import SSLMethodConfig, SSLPreTrainedModel

OBJECTIVES = ("classification", "regression")


@dataclass
class ColourisationConfig(SSLMethodConfig):
    """Colourisation hyperparameters (defaults: the paper's, Zhang et al. 2016 §2).

    objective: "classification" over quantised ab bins (the paper's) or "regression" of ab (its L2 baseline).
    ab_grid_size: width of the ab bins (10: 313 in-gamut bins).
    soft_encoding_neighbours / soft_encoding_sigma: the soft targets (5 nearest bins, Gaussian sigma 5).
    rebalancing_lambda: λ of the rebalancing weights (0.5; 1 turns rebalancing off).
    prior_smoothing_sigma: Gaussian smoothing of the empirical bin distribution (5).
    annealed_mean_temperature: T of the colours read back from the distribution (0.38).
    head_hidden_size: width of the per-patch MLP head's hidden layer (0: a linear head).
    predictions_per_patch_side: the head predicts this many positions along each side of a patch (1: one per patch).
    image_mean / image_std: the views' normalisation (their ``mean`` / ``std``), to recover RGB from the input.
    """

    method = "colourisation"

    objective: str = "classification"
    ab_grid_size: int = AB_GRID_SIZE
    soft_encoding_neighbours: int = SOFT_ENCODING_NEIGHBOURS
    soft_encoding_sigma: float = SOFT_ENCODING_SIGMA
    rebalancing_lambda: float = REBALANCING_LAMBDA
    prior_smoothing_sigma: float = PRIOR_SMOOTHING_SIGMA
    annealed_mean_temperature: float = ANNEALED_MEAN_TEMPERATURE
    head_hidden_size: int = 512
    predictions_per_patch_side: int = 1
    image_mean: list[float] = field(default_factory=lambda: list(IMAGENET_DEFAULT_MEAN))
    image_std: list[float] = field(default_factory=lambda: list(IMAGENET_DEFAULT_STD))

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES} (the paper's is 'classification'), got "
                             f"{self.objective!r}")
        self.check_ranges(at_least_one=("ab_grid_size", "soft_encoding_neighbours", "predictions_per_patch_side"),
                          positive=("soft_encoding_sigma", "prior_smoothing_sigma", "annealed_mean_temperature"),
                          unit_interval=("rebalancing_lambda",))
        if self.head_hidden_size < 0:
            raise ValueError(f"head_hidden_size must be >= 0 (0: a linear head), got {self.head_hidden_size}")
        if len(self.image_mean) != 3 or len(self.image_std) != 3:
            raise ValueError("image_mean and image_std take 3 values (RGB), the views' --mean and --std")


@dataclass
class ColourisationOutput(ModelOutput):
    """Output of :class:`ColourisationForPreTraining`.

    loss: scalar, the rebalanced cross-entropy (classification) or the L2 loss (regression), mean over positions.
    ab_rmse: root mean squared error of the predicted ab (annealed mean for classification) in Lab units, at the
        prediction grid (a logged diagnostic, no gradient).
    logits: ``(batch, Q, h, w)`` bin logits (classification) or ``(batch, 2, h, w)`` ab / 110 (regression), ``h, w``
        the prediction grid (image side / patch size * predictions_per_patch_side).
    """

    loss: torch.Tensor | None = None
    ab_rmse: torch.Tensor | None = None
    logits: torch.Tensor | None = None


class ColourisationForPreTraining(SSLPreTrainedModel):
    """Colourisation over a transformers ``ViTModel``.

    Modules: ``vit`` (the published ``ViTModel``, fed grey images), ``head`` (per-patch MLP). Buffers: ``ab_bins``
    ``(Q, 2)`` (the bin centres) and ``ab_bin_counts`` ``(Q,)`` (how often each bin was the nearest to a training
    position; float64 counts, saved, restored on resume).

    Inputs: ``pixel_values (batch, 3, H, W)``, normalised colour images (one view per image:
    :class:`hf_ssl.views.single_view.SingleViewTransform`); other batch fields (``mask_seed``) are ignored.
    """

    method_config_class = ColourisationConfig
    pretraining_job = "masked_image"
    paper = "Zhang et al. 2016. Colorful Image Colorization. arXiv:1603.08511"

    def __init__(self, config: PretrainedConfig):
        super().__init__(config)
        settings: ColourisationConfig = self.method_config
        require_vit(config, "colourisation (one prediction per patch token)")
        if getattr(config, "num_channels", 3) != 3:
            raise ValueError(f"the encoder must take 3 channels (it sees grey RGB images), got {config.num_channels}")
        self.register_published_encoder(self.build_encoder())
        self.patch_size = square_side(config.patch_size)
        side = settings.predictions_per_patch_side
        if self.patch_size % side:
            raise ValueError(f"predictions_per_patch_side ({side}) must divide the patch size ({self.patch_size})")
        bins = in_gamut_ab_bins(settings.ab_grid_size)
        self.register_buffer("ab_bins", bins)
        self.register_buffer("ab_bin_counts", torch.zeros(bins.shape[0], dtype=torch.float64))
        outputs = bins.shape[0] if settings.objective == "classification" else 2
        hidden = settings.head_hidden_size
        layers = [nn.Linear(config.hidden_size, hidden), nn.GELU()] if hidden else []
        layers.append(nn.Linear(hidden or config.hidden_size, outputs * side * side))
        self.head = nn.Sequential(*layers)
        self.post_init()

    # ----------------------------------------------------------------------------------------------------------------
    def predict(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``pixel_values (B, 3, H, W)`` -> ``(logits (B, K, h, w), lab (B, 3, H, W))``: the head's output on the
        prediction grid (``K = Q`` bins or 2) and the input's Lab image (no gradient)."""
        if pixel_values.dim() != 4:
            raise ValueError(f"pixel_values must be (batch, 3, height, width), got {tuple(pixel_values.shape)}; "
                             "colourisation takes one view per image (hf_ssl.views.single_view.SingleViewTransform)")
        height, width = pixel_values.shape[-2:]
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(f"images of {height}x{width} are not a whole number of {self.patch_size}-pixel patches: "
                             f"crop them to a multiple of {self.patch_size}")
        settings: ColourisationConfig = self.method_config
        with torch.no_grad():
            lab = normalised_rgb_to_lab(pixel_values, settings.image_mean, settings.image_std)
            grey = grey_from_lightness(lab[:, :1], settings.image_mean, settings.image_std)
        tokens = self.vit(pixel_values=grey.to(pixel_values.dtype), interpolate_pos_encoding=True).last_hidden_state
        grid_h, grid_w, side = height // self.patch_size, width // self.patch_size, settings.predictions_per_patch_side
        out = self.head(tokens[:, 1:])  # (B, grid_h * grid_w, K * side * side)
        logits = out.view(out.shape[0], grid_h, grid_w, side, side, -1).permute(0, 5, 1, 3, 2, 4)
        return logits.reshape(out.shape[0], -1, grid_h * side, grid_w * side), lab

    def ab_from_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """``(B, 2, h, w)`` ab in Lab units: the annealed mean (classification) or the regressed value."""
        if self.method_config.objective == "classification":
            return annealed_mean(logits, self.ab_bins, self.method_config.annealed_mean_temperature)
        return logits.float() * AB_LIMIT

    def rebalancing_weights(self) -> torch.Tensor:
        """``(Q,)`` the current rebalancing weights, from the bin counts so far (uniform before any count)."""
        settings: ColourisationConfig = self.method_config
        distribution = smoothed_bin_distribution(self.ab_bin_counts, self.ab_bins, settings.prior_smoothing_sigma)
        return rebalancing_weights(distribution, settings.rebalancing_lambda).float()

    def forward(self, pixel_values: torch.Tensor, return_loss: bool = True, **kwargs) -> ColourisationOutput:
        logits, lab = self.predict(pixel_values)
        if not return_loss:
            return ColourisationOutput(logits=logits)
        settings: ColourisationConfig = self.method_config
        cell = self.patch_size // settings.predictions_per_patch_side
        target_ab = F.avg_pool2d(lab[:, 1:], cell)  # (B, 2, h, w): the ab of each prediction cell
        if settings.objective == "classification":
            positions = target_ab.permute(0, 2, 3, 1).reshape(-1, 2)
            targets = soft_encode_ab(positions, self.ab_bins, settings.soft_encoding_neighbours,
                                     settings.soft_encoding_sigma)
            if self.training:
                self.count_bins(targets.argmax(dim=1))
            targets = targets.view(*target_ab.shape[:1], *target_ab.shape[2:], -1).permute(0, 3, 1, 2)
            loss = rebalanced_cross_entropy(logits, targets, self.rebalancing_weights())
        else:
            loss = 0.5 * (logits.float() - target_ab / AB_LIMIT).pow(2).sum(dim=1).mean()
        with torch.no_grad():
            ab_rmse = (self.ab_from_logits(logits) - target_ab).pow(2).sum(dim=1).mean().sqrt()
        return ColourisationOutput(loss=loss, ab_rmse=ab_rmse, logits=logits)

    @torch.no_grad()
    def count_bins(self, nearest: torch.Tensor) -> None:
        """Add the nearest bins of this batch's positions (``(N,)`` indices), summed over processes, to the counts."""
        counts = torch.bincount(nearest, minlength=self.ab_bin_counts.numel()).to(self.ab_bin_counts)
        self.ab_bin_counts += all_reduce_sum(counts)

    # ----------------------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def colourise(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The colourised images ``(B, 3, H, W)`` (normalised RGB) of ``pixel_values``: the input's own L with the
        predicted ab upsampled bilinearly to full resolution (§2.3)."""
        logits, lab = self.predict(pixel_values)
        ab = F.interpolate(self.ab_from_logits(logits), size=lab.shape[-2:], mode="bilinear", align_corners=False)
        settings: ColourisationConfig = self.method_config
        return lab_to_normalised_rgb(torch.cat([lab[:, :1], ab], dim=1), settings.image_mean, settings.image_std)

    @torch.no_grad()
    def figure_panels(
        self, pixel_values: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[dict[str, torch.Tensor], dict[str, float], str]:
        """The rows of :class:`hf_ssl.evaluation.reconstruction.ReconstructionFigure`: grey input, colourisation,
        original (normalised RGB), the held-out loss and ab error, and the figure's title. Runs in eval mode (no bin
        counting); ``generator`` is unused (nothing is random)."""
        was_training = self.training
        self.eval()
        try:
            outputs = self(pixel_values)
            settings: ColourisationConfig = self.method_config
            lab = normalised_rgb_to_lab(pixel_values, settings.image_mean, settings.image_std)
            panels = {
                "grey input": grey_from_lightness(lab[:, :1], settings.image_mean, settings.image_std),
                "colourised": self.colourise(pixel_values),
                "original": pixel_values,
            }
        finally:
            self.train(was_training)
        how = (f"annealed mean, T={settings.annealed_mean_temperature}" if settings.objective == "classification"
               else "ab regression")
        title = f"Colourisations of held-out images from their lightness ({how})"
        return panels, {"colourisation_loss": float(outputs.loss), "ab_rmse": float(outputs.ab_rmse)}, title
