"""The pretraining job behind ``recipes/pretrain.py`` and ``hf-ssl pretrain``.

Arguments come from a YAML file and/or command-line flags (flags after the file override it), parsed by
``transformers.HfArgumentParser`` into: :class:`EncoderArguments`, :class:`DataArguments`, the views
(:class:`hf_ssl.views.MultiCropConfig`), the method's config (e.g. :class:`hf_ssl.DINOConfig`) and
:class:`hf_ssl.trainer.SSLTrainingArguments`. With no arguments at all it runs the embedded default: a short DINO
run on the Fashion-MNIST subset shipped inside the package (flags without a config file override that default).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from transformers import HfArgumentParser, set_seed
from transformers.utils import logging

from .backbones import check_patch_size, encoder_config
from .methods import METHOD_REGISTRY, AutoSSLModel
from .trainer import SSLTrainer, SSLTrainingArguments
from .views import MultiCropConfig, MultiCropTransform, apply_views

logger = logging.get_logger(__name__)

EMBEDDED_DEFAULTS: dict = {
    # About 4 minutes of training on 2 CPU cores. Small-budget DINO settings found on this data (README, "Choosing
    # small-budget defaults"): BatchNorm in the head MLP, a fast teacher (momentum 0.95 -> 1), no frozen prototypes.
    "method": "dino",
    "dataset": "embedded",
    "encoder": "vit-tiny",
    "encoder_config_overrides": {"num_hidden_layers": 4, "hidden_size": 128, "num_attention_heads": 4,
                                 "intermediate_size": 512},
    "patch_size": 7,
    "global_crop_size": 28,
    "local_crop_size": 14,
    "num_local_crops": 4,
    "global_crop_scale": [0.5, 1.0],
    "local_crop_scale": [0.2, 0.5],
    "out_dim": 1024,
    "hidden_dim": 512,
    "bottleneck_dim": 128,
    "use_batch_norm_in_head": True,
    "momentum_teacher": 0.95,
    "freeze_last_layer_epochs": 0,
    "output_dir": "outputs/dino-vit-tiny-embedded",
    "per_device_train_batch_size": 128,
    "max_steps": 250,
    "learning_rate": 5e-4,
    "weight_decay": 0.04,
    "warmup_steps": 25,
    "lr_scheduler_type": "cosine",
    "max_grad_norm": 3.0,
    "logging_steps": 25,
    "save_steps": 125,
    "save_total_limit": 2,
    "report_to": "none",
}


@dataclass
class EncoderArguments:
    """Which encoder to pretrain."""

    method: str = field(default="dino", metadata={"help": f"Pretraining method: {sorted(METHOD_REGISTRY)}."})
    encoder: str = field(
        default="vit-tiny",
        metadata={"help": "Preset (vit-tiny, vit-small, vit-base), 'timm:<arch>', or a folder/Hub id with a config."},
    )
    patch_size: int = field(default=4, metadata={"help": "Patch size for the ViT presets."})
    encoder_config_overrides: str | None = field(
        default=None, metadata={"help": 'JSON dict of encoder config fields, e.g. \'{"num_hidden_layers": 6}\'.'}
    )
    init_from: str | None = field(
        default=None,
        metadata={
            "help": "An hf_ssl output folder to continue pretraining from: weights, centre/queues and the method "
            "settings stored in it (method flags are then ignored). Optimizer and schedules start anew; to resume a "
            "run exactly, use --resume_from_checkpoint <output_dir>/checkpoint-N."
        },
    )


@dataclass
class DataArguments:
    """Which images to pretrain on and how to monitor the encoder."""

    dataset: str = field(
        default="embedded",
        metadata={"help": "'embedded', a folder (CIFAR-10 zips, Fashion-MNIST IDX, imagefolder) or a Hub dataset."},
    )
    train_split: str = field(default="train")
    eval_split: str | None = field(default="test", metadata={"help": "Held-out split for kNN; empty to disable."})
    image_column: str | None = field(default=None)
    label_column: str | None = field(default=None)
    max_train_examples: int | None = field(default=None)
    max_eval_examples: int | None = field(default=None)
    knn_k: int = field(default=200, metadata={"help": "Neighbours of the kNN monitor (Wu et al. 2018; 200)."})
    knn_temperature: float = field(default=0.1)
    knn_max_train_examples: int | None = field(
        default=None, metadata={"help": "Size of the kNN memory bank (default: the whole train split)."}
    )
    final_comparison: bool = field(
        default=True, metadata={"help": "After training, probe the encoder vs random init vs raw pixels."}
    )
    final_probes: list[str] = field(
        default_factory=lambda: ["knn", "linear"], metadata={"help": "Probes of the final comparison."}
    )


def parse_arguments(argv: list[str]) -> tuple:
    """``[config.yaml] [--flag value ...]`` -> (encoder_args, data_args, views, method_config, training_args)."""
    config_values: dict = {}
    if argv and argv[0].endswith((".yaml", ".yml")):
        path = Path(argv[0])
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist (configs live in recipes/configs/)")
        config_values = yaml.safe_load(path.read_text()) or {}
        argv = argv[1:]
    else:  # no config file: flags override the embedded default
        config_values = dict(EMBEDDED_DEFAULTS)
    method = _last_value(argv, "--method") or config_values.get("method", "dino")
    if method not in METHOD_REGISTRY:
        raise ValueError(f"unknown method {method!r}; available: {sorted(METHOD_REGISTRY)}")
    method_config_class = METHOD_REGISTRY[method].method_config_class
    parser = HfArgumentParser(
        (EncoderArguments, DataArguments, MultiCropConfig, method_config_class, SSLTrainingArguments)
    )
    config_values.setdefault("output_dir", f"outputs/{method}")
    return parser.parse_args_into_dataclasses(args=_to_argv(config_values) + list(argv))


def _to_argv(values: dict) -> list[str]:
    argv: list[str] = []
    for key, value in values.items():
        if value is None:
            continue
        argv.append(f"--{key}")
        if isinstance(value, (list, tuple)):
            argv.extend(str(item) for item in value)
        elif isinstance(value, dict):
            argv.append(json.dumps(value))
        elif isinstance(value, bool):
            argv.append(str(value).lower())
        else:
            argv.append(str(value))
    return argv


def _last_value(argv: list[str], flag: str) -> str | None:
    value = None
    for position, item in enumerate(argv):
        if item == flag and position + 1 < len(argv):
            value = argv[position + 1]
        elif item.startswith(flag + "="):
            value = item.split("=", 1)[1]
    return value


def build_model(encoder_args: EncoderArguments, views: MultiCropConfig, method_config):
    """A new pretraining model for the chosen encoder and method, or the one stored at ``init_from``."""
    if encoder_args.init_from:
        model = AutoSSLModel.from_pretrained(encoder_args.init_from)
        check_patch_size(model.config, views.global_crop_size, views.local_crop_size)
        return model
    overrides = json.loads(encoder_args.encoder_config_overrides) if encoder_args.encoder_config_overrides else {}
    if not isinstance(overrides, dict):
        raise ValueError("--encoder_config_overrides must be a JSON object, e.g. '{\"num_hidden_layers\": 6}'")
    config = encoder_config(encoder_args.encoder, views.global_crop_size, encoder_args.patch_size, overrides)
    check_patch_size(config, views.global_crop_size, views.local_crop_size)
    model_class = METHOD_REGISTRY[encoder_args.method]
    return model_class.from_encoder_config(config, **_fields(method_config))


def _fields(config) -> dict:
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}


def run(argv: list[str] | None = None, callbacks: list | None = None) -> dict:
    """Parse arguments, pretrain, save the final model at the root of ``output_dir``, and evaluate it.

    ``callbacks``: extra ``TrainerCallback``s (benchmarks use one that stops at a wall-clock budget).
    """
    from .data import load_image_dataset
    from .evaluation import KNNEvaluator, compare_with_random_init, default_eval_transform

    argv = sys.argv[1:] if argv is None else argv
    encoder_args, data_args, views, method_config, training_args = parse_arguments(argv)
    set_seed(training_args.seed)
    started = time.time()

    def load(split: str | None, max_examples: int | None):
        return load_image_dataset(
            data_args.dataset, split, image_column=data_args.image_column, label_column=data_args.label_column,
            max_examples=max_examples, seed=training_args.seed,
        )

    train_raw = load(data_args.train_split, data_args.max_train_examples)
    eval_raw = load(data_args.eval_split, data_args.max_eval_examples) if data_args.eval_split else None
    transform = MultiCropTransform(views, image_column="image", seed=training_args.seed)
    train_dataset = apply_views(train_raw, transform)
    model = build_model(encoder_args, views, method_config)

    eval_transform = default_eval_transform(views.global_crop_size, views.mean, views.std)
    evaluators = []
    has_labels = eval_raw is not None and "label" in train_raw.column_names and "label" in eval_raw.column_names
    if has_labels:
        evaluators.append(
            KNNEvaluator(
                train_raw, eval_raw, k=data_args.knn_k, temperature=data_args.knn_temperature,
                transform=eval_transform, max_train_examples=data_args.knn_max_train_examples,
                seed=training_args.seed,
            )
        )
    trainer = SSLTrainer(
        model=model, args=training_args, train_dataset=train_dataset, evaluators=evaluators, callbacks=callbacks
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)
    _write_run_record(training_args.output_dir, encoder_args, data_args, views, method_config, training_args,
                      time.time() - started)

    results: dict = {}
    if has_labels and data_args.final_comparison and trainer.is_world_process_zero():
        results = compare_with_random_init(
            model.encoder, train_raw, eval_raw, k=data_args.knn_k, temperature=data_args.knn_temperature,
            transform=eval_transform, max_train_examples=data_args.knn_max_train_examples, seed=training_args.seed,
            probes=tuple(data_args.final_probes),
        )
        _print_comparison(results, data_args, trainer.state.global_step)
        with open(os.path.join(training_args.output_dir, "eval_results.json"), "w") as handle:
            json.dump({"pretraining_steps": trainer.state.global_step, "probes": results}, handle, indent=2)
    return results


def _write_run_record(output_dir, encoder_args, data_args, views, method_config, training_args, seconds) -> None:
    """Everything a model card needs about the run, next to the weights (no tokens: hub_token is dropped)."""
    if not training_args.should_save:
        return
    training = {k: v for k, v in training_args.to_dict().items() if "token" not in k}
    record = {
        "encoder": _fields(encoder_args),
        "data": _fields(data_args),
        "views": _fields(views),
        "method": method_config.to_dict(),
        "training": training,
        "world_size": training_args.world_size,
        "wall_time_seconds": round(seconds, 1),
    }
    with open(os.path.join(output_dir, "hf_ssl_run.json"), "w") as handle:
        json.dump(record, handle, indent=2, default=str)


def _print_comparison(results: dict, data_args: DataArguments, steps: int) -> None:
    from .evaluation import format_comparison

    print(
        f"\nFrozen-feature probes on {data_args.dataset} / {data_args.eval_split} after {steps} pretraining steps "
        f"(kNN: k={data_args.knn_k}, T={data_args.knn_temperature}, cosine, weighted votes):"
    )
    print(format_comparison(results), flush=True)
