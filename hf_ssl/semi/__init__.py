"""Semi-supervised methods over any transformers classifier (``AutoModelFor{Image,Sequence,Audio}Classification``).

One method per file, each the per-step objective on a labelled and an unlabelled batch
(:class:`~hf_ssl.semi.base.SemiSupervisedMethod`); :class:`hf_ssl.training.SemiSupervisedTrainer` calls it and never
asks which method it runs. Adding a method is one new file here.
"""

from .base import (
    SEMI_METHOD_REGISTRY,
    SemiSupervisedConfig,
    SemiSupervisedMethod,
    SemiSupervisedOutput,
)
from .distillation import Distillation, DistillationConfig
from .fixmatch import FixMatch, FixMatchConfig
from .mean_teacher import MeanTeacher, MeanTeacherConfig
from .mixmatch import MixMatch, MixMatchConfig
from .noisy_student import NoisyStudent, NoisyStudentConfig
from .pi_model import PiModel, PiModelConfig
from .pseudo_label import PseudoLabel, PseudoLabelConfig
from .supervised import SupervisedOnly, SupervisedOnlyConfig
from .temporal_ensembling import TemporalEnsembling, TemporalEnsemblingConfig
from .uda import UDA, UDAConfig
from .vat import VAT, VATConfig

__all__ = [
    "SEMI_METHOD_REGISTRY",
    "Distillation",
    "DistillationConfig",
    "FixMatch",
    "FixMatchConfig",
    "MeanTeacher",
    "MeanTeacherConfig",
    "MixMatch",
    "MixMatchConfig",
    "NoisyStudent",
    "NoisyStudentConfig",
    "PiModel",
    "PiModelConfig",
    "PseudoLabel",
    "PseudoLabelConfig",
    "SemiSupervisedConfig",
    "SemiSupervisedMethod",
    "SemiSupervisedOutput",
    "SupervisedOnly",
    "SupervisedOnlyConfig",
    "TemporalEnsembling",
    "TemporalEnsemblingConfig",
    "UDA",
    "UDAConfig",
    "VAT",
    "VATConfig",
]
