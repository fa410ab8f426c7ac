"""Projection, prediction and DINO heads, all built from one block-spec base.

A head is a stack of blocks ``(in_dim, out_dim, norm, activation)``: Linear -> optional norm -> optional activation.
SimCLR/MoCo projection heads, BYOL/SimSiam predictors and the DINO MLP are the same class with different specs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.functional import normalize
from torch.nn.utils.parametrizations import weight_norm

# (in_dim, out_dim, normalisation layer or None, activation or None)
BlockSpec = tuple[int, int, nn.Module | None, nn.Module | None]


class ProjectionHead(nn.Module):
    """Stack of Linear [+ norm] [+ activation] blocks.

    Args:
        blocks: one ``BlockSpec`` per layer. A Linear layer followed by a norm gets no bias (the norm has one).

    Shapes: ``(batch, blocks[0].in_dim) -> (batch, blocks[-1].out_dim)``.
    """

    def __init__(self, blocks: Sequence[BlockSpec]):
        super().__init__()
        if not blocks:
            raise ValueError("a ProjectionHead needs at least one block")
        layers: list[nn.Module] = []
        for in_dim, out_dim, norm, activation in blocks:
            layers.append(nn.Linear(in_dim, out_dim, bias=norm is None))
            layers.extend(module for module in (norm, activation) if module is not None)
        self.layers = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)


class DINOHead(nn.Module):
    """DINO projection head (Caron et al. 2021, §3 and Appendix): MLP -> L2-normalise -> weight-normalised linear.

    The MLP has ``num_layers`` layers (hidden width ``hidden_dim``, GELU) ending in a ``bottleneck_dim`` embedding,
    which is L2-normalised and scored against ``out_dim`` prototypes by a weight-normalised linear layer without
    bias. With ``norm_last_layer`` the weight-norm gain is fixed to 1, so every prototype is a unit vector.

    Shapes: ``(batch, in_dim) -> (batch, out_dim)`` logits (before the temperature).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        num_layers: int = 3,
        use_batch_norm: bool = False,
        norm_last_layer: bool = True,
    ):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [bottleneck_dim]
        blocks: list[BlockSpec] = []
        for index, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
            last = index == num_layers - 1
            norm = nn.BatchNorm1d(d_out) if use_batch_norm and not last else None
            blocks.append((d_in, d_out, norm, None if last else nn.GELU()))
        self.mlp = ProjectionHead(blocks)
        # torch.nn.utils.parametrizations.weight_norm: weight = g * v / ||v|| with g = original0, v = original1.
        self.last_layer = weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        self.norm_last_layer = norm_last_layer
        self.reset_last_layer()

    @torch.no_grad()
    def reset_last_layer(self) -> None:
        """Gain g = 1 (frozen when ``norm_last_layer``), prototypes v ~ N(0, 0.02) truncated."""
        parametrization = self.last_layer.parametrizations.weight
        nn.init.trunc_normal_(parametrization.original1, std=0.02)
        parametrization.original0.fill_(1.0)
        parametrization.original0.requires_grad_(not self.norm_last_layer)

    @property
    def last_layer_parameters(self) -> list[nn.Parameter]:
        """Parameters frozen during the first epoch(s) (DINO's ``freeze_last_layer``)."""
        return [p for p in self.last_layer.parameters() if p.requires_grad]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        embedding = normalize(self.mlp(features), dim=-1)
        return self.last_layer(embedding)
