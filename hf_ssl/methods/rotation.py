"""Rotation prediction (Gidaris et al. 2018, "Unsupervised Representation Learning by Predicting Image Rotations",
arXiv:1803.07728).

Every image is shown in its four rotations by 0, 90, 180 and 270 degrees (:func:`hf_ssl.views.rotations.four_rotations`,
all four copies in the same batch, §3.2 / Table 2 of the paper), and a 4-way classifier on the encoder's feature
predicts which rotation it sees: the loss is Eq. 1-2,
``loss(X) = -1/4 * sum_y log F^y(g(X | y))``, the mean cross-entropy over the images and their rotations. Recognising
the rotation needs the concept of the object's canonical orientation (where the head, the ground, the sky is), which
is what makes the features useful (§2.2).

The published encoder is the trained encoder itself; the classifier head is dropped for downstream use. The same
loss is available as an auxiliary task to every other image method: ``auxiliary_rotation_weight`` (see
:func:`hf_ssl.methods.base.add_auxiliary_rotation_loss`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn.functional import cross_entropy
from transformers import PretrainedConfig
from transformers.utils import ModelOutput

from ..modules.backbones import feature_dim, image_features
from ..modules.heads import mlp_head
from ..views.rotations import ROTATION_DEGREES, four_rotations
from .base import SSLMethodConfig, SSLPreTrainedModel, view_major


@dataclass
class RotationConfig(SSLMethodConfig):
    """Rotation-prediction hyperparameters.

    head_hidden_dim: width of the hidden layer of the rotation classifier, Linear-BN-ReLU-Linear (0: a linear
        classifier on the encoder's feature). The paper's classifier is the network's own last block (NIN) or its
        fully connected layers (AlexNet); a hidden layer lets the encoder's feature stay less specific to the
        pretext task (§3.1: the last layers specialise to rotations).
    """

    method = "rotation"

    head_hidden_dim: int = 0

    def __post_init__(self):
        if self.head_hidden_dim < 0:
            raise ValueError(f"head_hidden_dim must be >= 0 (0: a linear classifier), got {self.head_hidden_dim}")
        if self.auxiliary_rotation_weight:
            raise ValueError("rotation prediction is already this method's loss: leave auxiliary_rotation_weight at 0")


@dataclass
class RotationOutput(ModelOutput):
    """Output of :class:`RotationForPreTraining`.

    loss: scalar cross-entropy of the 4-way rotation classifier, mean over every image and rotation.
    accuracy: share of the rotated images whose rotation is predicted right (0.25: chance).
    logits: ``(4 * N, 4)`` classifier scores, rotation-major (``N`` images: every view of the batch).
    labels: ``(4 * N,)`` the rotation of each row, ``k`` = ``k * 90`` degrees counter-clockwise.
    """

    loss: torch.Tensor | None = None
    accuracy: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    labels: torch.Tensor | None = None


class RotationForPreTraining(SSLPreTrainedModel):
    """Rotation prediction over any transformers vision encoder (ViT, ResNet, timm).

    Modules: the encoder under its native prefix (what vanilla transformers loads) and ``rotation_head`` (the 4-way
    classifier). No per-step hooks, no randomness of its own (the views' augmentations are the only random part).

    Inputs: ``global_crops (batch, views, C, S, S)`` from :class:`hf_ssl.views.MultiCropTransform` (every view is an
    image of its own; the image job's default is 2 views) or ``pixel_values (batch, C, S, S)``; square images.
    Local crops are refused.
    """

    method_config_class = RotationConfig
    paper = (
        "Gidaris et al. 2018. Unsupervised Representation Learning by Predicting Image Rotations. arXiv:1803.07728"
    )

    def __init__(self, config: PretrainedConfig):
        super().__init__(config)
        settings: RotationConfig = self.method_config
        self.register_published_encoder(self.build_encoder())
        widths = [feature_dim(self.encoder), settings.head_hidden_dim, len(ROTATION_DEGREES)]
        self.rotation_head = mlp_head([width for width in widths if width])
        self.post_init()

    def forward(
        self,
        global_crops: torch.Tensor | None = None,
        local_crops: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        return_loss: bool = True,
        **kwargs,
    ) -> RotationOutput:
        images = single_images(global_crops, local_crops, pixel_values, type(self).__name__)
        rotated, labels = four_rotations(images)
        logits = self.rotation_head(image_features(self.encoder, rotated))
        if not return_loss:
            return RotationOutput(logits=logits, labels=labels)
        return RotationOutput(
            loss=cross_entropy(logits.float(), labels),
            accuracy=(logits.detach().argmax(dim=-1) == labels).float().mean(),
            logits=logits,
            labels=labels,
        )


def single_images(
    global_crops: torch.Tensor | None, local_crops: torch.Tensor | None, pixel_values: torch.Tensor | None, name: str
) -> torch.Tensor:
    """The batch's images for a pretext task that treats every view as an image of its own:
    ``global_crops (B, V, C, H, W)`` -> ``(V * B, C, H, W)`` view-major, or ``pixel_values (B, C, H, W)`` as they are.
    """
    if local_crops is not None and local_crops.shape[1] > 0:
        raise ValueError(f"{name} uses no local crops, got {local_crops.shape[1]} per image; set num_local_crops=0")
    if (global_crops is None) == (pixel_values is None):
        raise ValueError(f"{name} takes either global_crops (batch, views, C, H, W) or pixel_values (batch, C, H, W)")
    if global_crops is not None:
        if global_crops.dim() != 5:
            raise ValueError(
                f"global_crops must be (batch, views, channels, height, width), got {tuple(global_crops.shape)}"
            )
        return view_major(global_crops)
    if pixel_values.dim() != 4:
        raise ValueError(f"pixel_values must be (batch, channels, height, width), got {tuple(pixel_values.shape)}")
    return pixel_values
