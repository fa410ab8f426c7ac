"""Instance discrimination with a memory bank (Wu et al. 2018, "Unsupervised Feature Learning via Non-Parametric
Instance Discrimination", arXiv:1805.01978).

One augmented view per image goes through the encoder and a linear layer to a 128-d feature, L2-normalised; each
image is its own class, scored against a memory bank of every training image's last feature with a non-parametric
softmax at T = 0.07, approximated by NCE with m noise samples from the bank (or computed exactly, ``objective:
softmax``). After each step the bank entries of the batch move towards the new features with momentum 0.5
(:class:`hf_ssl.losses.instance_discrimination.MemoryBankLoss`, which holds the bank, its NCE constant and the noise
generator's state as buffers: checkpoints resume exactly, and every process holds the same bank).

The examples' dataset indices come with the batch (``ssl_index``, added by :func:`hf_ssl.views.apply_views` and
batched by :class:`hf_ssl.jobs.clustering.IndexedViewTransform`). ``num_examples`` must be the training set's size;
the ``indexed_image`` job sets it. The published encoder (what vanilla ``AutoModel`` loads) is the trained encoder;
the linear head and the bank stay in ``ssl_state.safetensors``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import PretrainedConfig
from transformers.utils import ModelOutput

from ..losses.instance_discrimination import OBJECTIVES, MemoryBankLoss
from ..modules.backbones import feature_dim, image_features
from .base import SSLMethodConfig, SSLPreTrainedModel


@dataclass
class InstanceDiscriminationConfig(SSLMethodConfig):
    """Instance-discrimination hyperparameters (defaults: Wu et al. 2018 §3-4).

    num_examples: the training set's size N, one memory-bank entry per example (set by the job from the data).
    projection_dim: the 128-d linear embedding. temperature: T = 0.07. objective: ``nce`` (the paper's) or
    ``softmax`` (exact). num_negatives: m = 4096 noise samples for NCE. memory_momentum: 0.5.
    proximal_weight: lambda of the proximal regularisation (§3.4; 0 turns it off).
    """

    method = "instance_discrimination"

    num_examples: int = 0
    projection_dim: int = 128
    temperature: float = 0.07
    objective: str = "nce"
    num_negatives: int = 4096
    memory_momentum: float = 0.5
    proximal_weight: float = 0.0

    def __post_init__(self):
        self.check_ranges(at_least_one=("projection_dim", "num_negatives"), positive=("temperature",),
                          unit_interval=("memory_momentum",))
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.proximal_weight < 0:
            raise ValueError(f"proximal_weight must be >= 0 (0: no proximal term), got {self.proximal_weight}")


@dataclass
class InstanceDiscriminationOutput(ModelOutput):
    """Output of :class:`InstanceDiscriminationForPreTraining`.

    loss: NCE (or softmax) loss, mean over the local batch. positive_similarity: mean cosine of each feature to its
    own bank entry. negative_similarity: mean cosine to the noise samples (softmax: to every other entry).
    embeddings: ``(batch, projection_dim)`` L2-normalised features.
    """

    loss: torch.Tensor | None = None
    positive_similarity: torch.Tensor | None = None
    negative_similarity: torch.Tensor | None = None
    embeddings: torch.Tensor | None = None


class InstanceDiscriminationForPreTraining(SSLPreTrainedModel):
    """Non-parametric instance discrimination over any transformers vision encoder.

    Modules: the encoder under its native prefix (``vit``, ...: what vanilla transformers loads), ``projection``
    (Linear to ``projection_dim``) and ``loss_fn`` (:class:`MemoryBankLoss`, holding the ``bank`` buffer).

    Inputs: ``pixel_values`` ``(batch, C, H, W)`` (one view per image) and ``ssl_index`` ``(batch,)`` int64, the
    examples' dataset indices. In training mode the forward writes the batch (of every process) into the bank after
    computing the loss; in evaluation mode the bank is left alone.
    """

    method_config_class = InstanceDiscriminationConfig
    pretraining_job = "indexed_image"
    paper = ("Wu et al. 2018. Unsupervised Feature Learning via Non-Parametric Instance Discrimination. "
             "arXiv:1805.01978")

    def __init__(self, config: PretrainedConfig):
        super().__init__(config)
        settings: InstanceDiscriminationConfig = self.method_config
        if settings.num_examples < 2:
            raise ValueError(
                f"num_examples must be the training set's size (>= 2), got {settings.num_examples}: the memory bank "
                "holds one entry per example; the indexed_image job sets it from the data"
            )
        self.register_published_encoder(self.build_encoder())
        self.projection = nn.Linear(feature_dim(self.encoder), settings.projection_dim)
        self.loss_fn = MemoryBankLoss(
            settings.num_examples, settings.projection_dim, settings.temperature, settings.objective,
            settings.num_negatives, settings.memory_momentum, settings.proximal_weight,
        )
        self.post_init()

    def forward(
        self, pixel_values: torch.Tensor, ssl_index: torch.Tensor | None = None, return_loss: bool = True, **kwargs
    ) -> InstanceDiscriminationOutput:
        if pixel_values.dim() != 4:
            raise ValueError(
                f"instance discrimination takes one view per image: pixel_values of shape (batch, channels, height, "
                f"width), got {tuple(pixel_values.shape)}; build views with hf_ssl.jobs.clustering.IndexedViewTransform"
            )
        embeddings = nn.functional.normalize(self.projection(image_features(self.encoder, pixel_values)), dim=1)
        if not return_loss:
            return InstanceDiscriminationOutput(embeddings=embeddings)
        if ssl_index is None:
            raise ValueError("the loss needs each example's dataset index: pass ssl_index (batch,) (the `ssl_index` "
                             "column, batched by hf_ssl.jobs.clustering.IndexedViewTransform), or return_loss=False")
        loss, stats = self.loss_fn(embeddings, ssl_index)
        if self.training:
            self.loss_fn.update(embeddings, ssl_index)
        return InstanceDiscriminationOutput(loss=loss, embeddings=embeddings, **stats)
