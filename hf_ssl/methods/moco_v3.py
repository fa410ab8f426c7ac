"""MoCo v3 (Chen, Xie & He 2021, "An Empirical Study of Training Self-Supervised Vision Transformers",
arXiv:2104.02057, Algorithm 1).

The query branch is encoder -> projector (3-layer MLP with BatchNorm) -> predictor (2-layer MLP); the momentum branch
is an EMA copy of encoder + projector. The loss is symmetric, ``ctr(q1, k2) + ctr(q2, k1)``, where ``ctr`` is an
in-batch InfoNCE against the keys of the whole global batch (gathered from every process, no gradient), scaled by
``2 T``. No queue. The published encoder is the momentum encoder (what vanilla ``AutoModel`` loads), as for DINO's
teacher; the trained query encoder is ``student_encoder``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PretrainedConfig
from transformers.utils import ModelOutput

from ..losses.moco import MoCoV3Loss
from ..modules.backbones import image_features
from ..modules.heads import mlp_head
from .base import SSLMethodConfig, cross_view_loss
from .teacher import MomentumTeacherModel


@dataclass
class MoCoV3Config(SSLMethodConfig):
    """MoCo v3 hyperparameters (defaults: the paper's ViT recipe, Chen et al. 2021 Appendix).

    projection_hidden_dim / projection_dim: the 3-layer projector (4096 -> 256, BatchNorm after every layer, the
    last without affine). prediction_hidden_dim: the 2-layer predictor's hidden width (4096). temperature: T (0.2
    for ViT). momentum_teacher: EMA momentum at step 0, cosine-scheduled to momentum_teacher_end (0.99 -> 1).
    predictor_learning_rate_scale: the predictor trains at this multiple of the (scheduled) learning rate (paper: 1;
    the same lever as BYOL's and SimSiam's, see :class:`~hf_ssl.methods.byol.BYOLConfig`).
    """

    method = "moco_v3"

    projection_hidden_dim: int = 4096
    projection_dim: int = 256
    prediction_hidden_dim: int = 4096
    temperature: float = 0.2
    momentum_teacher: float = 0.99
    momentum_teacher_end: float = 1.0
    predictor_learning_rate_scale: float = 1.0

    def __post_init__(self):
        self.check_ranges(
            at_least_one=("projection_hidden_dim", "projection_dim", "prediction_hidden_dim"),
            positive=("temperature", "predictor_learning_rate_scale"),
            unit_interval=("momentum_teacher", "momentum_teacher_end"),
        )


@dataclass
class MoCoV3Output(ModelOutput):
    """Output of :class:`MoCoV3ForPreTraining`.

    loss: ``ctr(q1, k2) + ctr(q2, k1)``. positive_similarity / negative_similarity: mean cosine of the queries to
    their key / to the other keys of the global batch. queries, keys: ``(2 * batch, projection_dim)`` (predictor
    and momentum-projector outputs) before normalisation, view-major.
    """

    loss: torch.Tensor | None = None
    positive_similarity: torch.Tensor | None = None
    negative_similarity: torch.Tensor | None = None
    queries: torch.Tensor | None = None
    keys: torch.Tensor | None = None


class MoCoV3ForPreTraining(MomentumTeacherModel):
    """MoCo v3 over any transformers vision encoder.

    Modules: ``student_encoder`` + ``projector`` + ``predictor`` (trained); the momentum encoder under the encoder's
    native prefix (``vit``, ...) + ``key_projector`` (EMA, no gradients); ``loss_fn`` (:class:`MoCoV3Loss`).

    Inputs: ``global_crops`` ``(batch, 2, C, H, W)``. Both views go through each head in one pass (their BatchNorm
    statistics are shared; the reference code runs the views separately, which only differs in training mode with
    BatchNorm); the encoders pass as ``image_features`` says. BatchNorm statistics are per process unless the trainer
    converts to SyncBatchNorm.
    """

    method_config_class = MoCoV3Config
    paper = "Chen, Xie & He 2021. An Empirical Study of Training Self-Supervised Vision Transformers. arXiv:2104.02057"

    def __init__(self, config: PretrainedConfig):
        super().__init__(config)
        settings: MoCoV3Config = self.method_config
        hidden, dim = settings.projection_hidden_dim, settings.projection_dim
        self.build_student_and_teacher(
            lambda in_dim: mlp_head([in_dim, hidden, hidden, dim], output_norm=True), "projector", "key_projector",
            student_only=lambda in_dim: {
                "predictor": mlp_head([dim, settings.prediction_hidden_dim, dim], output_norm=True)
            },
        )
        self.loss_fn = MoCoV3Loss(settings.temperature)
        self.post_init()
        self.init_teachers()

    def forward(
        self,
        global_crops: torch.Tensor,
        local_crops: torch.Tensor | None = None,
        return_loss: bool = True,
        **kwargs,
    ) -> MoCoV3Output:
        pixels = self.two_view_pixels(global_crops, local_crops)
        queries = self.predictor(self.projector(image_features(self.student_encoder, pixels, views=2)))
        with torch.no_grad():
            keys = self.key_projector(image_features(self.encoder, pixels, views=2))
        if not return_loss:
            return MoCoV3Output(queries=queries, keys=keys)
        loss, stats = cross_view_loss(self.loss_fn, queries, keys)
        return MoCoV3Output(
            loss=2 * loss,  # Algorithm 1 sums the two directions
            positive_similarity=stats["positive_similarity"],
            negative_similarity=stats["negative_similarity"],
            queries=queries,
            keys=keys,
        )

    # ----------------------------------------------------------------------------------------------------------------
    # Per-step interface
