"""Losses as ``nn.Module``s acting on embeddings / logits; cross-process communication happens inside."""

from .dino import DINOLoss

__all__ = ["DINOLoss"]
