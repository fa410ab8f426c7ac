"""Weight initialisation for the heads hf_ssl adds (encoders keep their own transformers initialisation)."""

from __future__ import annotations

from torch import nn
from transformers import initialization as init

from .heads import DINOHead


def init_head_weights(module: nn.Module) -> None:
    """Truncated normal (std 0.02) Linear weights and zero biases, as DINO / MoCo v3 heads; unit norms.

    Encoders are ``PreTrainedModel``s and are initialised by their own ``_init_weights``; this only sees our heads.
    """
    if isinstance(module, DINOHead):
        module.reset_last_layer()
    elif isinstance(module, nn.Linear) and not hasattr(module, "parametrizations"):
        init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            init.zeros_(module.bias)
    elif isinstance(module, (nn.LayerNorm, nn.BatchNorm1d)):
        if module.weight is not None:
            init.ones_(module.weight)
            init.zeros_(module.bias)
