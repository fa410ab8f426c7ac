"""Training: the method-agnostic ``SSLTrainer``, its arguments, and the callbacks that carry per-step work."""

from .arguments import SSLTrainingArguments
from .callbacks import (
    EvaluatorCallback,
    SSLMethodCallback,
    TrainingTimeBudget,
    ViewEpochCallback,
)
from .semi_trainer import SemiSupervisedTrainer
from .trainer import SSLTrainer

__all__ = [
    "EvaluatorCallback",
    "SSLMethodCallback",
    "SSLTrainer",
    "SSLTrainingArguments",
    "SemiSupervisedTrainer",
    "TrainingTimeBudget",
    "ViewEpochCallback",
]
