"""DeepCluster (Caron et al. 2018, "Deep Clustering for Unsupervised Learning of Visual Features", arXiv:1807.05520).

Alternates two steps: (1) features of every training image (no augmentation) are PCA-whitened, L2-normalised and
clustered with k-means into k groups, whose assignments become pseudo-labels; (2) the encoder and a classifier head,
freshly re-initialised after each clustering (the old classes mean nothing any more), learn to predict those
pseudo-labels from augmented views with cross-entropy, sampling the clusters uniformly (§3.3, "Avoiding trivial
solutions"). This model is step (2): it holds the pseudo-labels as a buffer (``assignments``, one per training
example, so checkpoints resume exactly) and the classifier; step (1), the clustering, the head reset and the
cluster-balanced order are run by :class:`hf_ssl.training.clustering.ClusterReassignment` (a ``TrainerCallback``) and
:class:`hf_ssl.training.clustering.ClusterBalancedSampler`, which the ``deepcluster`` job wires in.

The examples' dataset indices come with the batch (``ssl_index``); ``num_examples`` must be the training set's size
(the job sets it). The published encoder (what vanilla ``AutoModel`` loads) is the trained encoder; the classifier
and the assignments stay in ``ssl_state.safetensors``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import PretrainedConfig
from transformers.utils import ModelOutput

from ..modules.backbones import feature_dim, image_features
from .base import SSLMethodConfig, SSLPreTrainedModel

#: Standard deviation of the re-initialised classifier's weights (the reference code's top layer: normal(0, 0.01)).
CLASSIFIER_INIT_STD = 0.01


@dataclass
class DeepClusterConfig(SSLMethodConfig):
    """DeepCluster hyperparameters (defaults: Caron et al. 2018 §4-5, ImageNet with k = 10000).

    num_examples: the training set's size N (one pseudo-label per example; set by the job from the data).
    num_clusters: k. reassign_every: optimizer steps between two clusterings; 0: once per pass over the data (the
    paper). pca_dim: features are PCA-reduced to this many dimensions and whitened before k-means (256 in the paper;
    0: no PCA); l2_normalize: L2-normalise them after (the paper does). kmeans_iterations: Lloyd iterations (20,
    the reference code's faiss setting). cluster_batch_size: images per forward when extracting the features.
    """

    method = "deepcluster"

    num_examples: int = 0
    num_clusters: int = 10000
    reassign_every: int = 0
    pca_dim: int = 256
    l2_normalize: bool = True
    kmeans_iterations: int = 20
    cluster_batch_size: int = 256

    def __post_init__(self):
        self.check_ranges(at_least_one=("num_clusters", "kmeans_iterations", "cluster_batch_size"))
        if self.reassign_every < 0 or self.pca_dim < 0:
            raise ValueError(f"reassign_every and pca_dim must be >= 0 (0: every epoch / no PCA), got "
                             f"{self.reassign_every} and {self.pca_dim}")
        if self.num_clusters < 2:
            raise ValueError(f"num_clusters must be >= 2, got {self.num_clusters}")


@dataclass
class DeepClusterOutput(ModelOutput):
    """Output of :class:`DeepClusterForPreTraining`.

    loss: cross-entropy of the classifier's logits against the pseudo-labels, mean over the local batch.
    accuracy: share of the batch whose pseudo-label the classifier predicts. logits: ``(batch, num_clusters)``.
    features: ``(batch, hidden)`` encoder features (what the clustering groups).
    """

    loss: torch.Tensor | None = None
    accuracy: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    features: torch.Tensor | None = None


class DeepClusterForPreTraining(SSLPreTrainedModel):
    """DeepCluster's classification step over any transformers vision encoder.

    Modules: the encoder under its native prefix (``vit``, ...: what vanilla transformers loads) and ``classifier``
    (Linear to ``num_clusters``). Buffers: ``assignments`` ``(num_examples,)`` int64 pseudo-labels (-1 before the first
    clustering) and ``assignment_epoch``, the training epoch they were computed for (-1: never), which tells a resumed
    run not to cluster again.

    Inputs: ``pixel_values`` ``(batch, C, H, W)`` (one view per image) and ``ssl_index`` ``(batch,)`` int64, the
    examples' dataset indices, whose pseudo-labels are the targets.
    """

    method_config_class = DeepClusterConfig
    pretraining_job = "deepcluster"
    paper = "Caron et al. 2018. Deep Clustering for Unsupervised Learning of Visual Features. arXiv:1807.05520"

    def __init__(self, config: PretrainedConfig):
        super().__init__(config)
        settings: DeepClusterConfig = self.method_config
        if settings.num_examples < settings.num_clusters:
            raise ValueError(
                f"num_examples ({settings.num_examples}) must be the training set's size and at least num_clusters "
                f"({settings.num_clusters}); the deepcluster job sets it from the data; lower num_clusters for a "
                "small dataset"
            )
        self.register_published_encoder(self.build_encoder())
        self.classifier = nn.Linear(feature_dim(self.encoder), settings.num_clusters)
        self.register_buffer("assignments", torch.full((settings.num_examples,), -1, dtype=torch.long))
        self.register_buffer("assignment_epoch", torch.tensor(-1, dtype=torch.long))
        self.post_init()

    def forward(
        self, pixel_values: torch.Tensor, ssl_index: torch.Tensor | None = None, return_loss: bool = True, **kwargs
    ) -> DeepClusterOutput:
        if pixel_values.dim() != 4:
            raise ValueError(
                f"DeepCluster takes one view per image: pixel_values of shape (batch, channels, height, width), got "
                f"{tuple(pixel_values.shape)}; build views with hf_ssl.jobs.clustering.IndexedViewTransform"
            )
        features = image_features(self.encoder, pixel_values)
        logits = self.classifier(features)
        if not return_loss:
            return DeepClusterOutput(logits=logits, features=features)
        if ssl_index is None:
            raise ValueError("the loss needs each example's dataset index: pass ssl_index (batch,) (the `ssl_index` "
                             "column, batched by hf_ssl.jobs.clustering.IndexedViewTransform), or return_loss=False")
        labels = self.assignments[ssl_index]
        if bool((labels < 0).any()):
            raise ValueError(
                "some examples of the batch have no pseudo-label yet: cluster first (set_assignments, or train with "
                "hf_ssl.training.clustering.ClusterReassignment, which the deepcluster job adds)"
            )
        loss = nn.functional.cross_entropy(logits, labels)
        accuracy = (logits.detach().argmax(dim=1) == labels).float().mean()
        return DeepClusterOutput(loss=loss, accuracy=accuracy, logits=logits, features=features)

    @torch.no_grad()
    def set_assignments(self, assignments: torch.Tensor, epoch: int, generator: torch.Generator | None = None) -> None:
        """Take new pseudo-labels ``(num_examples,)`` computed for training epoch ``epoch`` and re-initialise the
        classifier (weights normal(0, 0.01) from ``generator``, zero bias, as the reference code's top layer)."""
        if assignments.shape != self.assignments.shape:
            raise ValueError(f"assignments must be ({self.assignments.shape[0]},), one per training example; got "
                             f"{tuple(assignments.shape)}")
        if int(assignments.min()) < 0 or int(assignments.max()) >= self.method_config.num_clusters:
            raise ValueError(f"pseudo-labels must be in [0, {self.method_config.num_clusters})")
        self.assignments.copy_(assignments.to(self.assignments.device))
        self.assignment_epoch.fill_(int(epoch))
        weight = torch.randn(self.classifier.weight.shape, generator=generator) * CLASSIFIER_INIT_STD
        self.classifier.weight.copy_(weight.to(self.classifier.weight))
        self.classifier.bias.zero_()
