"""Pretraining jobs, one per kind of data. Importing this package registers every job in ``JOB_REGISTRY``."""

from .base import JOB_REGISTRY, FinalEvaluation, JobParts, PretrainingJob, eval_results_from_json
from .image import EMBEDDED_DEFAULTS, DataArguments, EncoderArguments, ImagePretrainingJob, build_image_model

__all__ = [
    "EMBEDDED_DEFAULTS",
    "JOB_REGISTRY",
    "DataArguments",
    "EncoderArguments",
    "FinalEvaluation",
    "ImagePretrainingJob",
    "JobParts",
    "PretrainingJob",
    "build_image_model",
    "eval_results_from_json",
]
