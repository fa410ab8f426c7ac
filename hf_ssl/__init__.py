"""hf_ssl: self-supervised pretraining as transformers models and Trainers."""

from .methods import (
    AutoSSLModel,
    DINOConfig,
    DINOForPreTraining,
    SimCLRConfig,
    SimCLRForPreTraining,
    SSLPreTrainedModel,
    TrainingProgress,
)

__version__ = "0.1.0"

__all__ = [
    "AutoSSLModel",
    "DINOConfig",
    "DINOForPreTraining",
    "SSLPreTrainedModel",
    "SimCLRConfig",
    "SimCLRForPreTraining",
    "TrainingProgress",
]
