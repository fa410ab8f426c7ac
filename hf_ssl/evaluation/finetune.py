"""A short end-to-end fine-tune as a probe of a pretrained image encoder, against the same architecture at random init.

Frozen-feature probes understate encoders whose features are not linearly separable out of the box: MAE's are the
standard example (He et al. 2021, §4 "partial fine-tuning": MAE is weak under linear probing and strong once layers
are tuned). This probe is what a user would do with a published checkpoint: a plain ``transformers.Trainer`` on
``AutoModelForImageClassification.from_pretrained(checkpoint_dir)`` (for hf_ssl ViT checkpoints:
``ViTForImageClassification``, CLS token -> linear classifier), trained for a fixed, small number of steps on a labelled
subset, then top-1 accuracy on the held-out split. The baseline is ``AutoModelForImageClassification.from_config``
with the same config and recipe, so the difference is the pretraining alone.

Works for any hf_ssl image checkpoint whose encoder ``AutoModelForImageClassification`` knows (ViT, ResNet, timm).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from ..data.image_decoding import to_rgb
from .features import (
    as_pil_image,
    check_image_dataset,
    default_eval_transform,
    fixed_subset,
)
from .metrics import accuracy

logger = logging.getLogger(__name__)


@dataclass
class FineTuneProbeArguments:
    """Settings of the fine-tuning probe of the final evaluation (``finetune_steps: 0`` disables it)."""

    finetune_steps: int = field(
        default=0, metadata={"help": "Optimizer steps of the fine-tuning probe (0: no fine-tuning probe)."}
    )
    finetune_train_examples: int | None = field(
        default=10000, metadata={"help": "Labelled training images for the fine-tune (a fixed random subset)."}
    )
    finetune_eval_examples: int | None = field(
        default=None, metadata={"help": "Held-out images scored after the fine-tune (default: the whole eval split)."}
    )
    finetune_batch_size: int = field(default=128)
    finetune_learning_rate: float = field(default=1e-3)
    finetune_weight_decay: float = field(default=0.05)
    finetune_warmup_steps: float = field(default=0.1, metadata={"help": "Warm-up steps (a float < 1: a fraction)."})
    finetune_crop_scale: list[float] = field(
        default_factory=lambda: [0.35, 1.0], metadata={"help": "RandomResizedCrop area range of the training images."}
    )

    def __post_init__(self):
        if self.finetune_steps < 0:
            raise ValueError(f"finetune_steps must be >= 0 (0 disables the probe), got {self.finetune_steps}")
        if self.finetune_batch_size < 1 or self.finetune_learning_rate <= 0:
            raise ValueError("finetune_batch_size must be >= 1 and finetune_learning_rate > 0")
        low, high = self.finetune_crop_scale
        if not 0 < low <= high <= 1:
            raise ValueError(f"finetune_crop_scale must satisfy 0 < low <= high <= 1, got {self.finetune_crop_scale}")


def finetune_accuracy(
    model,
    train_dataset,
    test_dataset,
    arguments: FineTuneProbeArguments,
    *,
    image_size: int,
    mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
    std: Sequence[float] = IMAGENET_DEFAULT_STD,
    seed: int = 0,
    image_column: str = "image",
    label_column: str = "label",
) -> float:
    """Fine-tune ``model`` (an ``*ForImageClassification``, in place) with a plain ``Trainer``; top-1 on ``test``.

    Training images: RandomResizedCrop(``finetune_crop_scale``) + horizontal flip + normalisation; test images: the
    deterministic :func:`hf_ssl.evaluation.features.default_eval_transform`. AdamW, cosine schedule with warm-up, fp32.
    """
    from torchvision.transforms import v2
    from transformers import Trainer, TrainingArguments

    if arguments.finetune_steps < 1:
        raise ValueError("finetune_steps must be >= 1 to fine-tune; set --finetune_steps N")
    for dataset, name in ((train_dataset, "train_dataset"), (test_dataset, "test_dataset")):
        check_image_dataset(dataset, image_column, name)
        if label_column not in dataset.column_names:
            raise ValueError(f"{name} has no label column {label_column!r}: the fine-tuning probe needs labels")
    train_transform = v2.Compose(
        [
            to_rgb, v2.RGB(), v2.ToImage(),
            v2.RandomResizedCrop(image_size, scale=tuple(arguments.finetune_crop_scale), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std)),
        ]
    )
    test_transform = default_eval_transform(image_size, mean, std)

    def with_transform(dataset, transform):
        def apply(batch):
            return {
                "pixel_values": [transform(as_pil_image(image)) for image in batch[image_column]],
                "labels": batch[label_column],
            }

        return dataset.select_columns([image_column, label_column]).with_transform(apply)

    with tempfile.TemporaryDirectory(prefix="hf_ssl_finetune_") as scratch:
        args = TrainingArguments(
            output_dir=scratch, max_steps=arguments.finetune_steps,
            per_device_train_batch_size=arguments.finetune_batch_size,
            per_device_eval_batch_size=max(256, arguments.finetune_batch_size),
            learning_rate=arguments.finetune_learning_rate, weight_decay=arguments.finetune_weight_decay,
            warmup_steps=arguments.finetune_warmup_steps, lr_scheduler_type="cosine", max_grad_norm=1.0,
            save_strategy="no", logging_strategy="no", report_to="none", seed=seed, data_seed=seed,
            remove_unused_columns=False, disable_tqdm=True,
        )
        trainer = Trainer(
            model=model, args=args, train_dataset=with_transform(train_dataset, train_transform),
        )
        trainer.train()
        predictions = trainer.predict(with_transform(test_dataset, test_transform))
    logits = predictions.predictions[0] if isinstance(predictions.predictions, tuple) else predictions.predictions
    return accuracy(torch.as_tensor(logits).argmax(dim=-1), torch.as_tensor(predictions.label_ids))


def compare_finetuning_with_random_init(
    checkpoint_dir: str,
    train_dataset,
    test_dataset,
    arguments: FineTuneProbeArguments,
    *,
    image_size: int,
    mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
    std: Sequence[float] = IMAGENET_DEFAULT_STD,
    seed: int = 0,
    image_column: str = "image",
    label_column: str = "label",
) -> dict[str, float]:
    """``{"pretrained": top-1, "random_init": top-1}`` after the same fine-tune of the checkpoint in
    ``checkpoint_dir`` (loaded with vanilla ``AutoModelForImageClassification.from_pretrained``) and of the same
    config at random init (``from_config`` under ``torch.manual_seed(seed)``)."""
    results = finetune_checkpoints(
        {"pretrained": checkpoint_dir}, train_dataset, test_dataset, arguments, image_size=image_size, mean=mean,
        std=std, seed=seed, image_column=image_column, label_column=label_column,
    )
    logger.info("fine-tuning probe (%d steps): %s", arguments.finetune_steps, results)
    return results


def finetune_checkpoints(
    checkpoints: dict[str, str],
    train_dataset,
    test_dataset,
    arguments: FineTuneProbeArguments,
    *,
    image_size: int,
    mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
    std: Sequence[float] = IMAGENET_DEFAULT_STD,
    seed: int = 0,
    image_column: str = "image",
    label_column: str = "label",
    random_init: bool = True,
) -> dict[str, float]:
    """Top-1 after the same fine-tune of each checkpoint folder (``{name: folder}``; a published run or one of its
    ``checkpoint-N`` folders) and, with ``random_init``, of the first checkpoint's config at random init
    (``"random_init"``). Every model starts under ``torch.manual_seed(seed)``, so the new classifier, the batch
    order and the augmentations are the same for all: the difference is the pretrained weights alone. Used for a
    curve of fine-tune accuracy against pretraining steps (``benchmarks/mae_quality.py curve``)."""
    from transformers import AutoConfig, AutoModelForImageClassification

    if not checkpoints:
        raise ValueError("finetune_checkpoints needs at least one checkpoint folder")
    train_dataset = fixed_subset(train_dataset, arguments.finetune_train_examples, seed, "finetune_train_examples")
    test_dataset = fixed_subset(test_dataset, arguments.finetune_eval_examples, seed, "finetune_eval_examples")
    label_feature = train_dataset.features.get(label_column)
    num_labels = getattr(label_feature, "num_classes", None) or int(max(train_dataset[label_column])) + 1
    common = dict(image_size=image_size, mean=mean, std=std, seed=seed, image_column=image_column,
                  label_column=label_column)
    results = {}
    for name, checkpoint_dir in checkpoints.items():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            pretrained = _quiet_from_pretrained(AutoModelForImageClassification, checkpoint_dir, num_labels=num_labels)
            results[name] = finetune_accuracy(pretrained, train_dataset, test_dataset, arguments, **common)
    if random_init:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            config = AutoConfig.from_pretrained(next(iter(checkpoints.values())), num_labels=num_labels)
            if hasattr(config, "ssl_config"):
                del config.ssl_config
            model = AutoModelForImageClassification.from_config(config)
            results["random_init"] = finetune_accuracy(model, train_dataset, test_dataset, arguments, **common)
    return results


def _quiet_from_pretrained(model_class, checkpoint_dir: str, **kwargs):
    """``from_pretrained`` without transformers' load report: an hf_ssl checkpoint always carries pretraining-only
    weights (heads, decoder, teacher) that the classifier ignores and lacks the new classifier, by design."""
    from transformers.utils import logging as transformers_logging

    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        return model_class.from_pretrained(checkpoint_dir, **kwargs)
    finally:
        transformers_logging.set_verbosity(verbosity)
