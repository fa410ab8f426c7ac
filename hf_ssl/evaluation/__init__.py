"""Evaluation protocols, one per file, each usable alone: a function on features or a model, and an evaluator (a
callable ``model -> {metric: value}``) that ``SSLTrainer(evaluators=[...])`` runs at every evaluation.

======================  ===================================================================================
``features``            frozen image features, the evaluation transform, helpers shared by the probes
``knn``                 weighted kNN top-1 (Wu et al. 2018)
``linear_probe``        linear probe top-1 on standardised frozen features
``comparison``          a checkpoint's probes against random init and raw pixels
``finetune``            a short end-to-end fine-tune with a plain ``Trainer``, against random init
``few_shot``            N-way K-shot episodes on frozen features (prototype, cosine, logistic regression)
``ood``                 out-of-distribution detection: kNN and Mahalanobis scores, AUROC and FPR@95
``sts``                 STS Spearman of sentence embeddings
``zero_shot``           zero-shot classification of an image-text model
``retrieval``           image <-> text recall@k
``masked_lm``           held-out masked-token accuracy / perplexity / pair accuracy
``audio_probe``         linear probes on mean-pooled audio features, and the MFCC baseline
``reconstruction``      MAE's reconstruction figure and held-out masked-pixel loss
``attention_maps``      the last layer's CLS attention per head on held-out images (DINO's figure)
======================  ===================================================================================
"""

from .attention_maps import (
    AttentionMapFigure,
    cls_attention_maps,
    save_attention_figure,
)
from .audio_probe import AudioLinearProbeEvaluator, mfcc_features
from .comparison import compare_with_random_init, evaluate_checkpoint, format_comparison
from .features import default_eval_transform, extract_features, raw_pixel_features
from .few_shot import (
    FewShotEvaluator,
    few_shot_evaluation,
    mean_confidence_interval,
    sample_episodes,
)
from .finetune import (
    FineTuneProbeArguments,
    compare_finetuning_with_random_init,
    finetune_accuracy,
    finetune_checkpoints,
)
from .knn import KNNEvaluator, knn_accuracy, knn_predict
from .linear_probe import LinearProbeEvaluator, linear_probe_accuracy
from .masked_lm import MaskedLMEvaluator
from .metrics import accuracy, classification_metrics
from .ood import knn_ood_scores, mahalanobis_ood_scores, ood_evaluation, ood_metrics
from .reconstruction import ReconstructionFigure
from .retrieval import RetrievalEvaluator, retrieval_recall
from .sts import STSEvaluator, sts_spearman
from .zero_shot import ZeroShotEvaluator, zero_shot_accuracy

__all__ = [
    "AttentionMapFigure",
    "AudioLinearProbeEvaluator",
    "FewShotEvaluator",
    "FineTuneProbeArguments",
    "KNNEvaluator",
    "LinearProbeEvaluator",
    "MaskedLMEvaluator",
    "ReconstructionFigure",
    "RetrievalEvaluator",
    "STSEvaluator",
    "ZeroShotEvaluator",
    "accuracy",
    "classification_metrics",
    "cls_attention_maps",
    "compare_finetuning_with_random_init",
    "compare_with_random_init",
    "default_eval_transform",
    "evaluate_checkpoint",
    "extract_features",
    "few_shot_evaluation",
    "finetune_accuracy",
    "finetune_checkpoints",
    "format_comparison",
    "knn_accuracy",
    "knn_ood_scores",
    "knn_predict",
    "linear_probe_accuracy",
    "mahalanobis_ood_scores",
    "mean_confidence_interval",
    "mfcc_features",
    "ood_evaluation",
    "ood_metrics",
    "raw_pixel_features",
    "retrieval_recall",
    "save_attention_figure",
    "sample_episodes",
    "sts_spearman",
    "zero_shot_accuracy",
]
