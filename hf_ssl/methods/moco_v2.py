"""MoCo v2: momentum contrast with a queue of negatives (He et al. 2020, "Momentum Contrast for Unsupervised Visual
Representation Learning", arXiv:1911.05722; Chen et al. 2020, "Improved Baselines with Momentum Contrastive
Learning", arXiv:2003.04297: MLP head, T = 0.2, stronger augmentation).

A query encoder + MLP projector is trained with InfoNCE against the positive key (the other view, from a momentum
encoder + projector) and a queue of K keys from earlier batches. The loss is symmetrised (q1 vs k2 and q2 vs k1,
mean of the two), and both views' keys are enqueued after each training forward. The published encoder (what
vanilla ``AutoModel`` loads) is the key (momentum) encoder, as for DINO's teacher; the reference code releases the
query encoder ``encoder_q`` instead (available here as ``student_encoder``).

Shuffled BatchNorm (He et al. §3.3): with several processes and a key branch that contains BatchNorm (ResNet
encoders), the key images are gathered from every process, permuted with one permutation shared by all processes,
split again, encoded, and the keys returned to their owners (``shuffle_bn``, default on; a no-op with one process or
without BatchNorm, e.g. ViT encoders and MoCo v2's projector). Gathering uses ``all_gather`` of the pixels (works on
CPU with gloo), at the cost of one extra image all-gather per step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from transformers import PretrainedConfig
from transformers.utils import ModelOutput

from ..distributed import all_gather_no_grad, has_batch_norm, is_distributed, rank
from ..losses.moco import MoCoQueueLoss
from ..modules.backbones import image_features
from ..modules.heads import mlp_head
from .base import SSLMethodConfig, cross_view_loss
from .teacher import MomentumTeacherModel


@dataclass
class MoCoV2Config(SSLMethodConfig):
    """MoCo v2 hyperparameters (defaults: Chen et al. 2020, ImageNet).

    projection_hidden_dim / projection_dim: the MLP head (Linear-ReLU-Linear, 2048 -> 128). temperature: T of
    InfoNCE. queue_size: K negatives; a multiple of the keys enqueued per step (2 x global batch).
    momentum_teacher: key-encoder EMA momentum at step 0, cosine-scheduled to momentum_teacher_end (constant 0.999
    in the paper). shuffle_bn: shuffled BatchNorm in the key branch across processes (only acts with several
    processes and BatchNorm in the key branch).
    """

    method = "moco_v2"

    projection_hidden_dim: int = 2048
    projection_dim: int = 128
    temperature: float = 0.2
    queue_size: int = 65536
    momentum_teacher: float = 0.999
    momentum_teacher_end: float = 0.999
    shuffle_bn: bool = True

    def __post_init__(self):
        self.check_ranges(
            at_least_one=("projection_hidden_dim", "projection_dim", "queue_size"),
            positive=("temperature",),
            unit_interval=("momentum_teacher", "momentum_teacher_end"),
        )


@dataclass
class MoCoV2Output(ModelOutput):
    """Output of :class:`MoCoV2ForPreTraining`.

    loss: symmetric InfoNCE, mean of (q1 vs k2) and (q2 vs k1). positive_similarity / negative_similarity: mean
    cosine of queries to their key / to the queue. queries, keys: ``(2 * batch, projection_dim)`` before
    normalisation, view-major.
    """

    loss: torch.Tensor | None = None
    positive_similarity: torch.Tensor | None = None
    negative_similarity: torch.Tensor | None = None
    queries: torch.Tensor | None = None
    keys: torch.Tensor | None = None


class MoCoV2ForPreTraining(MomentumTeacherModel):
    """MoCo v2 over any transformers vision encoder.

    Modules: ``student_encoder`` + ``projector`` (query branch, trained); the key encoder under the encoder's
    native prefix (``vit``, ...: what vanilla transformers loads) + ``key_projector`` (EMA, no gradients);
    ``loss_fn`` (:class:`MoCoQueueLoss`) holding the ``queue`` and ``queue_ptr`` buffers, so checkpoints carry them.

    Inputs: ``global_crops`` ``(batch, 2, C, H, W)``. In training mode the forward enqueues both views' keys (from
    every process) after computing the loss; in evaluation mode the queue is left alone.
    """

    method_config_class = MoCoV2Config
    paper = "Chen et al. 2020. Improved Baselines with Momentum Contrastive Learning. arXiv:2003.04297"

    def __init__(self, config: PretrainedConfig):
        super().__init__(config)
        settings: MoCoV2Config = self.method_config
        self.build_student_and_teacher(
            lambda in_dim: mlp_head([in_dim, settings.projection_hidden_dim, settings.projection_dim], batch_norm=False),
            "projector", "key_projector",
        )
        self.loss_fn = MoCoQueueLoss(settings.projection_dim, settings.queue_size, settings.temperature)
        self.post_init()
        self.init_teachers()

    def forward(
        self,
        global_crops: torch.Tensor,
        local_crops: torch.Tensor | None = None,
        return_loss: bool = True,
        **kwargs,
    ) -> MoCoV2Output:
        pixels = self.two_view_pixels(global_crops, local_crops)
        batch = global_crops.shape[0]
        queries = self.projector(image_features(self.student_encoder, pixels, views=2))
        with torch.no_grad():
            if self.method_config.shuffle_bn and self.training and has_batch_norm(self.encoder, self.key_projector):
                keys = shuffled_forward(self._encode_keys, pixels)
            else:
                keys = self._encode_keys(pixels)
        if not return_loss:
            return MoCoV2Output(queries=queries, keys=keys)
        loss, stats = cross_view_loss(self.loss_fn, queries, keys)
        if self.training:
            self.loss_fn.enqueue([keys[:batch], keys[batch:]])
        return MoCoV2Output(
            loss=loss,
            positive_similarity=stats["positive_similarity"],
            negative_similarity=stats["negative_similarity"],
            queries=queries,
            keys=keys,
        )

    def _encode_keys(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.key_projector(image_features(self.encoder, pixels, views=2))

    # ----------------------------------------------------------------------------------------------------------------
    # Per-step interface


@torch.no_grad()
def shuffled_forward(function, inputs: torch.Tensor) -> torch.Tensor:
    """``function`` applied to a random shard of the global batch, outputs returned to their owners (shuffled BN).

    Every process gathers all processes' ``inputs`` (rank order), draws the same permutation (rank 0's, broadcast),
    runs ``function`` on its slice of the permuted batch, and gathers the outputs back in permuted order; each process
    then takes the rows of its own inputs. Row-wise functions give exactly ``function(inputs)``; BatchNorm sees a
    batch mixed across processes. One process: ``function(inputs)``. Every process must pass the same shape.
    """
    if not is_distributed():
        return function(inputs)
    local = inputs.shape[0]
    everything = all_gather_no_grad(inputs)
    permutation = torch.randperm(everything.shape[0], device=inputs.device)
    dist.broadcast(permutation, src=0)
    mine = slice(rank() * local, (rank() + 1) * local)
    outputs = all_gather_no_grad(function(everything[permutation[mine]]))  # row j: input permutation[j]
    inverse = torch.argsort(permutation)
    return outputs[inverse[mine]]
