"""Per-parameter gradient clipping, DINO's variant (``clip_gradients`` in the reference code of Caron et al. 2021,
arXiv:2104.14294, at 3.0): each parameter's gradient is scaled down to norm ``max_norm`` on its own, where
``torch.nn.utils.clip_grad_norm_`` (transformers' ``max_grad_norm``) scales all gradients by one factor, from their
joint norm. ``SSLTrainingArguments(gradient_clipping="per_parameter")`` selects it.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

#: Added to a norm before dividing, as in ``torch.nn.utils.clip_grad_norm_`` and DINO's ``clip_gradients``.
EPSILON = 1e-6


@torch.no_grad()
def clip_gradients_per_parameter_(parameters: Iterable[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
    """Scale each gradient ``g`` in place by ``min(1, max_norm / (||g|| + 1e-6))``; returns the joint norm of the
    gradients *before* clipping (what ``clip_grad_norm_`` returns, so ``grad_norm`` logs the same quantity).

    Parameters without a gradient are skipped; an empty set returns 0.
    """
    if not max_norm > 0:
        raise ValueError(f"max_norm must be > 0, got {max_norm}")
    gradients = [parameter.grad for parameter in parameters if parameter.grad is not None]
    if not gradients:
        return torch.tensor(0.0)
    norms = [torch.linalg.vector_norm(gradient.detach().float()) for gradient in gradients]
    for gradient, norm in zip(gradients, norms):
        gradient.mul_((max_norm / (norm + EPSILON)).clamp(max=1.0).to(gradient.dtype))
    return torch.linalg.vector_norm(torch.stack(norms))
