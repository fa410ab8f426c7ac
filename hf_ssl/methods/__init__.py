"""Pretraining methods, one file each. Importing this package registers every method with ``AutoSSLModel``."""

from .base import METHOD_REGISTRY, AutoSSLModel, SSLMethodConfig, SSLPreTrainedModel, TrainingProgress
from .byol import BYOLConfig, BYOLForPreTraining, BYOLOutput
from .dino import DINOConfig, DINOForPreTraining, DINOOutput
from .simclr import SimCLRConfig, SimCLRForPreTraining, SimCLROutput
from .simsiam import SimSiamConfig, SimSiamForPreTraining, SimSiamOutput

__all__ = [
    "METHOD_REGISTRY",
    "AutoSSLModel",
    "BYOLConfig",
    "BYOLForPreTraining",
    "BYOLOutput",
    "DINOConfig",
    "DINOForPreTraining",
    "DINOOutput",
    "SSLMethodConfig",
    "SSLPreTrainedModel",
    "SimCLRConfig",
    "SimCLRForPreTraining",
    "SimCLROutput",
    "SimSiamConfig",
    "SimSiamForPreTraining",
    "SimSiamOutput",
    "TrainingProgress",
]
