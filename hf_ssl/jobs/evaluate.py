"""``hf-ssl evaluate CHECKPOINT --task NAME``: one evaluation protocol of :mod:`hf_ssl.evaluation` on a checkpoint.

Each task is a dataclass of arguments (parsed by ``transformers.HfArgumentParser``, like the recipes' arguments: the
kNN flags are the recipes' ``--knn_k`` / ``--knn_temperature``) and a function ``(checkpoint, arguments) -> dict``
whose result is printed as JSON (or a string printed as is). Tasks:

- ``probe``: frozen-feature kNN and linear-probe top-1 of the encoder that plain ``transformers.AutoModel`` loads,
  on a labelled image dataset (optionally against random init and raw pixels);
- ``sts``: STS-benchmark Spearman of sentence embeddings (an hf_ssl model that embeds text, or any text encoder,
  pooled as a Sentence-BERT bi-encoder);
- ``zero-shot``: zero-shot top-1 of an image-text checkpoint with held-out prompt templates.

Other code adds tasks with :func:`register_evaluation_task`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from transformers import AutoConfig, AutoModel, AutoTokenizer
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from ..data.images import EVAL_FRACTION, ImageSplits, load_image_splits
from ..data.pairs import HELD_OUT_TEMPLATES, load_sts_benchmark
from ..evaluation.comparison import (
    compare_with_random_init,
    evaluate_checkpoint,
    format_comparison,
)
from ..evaluation.features import default_eval_transform
from ..evaluation.sts import sts_spearman
from ..evaluation.zero_shot import zero_shot_accuracy
from ..methods import METHOD_REGISTRY, AutoSSLModel, SentenceBertForPreTraining
from ..modules.text_encoder import resolve_text_checkpoint
from ..publishing.run_record import recorded_normalisation
from ..training.errors import DataclassArgumentParser
from .arguments import KNNArguments


@dataclass
class EvaluateArguments:
    """What to evaluate, and with which protocol."""

    checkpoint: str = field(
        metadata={"help": "Folder or Hub id of a checkpoint (an hf_ssl run's output_dir); also the first positional "
                  "argument. The sts task also takes any text encoder, or 'minilm' (the packaged all-MiniLM-L6-v2)."}
    )
    task: str = field(default="probe", metadata={"help": "The protocol (see the task list above)."})


@dataclass
class ImageDataArguments:
    """The labelled image data of the probe and zero-shot tasks."""

    dataset: str = field(
        default="embedded",
        metadata={"help": "'embedded', a Hub dataset id (resolved to a local copy through HF_SSL_DATA_DIR) or a folder "
                  "(CIFAR-10 zips, Fashion-MNIST IDX, imagefolder)."},
    )
    train_split: str = field(default="train", metadata={"help": "kNN memory / probe training split."})
    test_split: str = field(
        default="test",
        metadata={"help": "Split the accuracy is measured on. A dataset whose only split is train_split (a folder of "
                  "class subfolders) holds out eval_fraction of it instead: the images pretraining probed on."},
    )
    eval_fraction: float = field(
        default=EVAL_FRACTION, metadata={"help": "Share of each class held out when there is no test_split."}
    )
    image_size: int | None = field(default=None, metadata={"help": "Default: the encoder config's image_size."})
    check_image_files: bool = field(
        default=True, metadata={"help": "First check that every image file of a local folder decodes."}
    )
    skip_bad_files: bool = field(
        default=False, metadata={"help": "Leave out the files the check finds unreadable (each one logged)."}
    )

    def load(self, max_train_examples: int | None = None) -> ImageSplits:
        """The train split and the measured images (``test_split``, or the hold-out pretraining used)."""
        splits = load_image_splits(
            self.dataset, self.train_split, self.test_split, eval_fraction=self.eval_fraction,
            max_train_examples=max_train_examples, check_files=self.check_image_files,
            skip_bad_files=self.skip_bad_files,
        )
        if splits.eval is None:
            raise ValueError(
                f"{self.dataset} has no labelled images to measure on (no {self.test_split!r} split, and no class "
                "labels to hold out from); use a labelled dataset (class subfolders) or name a split: --test_split"
            )
        return splits


@dataclass
class ProbeArguments(KNNArguments):
    """The probe task: frozen-feature kNN and linear-probe top-1."""

    probes: list[str] = field(default_factory=lambda: ["knn", "linear"], metadata={"help": "knn and/or linear."})
    max_train_examples: int | None = field(default=None, metadata={"help": "Cap the train split (default: all)."})
    compare_random_init: bool = field(
        default=False, metadata={"help": "Also probe the same encoder at random init, and raw pixels."}
    )


@dataclass
class STSArguments:
    """The sts task: Spearman of the cosine similarity of sentence embeddings against gold scores."""

    sts_dataset: str = field(
        default="sentence-transformers/stsb",
        metadata={"help": "STS-B: its Hub id (resolved through HF_SSL_DATA_DIR) or a folder with sts-*.csv."},
    )
    sts_splits: list[str] = field(default_factory=lambda: ["dev", "test"], metadata={"help": "Splits to score."})
    sts_max_pairs: int | None = field(default=None, metadata={"help": "Score the first N pairs of each split only."})
    pooling: str = field(
        default="mean", metadata={"help": "mean, cls or max: pooling of a plain text encoder (hf_ssl runs keep theirs)."}
    )


@dataclass
class ZeroShotArguments:
    """The zero-shot task's prompts."""

    zero_shot_templates: list[str] | None = field(
        default=None,
        metadata={"help": "Prompt templates with one {} for the class name (default: the templates hf_ssl's CLIP "
                  "recipes hold out from training)."},
    )


