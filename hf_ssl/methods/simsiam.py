"""SimSiam: simple Siamese representation learning (Chen & He 2021, "Exploring Simple Siamese Representation
Learning", arXiv:2011.10566).

Two views of every image go through one encoder + projector f; a predictor h maps one view's projection to the
other's, and the loss is the symmetrised negative cosine similarity with a stop-gradient on the targets (Eq. 3-4). No
negatives and no momentum encoder: the stop-gradient is what prevents collapse (§4.1). The published encoder is the
single encoder.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass

import torch
from transformers import PretrainedConfig
from transformers.utils import ModelOutput

from ..losses.negative_cosine import NegativeCosineSimilarity
from ..modules.backbones import feature_dim, image_features
from ..modules.heads import mlp_head
from ..modules.predictors import PredictorSettings, build_predictor
from .base import SSLMethodConfig, SSLPreTrainedModel, cross_view_loss

logger = logging.getLogger(__name__)

# Collapse is declared when output_std falls below this fraction of 1/sqrt(projection_dim) (its healthy value).
COLLAPSE_FRACTION = 0.1


@dataclass
class SimSiamConfig(PredictorSettings, SSLMethodConfig):
    """SimSiam hyperparameters (defaults: the paper's ImageNet setting, Chen & He 2021 §3).

    projection_hidden_dim / projection_dim: projector, ``num_projection_layers`` Linear layers each followed by BN,
    ReLU on all but the last (2048 -> 2048 -> 2048). num_projection_layers: 3 on ImageNet, 2 in the paper's CIFAR
    experiments (Appendix D). prediction_hidden_dim: predictor bottleneck, Linear-BN-ReLU-Linear 2048 -> 512 -> 2048.
    projector_output_batch_norm: end the projector with a BN without affine parameters, as the reference code does
    (paper default: True; Chen & He 2021 Table 2c: +0.7 % on ImageNet). False ends it with a bare Linear like BYOL's.
    The predictor settings (``predictor_type``, DirectPred's, the predictor's learning rate) are
    :class:`hf_ssl.modules.predictors.PredictorSettings`.
    """

    method = "simsiam"

    projection_hidden_dim: int = 2048
    projection_dim: int = 2048
    num_projection_layers: int = 3
    projector_output_batch_norm: bool = True
    prediction_hidden_dim: int = 512

    def __post_init__(self):
        super().__post_init__()
        self.check_ranges(
            at_least_one=("projection_hidden_dim", "projection_dim", "num_projection_layers", "prediction_hidden_dim"),
        )


@dataclass
class SimSiamOutput(ModelOutput):
    """Output of :class:`SimSiamForPreTraining`.

    loss: scalar SimSiam loss, the mean over both directions of -cos(p, stopgrad(z)) (Eq. 3-4; -1 = aligned).
    cosine_similarity: mean cosine of predictions and (other-view) projections.
    output_std: per-dimension std of the L2-normalised projections (§4.1: ~1/sqrt(projection_dim) healthy, 0 collapsed).
    predictions: ``(2 * batch, projection_dim)`` predictor outputs, views stacked view-major.
    projections: ``(2 * batch, projection_dim)`` projector outputs, views stacked view-major.
    """

    loss: torch.Tensor | None = None
    cosine_similarity: torch.Tensor | None = None
    output_std: torch.Tensor | None = None
    predictions: torch.Tensor | None = None
    projections: torch.Tensor | None = None


class SimSiamForPreTraining(SSLPreTrainedModel):
    """SimSiam over any transformers vision encoder.

    Modules: the encoder under its native prefix (``vit``, ``resnet``, ``timm_model``: what vanilla transformers
    loads), ``projector`` (``num_projection_layers`` layers, BN after each, the last BN without affine parameters as
    in the reference code, or none with ``projector_output_batch_norm=False``), ``predictor`` (bottleneck
    Linear-BN-ReLU-Linear, or DirectPred's parameter-free linear map) and ``loss_fn``. No momentum encoder and no
    per-step hooks.

    Inputs: ``global_crops`` ``(batch, 2, C, H, W)``, two views per image (``num_global_crops=2, num_local_crops=0``).
    Logs one warning (``warnings.warn`` and the module logger) the first time ``output_std`` falls below
    ``0.1 / sqrt(projection_dim)`` in training: the outputs have collapsed.
    """

    method_config_class = SimSiamConfig
    paper = "Chen & He 2021. Exploring Simple Siamese Representation Learning. arXiv:2011.10566"

    def __init__(self, config: PretrainedConfig):
        super().__init__(config)
        settings: SimSiamConfig = self.method_config
        self.register_published_encoder(self.build_encoder())
        in_dim = feature_dim(self.encoder)
        dim = settings.projection_dim
        widths = [in_dim] + [settings.projection_hidden_dim] * (settings.num_projection_layers - 1) + [dim]
        self.projector = mlp_head(widths, output_norm=settings.projector_output_batch_norm)
        self.predictor = build_predictor(settings, dim, settings.prediction_hidden_dim)
        self.loss_fn = NegativeCosineSimilarity(form="negative_cosine")
        self.post_init()
        self._collapse_warned = False

    @property
    def collapse_threshold(self) -> float:
        return COLLAPSE_FRACTION / math.sqrt(self.method_config.projection_dim)

    def forward(
        self,
        global_crops: torch.Tensor,
        local_crops: torch.Tensor | None = None,
        return_loss: bool = True,
        **kwargs,
    ) -> SimSiamOutput:
        pixels = self.two_view_pixels(global_crops, local_crops)
        batch = global_crops.shape[0]
        projections = self.projector(image_features(self.encoder, pixels, views=2))
        predictions = self.predictor(projections)
        if not return_loss:
            return SimSiamOutput(predictions=predictions, projections=projections)
        # D(p1, stopgrad(z2)) / 2 + D(p2, stopgrad(z1)) / 2 (Eq. 4); the loss detaches the targets.
        loss, stats = cross_view_loss(self.loss_fn, predictions, projections)
        std = stats["output_std"]
        if self.training and not self._collapse_warned and batch > 1 and std.item() < self.collapse_threshold:
            self._collapse_warned = True
            message = (
                f"SimSiam outputs have collapsed: output_std {std.item():.2e} < 0.1 / sqrt(projection_dim) = "
                f"{self.collapse_threshold:.2e} (healthy: ~{1 / math.sqrt(self.method_config.projection_dim):.2e}). "
                "Check the stop-gradient, the predictor and the learning rate (Chen & He 2021 §4)."
            )
            logger.warning(message)
            warnings.warn(message, RuntimeWarning, stacklevel=2)
        return SimSiamOutput(
            loss=loss,
            cosine_similarity=stats["cosine_similarity"],
            output_std=std,
            predictions=predictions,
            projections=projections,
        )
