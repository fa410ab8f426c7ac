"""Pretraining methods, one file each. Importing this package registers every method with ``AutoSSLModel``."""

from .base import METHOD_REGISTRY, AutoSSLModel, SSLMethodConfig, SSLPreTrainedModel, TrainingProgress
from .dino import DINOConfig, DINOForPreTraining, DINOOutput
from .simclr import SimCLRConfig, SimCLRForPreTraining, SimCLROutput

__all__ = [
    "METHOD_REGISTRY",
    "AutoSSLModel",
    "DINOConfig",
    "DINOForPreTraining",
    "DINOOutput",
    "SSLMethodConfig",
    "SSLPreTrainedModel",
    "SimCLRConfig",
    "SimCLRForPreTraining",
    "SimCLROutput",
    "TrainingProgress",
]