@dataclass(frozen=True)
class EvaluationTask:
    """One ``--task``: its help line, its argument dataclasses and ``run(checkpoint, arguments) -> dict | str``, where
    ``arguments`` maps each dataclass to its parsed instance."""

    help: str
    argument_classes: tuple[type, ...]
    run: Callable[[str, dict[type, Any]], dict | str]


#: Evaluation tasks by name; other modules add theirs with :func:`register_evaluation_task`.
EVALUATION_TASKS: dict[str, EvaluationTask] = {}


def register_evaluation_task(name: str, help: str, argument_classes: tuple[type, ...], run: Callable) -> None:
    """Make ``hf-ssl evaluate --task NAME`` available, with the flags of ``argument_classes`` (dataclasses)."""
    EVALUATION_TASKS[name] = EvaluationTask(help, tuple(argument_classes), run)


def main(argv: list[str]) -> int:
    """``hf-ssl evaluate``: parse ``[CHECKPOINT] [--flag value ...]``, run the task, print its result."""
    if argv and not argv[0].startswith("-"):
        argv = ["--checkpoint", argv[0], *argv[1:]]
    classes = list(dict.fromkeys(cls for task in EVALUATION_TASKS.values() for cls in task.argument_classes))
    parser = DataclassArgumentParser(  # errors raise UsageError: one line in hf-ssl
        [EvaluateArguments, *classes], prog="hf-ssl evaluate",
        description="Evaluate a checkpoint on one task. Tasks: "
        + "; ".join(f"{name}: {task.help}" for name, task in EVALUATION_TASKS.items()) + ".",
    )
    common, *parsed = parser.parse_args_into_dataclasses(args=argv)
    if common.task not in EVALUATION_TASKS:
        parser.error(f"unknown task {common.task!r}; choose one of {', '.join(EVALUATION_TASKS)}")
    task = EVALUATION_TASKS[common.task]
    result = task.run(common.checkpoint, {type(arguments): arguments for arguments in parsed})
    print(result if isinstance(result, str) else json.dumps(result, indent=2))
    return 0


