"""Jigsaw puzzles (Noroozi & Favaro 2016, "Unsupervised Learning of Visual Representations by Solving Jigsaw
Puzzles", arXiv:1603.09246).

Each image is cut into a ``grid_size x grid_size`` grid of tiles (3x3), each tile taken at a random position inside its
cell so that neighbouring tiles are separated by a random gap (:class:`hf_ssl.views.tiles.TileGrid`; the paper: 64 px
tiles in 75 px cells), and normalised on its own (§3.2). The tiles are shuffled by a permutation drawn uniformly from
a fixed set of ``num_permutations`` permutations of maximal Hamming distance
(:func:`hf_ssl.views.permutations.maximal_hamming_permutations`, Algorithm 1), and the network predicts which one:
the context-free network (CFN, Fig. 3) encodes every tile separately with one shared encoder, projects each tile's
feature (fc6), concatenates the projections in the shuffled order, and classifies them with an MLP (fc7, fc8) over the
permutation set; the loss is the cross-entropy of that classification.

Defaults: the paper's best setting (1000 permutations, Table 3; fc6 512 per tile, fc7 4096), with the tiles sized to
the images: the largest multiple of the encoder's patch size at most 64/75 of a cell (8 px tiles in 10 px cells for
32 px images at patch 4). The published encoder is the shared tile encoder; the heads are dropped.
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
from ..views.permutations import maximal_hamming_permutations
from ..views.tiles import (
    TileGrid,
    check_tile_multiple,
    largest_tile_size,
    patch_multiple,
    standardize_tiles,
)
from .base import SSLMethodConfig, SSLPreTrainedModel
from .rotation import single_images

#: Tile side over cell side in the paper (64 px tiles in the 75 px cells of a 225 px crop).
PAPER_TILE_FRACTION = 64 / 75


@dataclass
class JigsawConfig(SSLMethodConfig):
    """Jigsaw-puzzle hyperparameters (defaults: Noroozi & Favaro 2016, §3 and Table 3).

    grid_size: tiles per side (3: nine tiles).
    num_permutations: size of the permutation set, the number of classes (1000, the paper's best; fewer make an easier
        task that a short run learns faster, e.g. 100).
    permutation_seed: seed of the set's random first permutation (the set is deterministic given it).
    tile_size: side of a tile in pixels; unset: the largest multiple of the encoder's patch size at most 64/75 of a
        cell. Each tile sits at a uniform random position inside its cell.
    normalize_tiles: normalise every tile to zero mean and unit variance on its own (§3.2).
    tile_feature_dim: width of fc6, the per-tile projection (512).
    hidden_dim: width of fc7, over the concatenated tiles (4096).
    """

    method = "jigsaw"

    grid_size: int = 3
    num_permutations: int = 1000
    permutation_seed: int = 0
    tile_size: int | None = None
    normalize_tiles: bool = True
    tile_feature_dim: int = 512
    hidden_dim: int = 4096

    def __post_init__(self):
        self.check_ranges(at_least_one=("tile_feature_dim", "hidden_dim"))
        if not 2 <= self.grid_size <= 3:
            raise ValueError(f"grid_size must be 2 or 3 (the permutation search enumerates every order), got "
                             f"{self.grid_size}")
        if self.tile_size is not None and self.tile_size < 1:
            raise ValueError(f"tile_size must be >= 1 (or unset: sized to the images), got {self.tile_size}")


@dataclass
class JigsawOutput(ModelOutput):
    """Output of :class:`JigsawForPreTraining`.

    loss: scalar cross-entropy of the permutation classifier, mean over the puzzles (one per view of each image).
    accuracy: share of puzzles whose permutation is predicted right (``1 / num_permutations``: chance).
    logits: ``(N, num_permutations)`` classifier scores, ``N`` puzzles (every view of the batch, view-major).
    labels: ``(N,)`` the index of the permutation that shuffled each puzzle.
    """

    loss: torch.Tensor | None = None
    accuracy: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    labels: torch.Tensor | None = None


class JigsawForPreTraining(SSLPreTrainedModel):
    """Jigsaw puzzles over any transformers vision encoder (ViT: tiles run at their own size through interpolated
    position embeddings; ResNet, timm).

    Modules: the encoder under its native prefix (what vanilla transformers loads), ``tile_projection`` (fc6,
    Linear-BN-ReLU, shared by the tiles), ``classifier`` (fc7-fc8, Linear-BN-ReLU-Linear) and the buffer
    ``permutations (num_permutations, grid_size**2)``, saved with the method's state.

    Inputs: ``global_crops (batch, views, C, S, S)`` from :class:`hf_ssl.views.MultiCropTransform` (every view is a
    puzzle of its own) or ``pixel_values (batch, C, S, S)``; optionally ``permutation_labels (N,)`` to choose the
    permutations (default: uniform, with the global torch RNG, which the Trainer checkpoints, as the tile positions).
    """

    method_config_class = JigsawConfig
    paper = (
        "Noroozi & Favaro 2016. Unsupervised Learning of Visual Representations by Solving Jigsaw Puzzles. "
        "arXiv:1603.09246"
    )

    def __init__(self, config: PretrainedConfig):
        super().__init__(config)
        settings: JigsawConfig = self.method_config
        self.register_published_encoder(self.build_encoder())
        self.tile_multiple = patch_multiple(config)
        if settings.tile_size is not None:
            check_tile_multiple(settings.tile_size, self.tile_multiple)
        num_tiles = settings.grid_size**2
        self.register_buffer(
            "permutations",
            maximal_hamming_permutations(num_tiles, settings.num_permutations, settings.permutation_seed),
        )
        dim = settings.tile_feature_dim
        self.tile_projection = ProjectionHead([(feature_dim(self.encoder), dim, nn.BatchNorm1d(dim), nn.ReLU())])
        self.classifier = mlp_head([num_tiles * dim, settings.hidden_dim, settings.num_permutations])
        self.post_init()

    def tile_grid(self, side: int) -> TileGrid:
        """The tiles of ``side x side`` images: each at a uniform position inside its cell (jitter of half the room
        the tile leaves in the cell)."""
        settings: JigsawConfig = self.method_config
        cell = side // settings.grid_size
        tile = settings.tile_size or largest_tile_size(cell, PAPER_TILE_FRACTION, self.tile_multiple)
        return TileGrid(side, settings.grid_size, tile, jitter=max(cell - tile, 0) // 2)

    def forward(
        self,
        global_crops: torch.Tensor | None = None,
        local_crops: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        permutation_labels: torch.Tensor | None = None,
        return_loss: bool = True,
        **kwargs,
    ) -> JigsawOutput:
        images = single_images(global_crops, local_crops, pixel_values, type(self).__name__)
        count, side = images.shape[0], images.shape[-1]
        grid = self.tile_grid(side)
        tiles = grid.crop(images, torch.arange(grid.num_tiles, device=images.device).expand(count, -1))
        labels = permutation_labels
        if labels is None:
            labels = torch.randint(self.permutations.shape[0], (count,), device=images.device)
        elif labels.shape != (count,):
            raise ValueError(
                f"permutation_labels must hold one permutation index per puzzle, ({count},); got {tuple(labels.shape)}"
            )
        order = self.permutations[labels]  # (N, T): position i shows original tile order[i]
        shuffled = tiles[torch.arange(count, device=images.device)[:, None], order]
        if self.method_config.normalize_tiles:
            shuffled = standardize_tiles(shuffled)
        features = self.tile_projection(image_features(self.encoder, shuffled.flatten(0, 1)))  # (N * T, fc6)
        logits = self.classifier(features.reshape(count, -1))
        if not return_loss:
            return JigsawOutput(logits=logits, labels=labels)
        return JigsawOutput(
            loss=cross_entropy(logits.float(), labels),
            accuracy=(logits.detach().argmax(dim=-1) == labels).float().mean(),
            logits=logits,
            labels=labels,
        )
