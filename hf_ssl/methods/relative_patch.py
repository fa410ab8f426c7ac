"""Relative patch location (Doersch, Gupta & Efros 2015, "Unsupervised Visual Representation Learning by Context
Prediction", arXiv:1505.05192).

A centre patch and one of its eight neighbours on a 3x3 grid are cut from an image; a late-fusion network encodes
each patch with one shared encoder (up to fc6), concatenates the two features and classifies (fc7, fc8) where the
neighbour sat relative to the centre: 8 classes, in reading order (Fig. 2):

    0 1 2
    3 . 4
    5 6 7

To keep the task from being solved by low-level cues (§3 "Avoiding trivial solutions"), the patches are separated by
a gap (the paper: 96 px patches, 48 px apart) and each is shifted by a random jitter (up to 7 px);
``color_dropping`` adds the paper's counter-measure against chromatic aberration (keep one colour channel of each
patch, replace the others with faint noise). Geometry: :class:`hf_ssl.views.tiles.TileGrid` with cells of
``patch + gap``.

The paper samples one neighbour per image; ``pairs_per_image`` (default 8) classifies several distinct neighbours of
the same centre at once: the same objective in expectation (the mean over the neighbours), with less variance, at the
cost of encoding ``1 + pairs_per_image`` patches per image. The published encoder is the shared patch encoder.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.functional import cross_entropy
from transformers import PretrainedConfig
from transformers.utils import ModelOutput

from ..modules.backbones import feature_dim, image_features
from ..modules.heads import ProjectionHead, mlp_head
from ..views.tiles import (
    TileGrid,
    check_tile_multiple,
    drop_color_channels,
    largest_tile_size,
    patch_multiple,
)
from .base import SSLMethodConfig, SSLPreTrainedModel
from .rotation import single_images

#: The 3x3 grid position (row-major) of the centre patch and of the neighbour of each class 0..7 (reading order).
CENTRE_POSITION = 4
NEIGHBOUR_POSITIONS = (0, 1, 2, 3, 5, 6, 7, 8)
#: Patch side over cell side in the paper (96 px patches with a 48 px gap: cells of 144 px).
PAPER_TILE_FRACTION = 96 / 144
#: Jitter over gap in the paper (up to 7 px for a 48 px gap).
PAPER_JITTER_FRACTION = 7 / 48


@dataclass
class RelativePatchConfig(SSLMethodConfig):
    """Relative-patch-location hyperparameters (defaults: Doersch et al. 2015, §3 and §4, scaled to the images).

    tile_size: side of a patch in pixels; unset: the largest multiple of the encoder's patch size at most 2/3 of a
        cell of the 3x3 grid (the paper's 96 px patch in a 144 px cell).
    tile_jitter: random shift of each patch along each axis, at most half the gap; unset: 7/48 of the gap (at least
        1 px where the gap allows).
    pairs_per_image: distinct neighbours classified per centre (1: the paper's sampling; 8: all of them).
    color_dropping: keep one random colour channel per patch, the other two replaced by noise (§3).
    tile_feature_dim: width of fc6, the per-patch projection (the paper: 4096).
    hidden_dim: width of fc7 over the concatenated pair (4096).
    """

    method = "relative_patch"

    tile_size: int | None = None
    tile_jitter: int | None = None
    pairs_per_image: int = 8
    color_dropping: bool = False
    tile_feature_dim: int = 4096
    hidden_dim: int = 4096

    def __post_init__(self):
        self.check_ranges(at_least_one=("tile_feature_dim", "hidden_dim"))
        if not 1 <= self.pairs_per_image <= len(NEIGHBOUR_POSITIONS):
            raise ValueError(f"pairs_per_image must be between 1 and 8 (the neighbours of the centre), got "
                             f"{self.pairs_per_image}")
        if self.tile_size is not None and self.tile_size < 1:
            raise ValueError(f"tile_size must be >= 1 (or unset: sized to the images), got {self.tile_size}")
        if self.tile_jitter is not None and self.tile_jitter < 0:
            raise ValueError(f"tile_jitter must be >= 0 (or unset: 7/48 of the gap), got {self.tile_jitter}")


@dataclass
class RelativePatchOutput(ModelOutput):
    """Output of :class:`RelativePatchForPreTraining`.

    loss: scalar cross-entropy of the 8-way position classifier, mean over the pairs.
    accuracy: share of pairs whose position is predicted right (0.125: chance).
    logits: ``(N * pairs_per_image, 8)`` classifier scores, pairs of one image consecutive.
    labels: ``(N * pairs_per_image,)`` the class of each pair (the neighbour's position, reading order).
    """

    loss: torch.Tensor | None = None
    accuracy: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    labels: torch.Tensor | None = None


class RelativePatchForPreTraining(SSLPreTrainedModel):
    """Relative patch location over any transformers vision encoder (ViT: patches run at their own size through
    interpolated position embeddings; ResNet, timm).

    Modules: the encoder under its native prefix (what vanilla transformers loads), ``tile_projection`` (fc6,
    Linear-BN-ReLU, shared by both patches) and ``classifier`` (fc7-fc8, Linear-BN-ReLU-Linear over the concatenated
    pair, 8 classes).

    Inputs: ``global_crops (batch, views, C, S, S)`` from :class:`hf_ssl.views.MultiCropTransform` (every view is an
    image of its own) or ``pixel_values (batch, C, S, S)``; optionally ``neighbour_labels (N, pairs_per_image)``,
    distinct classes per row, to choose the neighbours (default: random, with the global torch RNG, which the Trainer
    checkpoints, as the jitter and colour dropping).
    """

    method_config_class = RelativePatchConfig
    paper = (
        "Doersch et al. 2015. Unsupervised Visual Representation Learning by Context Prediction. arXiv:1505.05192"
    )

    def __init__(self, config: PretrainedConfig):
        super().__init__(config)
        settings: RelativePatchConfig = self.method_config
        self.register_published_encoder(self.build_encoder())
        self.tile_multiple = patch_multiple(config)
        if settings.tile_size is not None:
            check_tile_multiple(settings.tile_size, self.tile_multiple)
        dim = settings.tile_feature_dim
        self.tile_projection = ProjectionHead([(feature_dim(self.encoder), dim, nn.BatchNorm1d(dim), nn.ReLU())])
        self.classifier = mlp_head([2 * dim, settings.hidden_dim, len(NEIGHBOUR_POSITIONS)])
        self.post_init()

    def tile_grid(self, side: int) -> TileGrid:
        """The 3x3 layout of patches in ``side x side`` images (cells of patch + gap)."""
        settings: RelativePatchConfig = self.method_config
        cell = side // 3
        tile = settings.tile_size or largest_tile_size(cell, PAPER_TILE_FRACTION, self.tile_multiple)
        jitter = settings.tile_jitter
        if jitter is None:
            gap = max(cell - tile, 0)
            jitter = min(gap // 2, max(1, round(PAPER_JITTER_FRACTION * gap))) if gap >= 2 else 0
        return TileGrid(side, 3, tile, jitter)

    def pair_tiles(self, images: torch.Tensor, neighbour_labels: torch.Tensor) -> torch.Tensor:
        """``images (N, C, S, S)``, ``neighbour_labels (N, P)`` -> ``(N, 1 + P, C, t, t)``: each image's centre patch,
        then the neighbour of each label, each with its own jitter."""
        positions = torch.tensor(NEIGHBOUR_POSITIONS, device=images.device)[neighbour_labels]  # (N, P) grid cells
        centre = torch.full((images.shape[0], 1), CENTRE_POSITION, device=images.device)
        return self.tile_grid(images.shape[-1]).crop(images, torch.cat([centre, positions], dim=1))

    def forward(
        self,
        global_crops: torch.Tensor | None = None,
        local_crops: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        neighbour_labels: torch.Tensor | None = None,
        return_loss: bool = True,
        **kwargs,
    ) -> RelativePatchOutput:
        settings: RelativePatchConfig = self.method_config
        images = single_images(global_crops, local_crops, pixel_values, type(self).__name__)
        count, pairs = images.shape[0], settings.pairs_per_image
        labels = neighbour_labels
        if labels is None:  # distinct neighbours per image, uniformly
            labels = torch.rand(count, len(NEIGHBOUR_POSITIONS), device=images.device).argsort(dim=1)[:, :pairs]
        elif labels.shape != (count, pairs):
            raise ValueError(
                f"neighbour_labels must be (images, pairs_per_image) = {(count, pairs)}, got {tuple(labels.shape)}"
            )
        tiles = self.pair_tiles(images, labels)
        if settings.color_dropping:
            tiles = drop_color_channels(tiles)
        features = self.tile_projection(image_features(self.encoder, tiles.flatten(0, 1)))
        features = features.reshape(count, 1 + pairs, -1)
        pair_features = torch.cat([features[:, :1].expand(-1, pairs, -1), features[:, 1:]], dim=-1)
        logits = self.classifier(pair_features.flatten(0, 1))
        labels = labels.reshape(-1)
        if not return_loss:
            return RelativePatchOutput(logits=logits, labels=labels)
        return RelativePatchOutput(
            loss=cross_entropy(logits.float(), labels),
            accuracy=(logits.detach().argmax(dim=-1) == labels).float().mean(),
            logits=logits,
            labels=labels,
        )
