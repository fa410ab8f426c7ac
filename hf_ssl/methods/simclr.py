"""SimCLR: contrastive learning of visual representations (Chen et al. 2020, "A Simple Framework for Contrastive
Learning of Visual Representations", arXiv:2002.05709).

Two augmented views of every image go through one encoder and an MLP projection head; the NT-Xent loss (Eq. 1) pulls
the two views of an image together and pushes them away from the views of every other image in the (global) batch.
The published encoder is that single encoder; the projection head is dropped for downstream use (§4.2).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PretrainedConfig
from transformers.utils import ModelOutput

from ..losses.ntxent import NTXentLoss
from ..modules.backbones import feature_dim, image_features
from ..modules.heads import mlp_head
from .base import SSLMethodConfig, SSLPreTrainedModel


@dataclass
class SimCLRConfig(SSLMethodConfig):
    """SimCLR hyperparameters (defaults: the paper's, Chen et al. 2020 §2.3 and Appendix B.9 for CIFAR-10).

    projection_hidden_dim / projection_dim: the 2-layer projection head g(.) (Linear-BN-ReLU-Linear), 2048 -> 128.
    temperature: T of NT-Xent (0.5 on CIFAR-10; 0.1 at ImageNet scale with large batches).
    """

    method = "simclr"

    projection_hidden_dim: int = 2048
    projection_dim: int = 128
    temperature: float = 0.5

    def __post_init__(self):
        self.check_ranges(at_least_one=("projection_hidden_dim", "projection_dim"), positive=("temperature",))


@dataclass
class SimCLROutput(ModelOutput):
    """Output of :class:`SimCLRForPreTraining`.

    loss: scalar NT-Xent loss (Eq. 1), mean over the local anchors (both views).
    positive_similarity: mean cosine similarity of the two views' projections (1: perfectly aligned).
    negative_similarity: mean cosine similarity to the negatives (close to positive_similarity: collapse).
    embeddings: ``(2 * batch, projection_dim)`` projections before normalisation, views stacked view-major.
    """

    loss: torch.Tensor | None = None
    positive_similarity: torch.Tensor | None = None
    negative_similarity: torch.Tensor | None = None
    embeddings: torch.Tensor | None = None


class SimCLRForPreTraining(SSLPreTrainedModel):
    """SimCLR over any transformers vision encoder.

    Modules: the encoder under its native prefix (``vit``, ``resnet``, ``timm_model``: what vanilla transformers
    loads), ``projection_head`` (Linear-BN-ReLU-Linear, §2.1 / Fig. 2) and ``loss_fn`` (:class:`NTXentLoss`). No
    momentum encoder and no per-step hooks.

    Inputs: ``global_crops`` ``(batch, 2, C, H, W)``, two views per image, from
    :class:`hf_ssl.views.MultiCropTransform` with ``num_global_crops=2, num_local_crops=0``. The encoder passes are
    ``image_features``'s (per view on a CPU when the encoder has no BatchNorm); both views go through the head's
    BatchNorm together, as in the reference implementation.
    """

    method_config_class = SimCLRConfig
    paper = "Chen et al. 2020. A Simple Framework for Contrastive Learning of Visual Representations. arXiv:2002.05709"

    def __init__(self, config: PretrainedConfig):
        super().__init__(config)
        settings: SimCLRConfig = self.method_config
        self.register_published_encoder(self.build_encoder())
        in_dim = feature_dim(self.encoder)
        self.projection_head = mlp_head([in_dim, settings.projection_hidden_dim, settings.projection_dim])
        self.loss_fn = NTXentLoss(settings.temperature)
        self.post_init()

    # ----------------------------------------------------------------------------------------------------------------
    # The two halves of ``forward``, also called separately by gradient caching (hf_ssl.training.grad_cache).
    def embed(self, global_crops: torch.Tensor, local_crops: torch.Tensor | None = None, **kwargs) -> dict[str, torch.Tensor]:
        """The per-image part of ``forward``: ``global_crops (batch, 2, C, H, W)`` -> ``{"view_a", "view_b"}``, each
        ``(batch, feature_dim)``, the encoder features of the two views (see ``image_features`` for the encoder passes).

        Rows are independent (a ViT encoder; gradient caching refuses an encoder with BatchNorm), so embedding the
        batch in chunks gives the same features. The projection head stays in :meth:`loss_from_embeddings`: its
        BatchNorm sees the whole batch at once, as in the paper."""
        pixels = self.two_view_pixels(global_crops, local_crops)
        features = image_features(self.encoder, pixels, views=2)  # (2 * batch, feature_dim), view-major
        batch = global_crops.shape[0]
        return {"view_a": features[:batch], "view_b": features[batch:]}

    def loss_from_embeddings(
        self, embeddings: dict[str, torch.Tensor], return_loss: bool = True, **inputs
    ) -> SimCLROutput:
        """The batch-coupled part of ``forward``: projection head (BatchNorm over both views of the whole batch) and
        NT-Xent on :meth:`embed`'s features of the whole batch. ``inputs`` (the batch) are not needed."""
        batch = embeddings["view_a"].shape[0]
        projections = self.projection_head(torch.cat([embeddings["view_a"], embeddings["view_b"]]))
        if not return_loss:
            return SimCLROutput(embeddings=projections)
        loss, stats = self.loss_fn(projections[:batch], projections[batch:])
        return SimCLROutput(
            loss=loss,
            positive_similarity=stats["positive_similarity"],
            negative_similarity=stats["negative_similarity"],
            embeddings=projections,
        )

    def forward(
        self,
        global_crops: torch.Tensor,
        local_crops: torch.Tensor | None = None,
        return_loss: bool = True,
        **kwargs,
    ) -> SimCLROutput:
        return self.loss_from_embeddings(self.embed(global_crops, local_crops), return_loss=return_loss)
