"""The colourisation objective of Zhang et al. 2016 ("Colorful Image Colorization", arXiv:1603.08511, §2.1-2.2).

Predict, for every position, a distribution ``Ẑ`` over ``Q`` quantised ab bins; score it against a soft-encoded
target ``Z`` with a class-rebalanced multinomial cross-entropy (Eq. 2):

``L(Ẑ, Z) = - sum_{h,w} v(Z_hw) sum_q Z_hwq log Ẑ_hwq``, with ``v(Z_hw) = w_{q*}``, ``q* = argmax_q Z_hwq``

- bins (§2.1): the ab plane quantised at grid 10, keeping the ``Q = 313`` in-gamut bins (:func:`in_gamut_ab_bins`);
- soft encoding (§2.1 and Appendix): each ground-truth ab value spreads over its 5 nearest bins with weights
  proportional to a Gaussian kernel of its distance to them (``sigma = 5``) (:func:`soft_encode_ab`);
- rebalancing (§2.2, Eq. 3-4): ``w ∝ ((1 - λ) p̃ + λ / Q)^-1`` with ``p̃`` the empirical bin distribution smoothed by a
  Gaussian (``sigma = 5``), ``λ = 0.5``, normalised so that ``E_p̃[w] = sum_q p̃_q w_q = 1``
  (:func:`smoothed_bin_distribution`, :func:`rebalancing_weights`);
- colours back (§2.3): the annealed mean of the distribution at temperature ``T = 0.38`` (:func:`annealed_mean`).

The loss here is the *mean* over positions (the paper writes the sum over an image's positions); the gradient's
direction is the same and the value does not grow with the image size.
"""

from __future__ import annotations

import functools

import kornia
import torch
import torch.nn.functional as F
from scipy.spatial import ConvexHull, Delaunay

#: The paper's settings (Zhang et al. 2016, §2.1-2.3), each declared once.
AB_GRID_SIZE = 10
SOFT_ENCODING_NEIGHBOURS = 5
SOFT_ENCODING_SIGMA = 5.0
PRIOR_SMOOTHING_SIGMA = 5.0
REBALANCING_LAMBDA = 0.5
ANNEALED_MEAN_TEMPERATURE = 0.38
#: The ab range the bins are drawn from (the sRGB gamut lies within it).
AB_LIMIT = 110


@functools.lru_cache(maxsize=4)
def _in_gamut_ab_bins(grid_size: int) -> tuple[tuple[float, float], ...]:
    # The sRGB gamut's ab projection is the projection of the RGB cube's surface (Lab is a continuous map of the
    # cube): its convex hull is that of the surface's points.
    steps = torch.linspace(0, 1, 65, dtype=torch.float64)
    u, v = torch.meshgrid(steps, steps, indexing="ij")
    u, v = u.flatten(), v.flatten()
    faces = []
    for axis in range(3):
        for value in (0.0, 1.0):
            columns = [u, v]
            columns.insert(axis, torch.full_like(u, value))
            faces.append(torch.stack(columns))
    rgb = torch.cat(faces, dim=1).view(1, 3, -1, 1)
    ab = kornia.color.rgb_to_lab(rgb)[0, 1:, :, 0].T.numpy()
    hull = Delaunay(ab[ConvexHull(ab).vertices])
    centres = torch.arange(-AB_LIMIT, AB_LIMIT + 1, grid_size, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(centres, centres, indexing="ij"), dim=-1).reshape(-1, 2)
    # A bin is kept when one of the corners of the (2 * grid)-wide square around its centre lies in the gamut's
    # hull: at grid 10 exactly the 313 bins of the authors' released list (pts_in_hull.npy), in its (a, b) order.
    corners = torch.tensor([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]], dtype=torch.float64) * grid_size
    inside = hull.find_simplex((grid[:, None, :] + corners).reshape(-1, 2).numpy()) >= 0
    keep = torch.from_numpy(inside).view(-1, 4).any(dim=1)
    return tuple(map(tuple, grid[keep].tolist()))


def in_gamut_ab_bins(grid_size: int = AB_GRID_SIZE) -> torch.Tensor:
    """``(Q, 2)`` centres (a, b) of the in-gamut bins of the ab plane quantised at ``grid_size`` (Zhang et al. §2.1,
    Fig. 3a): ``Q = 313`` at the paper's grid 10, the same bins in the same order as the authors' ``pts_in_hull.npy``
    (first bin (-90, 50), last (100, 0)). Computed from the sRGB gamut (kornia's Lab conversion, scipy's hull)."""
    if grid_size < 1:
        raise ValueError(f"grid_size must be >= 1 (the ab bin width; the paper's is {AB_GRID_SIZE}), got {grid_size}")
    return torch.tensor(_in_gamut_ab_bins(int(grid_size)), dtype=torch.float32)