# --------------------------------------------------------------------------------------------------------------------
def _run_probes(checkpoint: str, arguments: dict[type, Any]) -> dict | str:
    data, probe = arguments[ImageDataArguments], arguments[ProbeArguments]
    splits = data.load()
    train, test = splits.train, splits.eval
    encoder = AutoModel.from_pretrained(checkpoint)
    size = data.image_size or getattr(encoder.config, "image_size", 224)
    transform = default_eval_transform(size, *_normalisation(checkpoint))
    common = dict(probes=tuple(probe.probes), k=probe.knn_k, temperature=probe.knn_temperature, transform=transform,
                  max_train_examples=probe.max_train_examples)
    if probe.compare_random_init:
        return format_comparison(compare_with_random_init(encoder, train, test, **common))
    return evaluate_checkpoint(encoder, train, test, **common)


def _run_sts(checkpoint: str, arguments: dict[type, Any]) -> dict:
    sts = arguments[STSArguments]
    path = resolve_text_checkpoint(checkpoint)
    if _embeds_text(path):  # an hf_ssl checkpoint that embeds text itself (Sentence-BERT, CLIP-style)
        model = AutoSSLModel.from_pretrained(path)
    else:  # any text encoder, as a Sentence-BERT bi-encoder over it
        model = SentenceBertForPreTraining.from_text_encoder(path, pooling=sts.pooling)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    results = {}
    for split in sts.sts_splits:
        pairs = load_sts_benchmark(sts.sts_dataset, split, flag="--sts_dataset")
        if sts.sts_max_pairs:
            pairs = pairs.select(range(min(sts.sts_max_pairs, len(pairs))))
        results[f"sts_{split}_spearman"] = sts_spearman(model, tokenizer, pairs)
    return results


def _run_zero_shot(checkpoint: str, arguments: dict[type, Any]) -> dict:
    data, prompts = arguments[ImageDataArguments], arguments[ZeroShotArguments]
    model = AutoSSLModel.from_pretrained(checkpoint).eval()
    if not hasattr(model, "embed_image"):
        raise ValueError(f"{checkpoint} is not an image-text (CLIP-style) checkpoint; zero-shot needs one")
    test = data.load(max_train_examples=1).eval  # the train split only decides the hold-out, if there is one
    size = data.image_size or model.config.vision_config.image_size
    transform = default_eval_transform(size, *_normalisation(checkpoint))
    templates = prompts.zero_shot_templates or list(HELD_OUT_TEMPLATES)
    names = test.features["label"].names
    accuracy = zero_shot_accuracy(model, AutoTokenizer.from_pretrained(checkpoint), test, names, templates, transform)
    return {"zero_shot_top1": accuracy, "templates": templates}


def _embeds_text(path: str) -> bool:
    """Whether ``path`` holds an hf_ssl checkpoint whose method embeds text (has ``embed_text``)."""
    method = (getattr(AutoConfig.from_pretrained(path), "ssl_config", None) or {}).get("method")
    return method in METHOD_REGISTRY and hasattr(METHOD_REGISTRY[method], "embed_text")


def _normalisation(checkpoint: str) -> tuple[list[float], list[float]]:
    """The mean/std the run trained with (from its run record), else ImageNet's."""
    return recorded_normalisation(checkpoint) or (list(IMAGENET_DEFAULT_MEAN), list(IMAGENET_DEFAULT_STD))


register_evaluation_task(
    "probe", "frozen-feature kNN and linear-probe accuracy on a labelled image dataset",
    (ImageDataArguments, ProbeArguments), _run_probes,
)
register_evaluation_task(
    "sts", "Spearman of cosine similarity on STS-benchmark (sentence embeddings)", (STSArguments,), _run_sts
)
register_evaluation_task(
    "zero-shot", "zero-shot top-1 of an image-text checkpoint on a labelled image dataset (--dataset, --test_split)",
    (ImageDataArguments, ZeroShotArguments), _run_zero_shot,
)

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
