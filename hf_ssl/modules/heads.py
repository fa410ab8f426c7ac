"""Projection, prediction and DINO heads, all built from one block-spec base, and the methods' named head recipes.

A head is a stack of blocks ``(in_dim, out_dim, norm, activation)``: Linear -> optional norm -> optional activation.
SimCLR/MoCo projection heads, BYOL/SimSiam predictors and the DINO MLP are the same class with different specs;
:func:`mlp_head` writes the specs of every method's projector and predictor once.
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


def mlp_head(dims: Sequence[int], *, batch_norm: bool = True, output_norm: bool = False) -> ProjectionHead:
    """Linear layers between consecutive ``dims``; each hidden one followed by BatchNorm (``batch_norm``) and ReLU,
    the last one by BatchNorm without affine parameters when ``output_norm``.

    Shapes: ``(batch, dims[0]) -> (batch, dims[-1])``. The methods' heads:

    - SimCLR's projector (Chen et al. 2020, §2.1), BYOL's projector and predictor (Grill et al. 2020, §3.3) and
      SimSiam's predictor (Chen & He 2021, §3): ``mlp_head([in, hidden, out])``, Linear-BN-ReLU-Linear;
    - SimSiam's projector (its reference code) and MoCo v3's projector and predictor (Chen, Xie & He 2021,
      ``_build_mlp``): ``mlp_head([in, hidden, ..., out], output_norm=True)``;
    - MoCo v2's projector (Chen et al. 2020b): ``mlp_head([in, hidden, out], batch_norm=False)``, Linear-ReLU-Linear.
    """
    if len(dims) < 2:
        raise ValueError(f"an MLP head needs at least an input and an output width, got {list(dims)}")
    blocks: list[BlockSpec] = []
    for index, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
        if index < len(dims) - 2:
            blocks.append((d_in, d_out, nn.BatchNorm1d(d_out) if batch_norm else None, nn.ReLU()))
        else:
            blocks.append((d_in, d_out, nn.BatchNorm1d(d_out, affine=False) if output_norm else None, None))
    return ProjectionHead(blocks)


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
