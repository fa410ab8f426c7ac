"""BYOL: bootstrap your own latent (Grill et al. 2020, "Bootstrap Your Own Latent: A New Approach to Self-Supervised
Learning", arXiv:2006.07733).

An online network (encoder + projector + predictor) predicts the projection a target network (an EMA of the online
encoder + projector) makes of another view of the same image; the loss is the normalised MSE (Eq. 2), symmetrised over
the two views (Eq. 3). No negatives. The published encoder is the target encoder, the one the paper evaluates.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PretrainedConfig
from transformers.utils import ModelOutput

from ..losses.negative_cosine import NegativeCosineSimilarity
from ..modules.backbones import image_features
from ..modules.heads import mlp_head
from ..modules.predictors import PredictorSettings, build_predictor
from .base import SSLMethodConfig, cross_view_loss
from .teacher import MomentumTeacherModel


@dataclass
class BYOLConfig(PredictorSettings, SSLMethodConfig):
    """BYOL hyperparameters (defaults: the paper's, Grill et al. 2020 §3.3 and Appendix J).

    projection_hidden_dim / projection_dim: projector g (Linear-BN-ReLU-Linear), 4096 -> 256.
    prediction_hidden_dim: predictor q (Linear-BN-ReLU-Linear), 256 -> 4096 -> 256.
    momentum_teacher: EMA momentum tau of the target network at step 0, cosine-scheduled to momentum_teacher_end
    (tau = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2).
    The predictor settings (``predictor_type``, DirectPred's, the predictor's learning rate) are
    :class:`hf_ssl.modules.predictors.PredictorSettings`.
    """

    method = "byol"

    projection_hidden_dim: int = 4096
    projection_dim: int = 256
    prediction_hidden_dim: int = 4096
    momentum_teacher: float = 0.996
    momentum_teacher_end: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        self.check_ranges(
            at_least_one=("projection_hidden_dim", "projection_dim", "prediction_hidden_dim"),
            unit_interval=("momentum_teacher", "momentum_teacher_end"),
        )


@dataclass
class BYOLOutput(ModelOutput):
    """Output of :class:`BYOLForPreTraining`.

    loss: scalar BYOL loss, the mean over both directions of 2 - 2 cos(prediction, target) (Eq. 2-3; 0 = aligned).
    cosine_similarity: mean cosine of predictions and targets.
    output_std: per-dimension std of the L2-normalised targets (~1/sqrt(projection_dim) healthy, 0 collapsed).
    predictions: ``(2 * batch, projection_dim)`` online predictions, views stacked view-major.
    targets: ``(2 * batch, projection_dim)`` target projections, views stacked view-major.
    """

    loss: torch.Tensor | None = None
    cosine_similarity: torch.Tensor | None = None
    output_std: torch.Tensor | None = None
    predictions: torch.Tensor | None = None
    targets: torch.Tensor | None = None


class BYOLForPreTraining(MomentumTeacherModel):
    """BYOL online/target pair over any transformers vision encoder.

    Modules: ``student_encoder`` + ``projector`` + ``predictor`` (online, trained); the target encoder under the
    encoder's native prefix (``vit``, ``resnet``, ``timm_model``: what vanilla transformers loads) +
    ``teacher_projector`` (EMA of the online ones, no gradients). Everything is in ``state_dict``.

    Inputs: ``global_crops`` ``(batch, 2, C, H, W)``, two views per image (``num_global_crops=2, num_local_crops=0``).
    """

    method_config_class = BYOLConfig
    paper = "Grill et al. 2020. Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning. arXiv:2006.07733"

    def __init__(self, config: PretrainedConfig):
        super().__init__(config)
        settings: BYOLConfig = self.method_config
        dim = settings.projection_dim
        self.build_student_and_teacher(
            lambda in_dim: mlp_head([in_dim, settings.projection_hidden_dim, dim]), "projector", "teacher_projector",
            student_only=lambda in_dim: {"predictor": build_predictor(settings, dim, settings.prediction_hidden_dim)},
        )
        self.loss_fn = NegativeCosineSimilarity(form="byol")
        self.post_init()
        self.init_teachers()

    def forward(
        self,
        global_crops: torch.Tensor,
        local_crops: torch.Tensor | None = None,
        return_loss: bool = True,
        **kwargs,
    ) -> BYOLOutput:
        pixels = self.two_view_pixels(global_crops, local_crops)
        # The heads see both views in one pass (their BatchNorm normalises over both views together).
        predictions = self.predictor(self.projector(image_features(self.student_encoder, pixels, views=2)))
        with torch.no_grad():
            targets = self.teacher_projector(image_features(self.encoder, pixels, views=2))
        if not return_loss:
            return BYOLOutput(predictions=predictions, targets=targets)
        # Symmetric: view 1 predicts view 2's target and vice versa (Eq. 3), averaged.
        loss, stats = cross_view_loss(self.loss_fn, predictions, targets)
        return BYOLOutput(
            loss=loss,
            cosine_similarity=stats["cosine_similarity"],
            output_std=stats["output_std"],
            predictions=predictions,
            targets=targets,
        )

    # ----------------------------------------------------------------------------------------------------------------
    # Per-step interface