def soft_encode_ab(
    ab: torch.Tensor, bins: torch.Tensor, neighbours: int = SOFT_ENCODING_NEIGHBOURS,
    sigma: float = SOFT_ENCODING_SIGMA,
) -> torch.Tensor:
    """Soft-encoded targets ``Z`` (Zhang et al. §2.1): ``ab (N, 2)`` -> ``(N, Q)``, each row spread over the
    ``neighbours`` nearest bins with weights ``∝ exp(-d^2 / (2 sigma^2))`` of the distance ``d`` to each bin centre,
    summing to 1; 0 elsewhere. ``bins (Q, 2)``: :func:`in_gamut_ab_bins`."""
    if ab.dim() != 2 or ab.shape[1] != 2:
        raise ValueError(f"ab must be (positions, 2), got {tuple(ab.shape)}")
    if not 1 <= neighbours <= bins.shape[0]:
        raise ValueError(f"neighbours must be between 1 and the number of bins {bins.shape[0]}, got {neighbours}")
    squared = torch.cdist(ab.float(), bins.float()).pow(2)  # (N, Q)
    nearest_squared, nearest = squared.topk(neighbours, dim=1, largest=False)
    weights = torch.softmax(-nearest_squared / (2 * sigma**2), dim=1)  # the Gaussian kernel, normalised
    return torch.zeros_like(squared).scatter_(1, nearest, weights)


def smoothed_bin_distribution(
    counts: torch.Tensor, bins: torch.Tensor, sigma: float = PRIOR_SMOOTHING_SIGMA
) -> torch.Tensor:
    """``p̃`` of Eq. 4: the empirical distribution of the bins (``counts (Q,)``, how often each bin is the nearest to a
    ground-truth ab value) smoothed with a Gaussian kernel of width ``sigma`` over the ab plane, then normalised to
    sum to 1. ``bins (Q, 2)``. All-zero counts give the uniform distribution."""
    counts = counts.to(torch.float64)
    if counts.sum() <= 0:
        return torch.full_like(counts, 1.0 / counts.numel())
    kernel = torch.exp(-torch.cdist(bins.double(), bins.double()).pow(2) / (2 * sigma**2))  # (Q, Q)
    smoothed = kernel @ (counts / counts.sum())
    return smoothed / smoothed.sum()


def rebalancing_weights(distribution: torch.Tensor, lam: float = REBALANCING_LAMBDA) -> torch.Tensor:
    """``w (Q,)`` of Eq. 4: ``w ∝ ((1 - λ) p̃ + λ / Q)^-1``, scaled so that ``E_p̃[w] = sum_q p̃_q w_q = 1``.
    ``λ = 1`` gives ``w = 1`` (no rebalancing); ``λ = 0`` the inverse frequency."""
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"the rebalancing lambda must be in [0, 1] (the paper's is {REBALANCING_LAMBDA}), got {lam}")
    distribution = distribution.to(torch.float64)
    weights = 1.0 / ((1 - lam) * distribution + lam / distribution.numel())
    return weights / (distribution * weights).sum()


def rebalanced_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Eq. 2, averaged over positions: ``mean_{b,h,w} v(Z) * (-sum_q Z_q log softmax(logits)_q)``.

    ``logits``, ``targets``: ``(B, Q, h, w)`` (targets: soft encodings, summing to 1 over ``Q``); ``weights (Q,)``:
    :func:`rebalancing_weights` (``None``: no rebalancing). ``v(Z) = w[argmax_q Z]``, the weight of the target's
    nearest bin.
    """
    if logits.shape != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} must have the same shape")
    cross_entropy = -(targets * F.log_softmax(logits.float(), dim=1)).sum(dim=1)  # (B, h, w)
    if weights is not None:
        cross_entropy = cross_entropy * weights.to(cross_entropy.dtype)[targets.argmax(dim=1)]
    return cross_entropy.mean()


def annealed_mean(
    logits: torch.Tensor, bins: torch.Tensor, temperature: float = ANNEALED_MEAN_TEMPERATURE
) -> torch.Tensor:
    """Eq. 5: the ab prediction ``(B, 2, h, w)`` of ``logits (B, Q, h, w)``: the mean of the distribution re-normalised
    at ``temperature`` (``exp(log z / T) / sum``, i.e. ``softmax(logits / T)``); ``T = 1`` is the mean, ``T -> 0`` the
    mode. ``bins (Q, 2)``."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 (the paper's is {ANNEALED_MEAN_TEMPERATURE}), got {temperature}")
    probabilities = torch.softmax(logits.float() / temperature, dim=1)
    return torch.einsum("bqhw,qc->bchw", probabilities, bins.to(probabilities))
