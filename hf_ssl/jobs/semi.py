"""What the semi-supervised fine-tuning jobs share (``recipes/finetune.py`` / ``hf-ssl finetune``): the labelled and
unlabelled split of a labelled dataset, the classifier's start (a preset at random init, an hf_ssl pretraining
output, or any checkpoint), and the final evaluation.

A job per modality (:mod:`hf_ssl.jobs.semi_image`, :mod:`hf_ssl.jobs.semi_text`, :mod:`hf_ssl.jobs.semi_audio`)
supplies the classifier class, its processor and the weak / strong views; the runner trains with
:class:`hf_ssl.training.SemiSupervisedTrainer` and publishes the method's evaluation model (EMA / teacher) as an
ordinary checkpoint of that classifier, with ``id2label`` and its processor.

The labelled examples are ``labels_per_class`` per class (or ``num_labelled`` in all), drawn with ``labelled_seed``
from the train split; the unlabelled set is the rest of that split (their labels are kept aside for diagnostics only,
as ``audit_label``, and never trained on).
"""

from __future__ import annotations

import abc
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from huggingface_hub import EvalResult

from ..data.streaming import STREAMED_EVAL_EXAMPLES, materialize
from ..data.streams import PlainViewCollator
from ..evaluation.classification import classifier_accuracy
from ..publishing.datasets import model_index_dataset
from ..semi.base import SEMI_METHOD_REGISTRY
from ..training.errors import UsageError
from ..training.semi_trainer import SemiSupervisedTrainer
from .arguments import ModelArguments
from .base import FinalEvaluation, JobParts, PretrainingJob

logger = logging.getLogger(__name__)


@dataclass
class ClassifierArguments(ModelArguments):
    """:class:`~hf_ssl.jobs.arguments.ModelArguments` of the classifier: ``method`` is the semi-supervised method
    (fixmatch, uda, mixmatch, vat, mean_teacher, pi_model, temporal_ensembling, pseudo_label, distillation,
    noisy_student), ``encoder`` the start: an hf_ssl pretraining output, any
    checkpoint of the modality, or a preset at random init."""

    method: str = field(default="fixmatch", metadata={"help": "Semi-supervised method (`hf-ssl list` shows them all)."})


@dataclass
class SemiDataArguments:
    """Which labelled dataset, how many labels, and where the accuracy is measured."""

    modality: str = field(default="image", metadata={"help": "image, text or audio: picks the job (semi_<modality>)."})
    dataset: str = field(
        default="uoft-cs/cifar10",
        metadata={"help": "A labelled dataset: Hub id (a local copy through HF_SSL_DATA_DIR) or a folder."},
    )
    train_split: str = field(default="train", metadata={"help": "Split of the labelled and the unlabelled examples."})
    eval_split: str | None = field(default="test", metadata={"help": "Labelled split the accuracy is measured on."})
    labels_per_class: int | None = field(
        default=4, metadata={"help": "Labelled examples per class (CIFAR-10: 4, 25, 400 = 40, 250, 4,000 labels)."}
    )
    num_labelled: int | None = field(
        default=None, metadata={"help": "Labelled examples in all, class-balanced as far as possible (instead of "
                                "labels_per_class)."}
    )
    labelled_seed: int = field(default=0, metadata={"help": "Seed of which examples are labelled."})
    max_unlabelled_examples: int | None = field(default=None, metadata={"help": "Cap the unlabelled set."})
    max_eval_examples: int | None = field(default=None, metadata={"help": "Score a fixed random subset only."})
    label_column: str = field(default="label")
    streaming: bool = field(
        default=False,
        metadata={"help": "Stream the train split as the unlabelled data, never whole (needs --max_steps; "
                  "max_unlabelled_examples does not apply): the labelled examples are drawn from its first "
                  "labelled_pool_examples and stay in the stream, as in FixMatch's reference code; the accuracy is "
                  "measured on the first max_eval_examples (default 10,000) of the eval split; text views fit their "
                  "TF-IDF table on the labelled pool."},
    )
    labelled_pool_examples: int = field(
        default=STREAMED_EVAL_EXAMPLES,
        metadata={"help": "With --streaming: the first examples of the train stream the labelled ones are drawn from."},
    )
    audit_unlabelled_labels: bool = field(
        default=True,
        metadata={"help": "Log pseudo-label accuracy against the unlabelled examples' hidden labels (never trained "
                  "on); false for data without them."},
    )


def labelled_indices(labels: np.ndarray, num_classes: int, labels_per_class: int | None, num_labelled: int | None,
                     seed: int) -> np.ndarray:
    """Indices of the labelled examples: ``labels_per_class`` of each class, or ``num_labelled`` spread over the
    classes as evenly as their sizes allow, drawn with ``seed``; sorted."""
    rng = np.random.default_rng(seed)
    by_class = [rng.permutation(np.flatnonzero(labels == c)) for c in range(num_classes)]
    if num_labelled is None:
        if labels_per_class is None or labels_per_class < 1:
            raise ValueError("set labels_per_class (>= 1) or num_labelled")
        short = [c for c, members in enumerate(by_class) if len(members) < labels_per_class]
        if short:
            raise ValueError(f"classes {short} have fewer than {labels_per_class} examples in the train split; lower "
                             "--labels_per_class")
        return np.sort(np.concatenate([members[:labels_per_class] for members in by_class]))
    if not 1 <= num_labelled < len(labels):
        raise ValueError(f"num_labelled must be in [1, {len(labels)}), got {num_labelled}")
    chosen, round_ = [], 0
    while len(chosen) < num_labelled:  # round-robin over the classes
        for members in by_class:
            if round_ < len(members) and len(chosen) < num_labelled:
                chosen.append(members[round_])
        round_ += 1
    return np.sort(np.asarray(chosen))


class SemiSupervisedJob(PretrainingJob, abc.ABC):
    """Base of the semi-supervised jobs. Subclasses set ``name``, ``argument_classes`` (``ClassifierArguments``,
    ``SemiDataArguments``, then their own) and implement :meth:`load_split`, :meth:`build_classifier`,
    :meth:`views` and :meth:`save_extras`."""

    #: The Hub task of the published classifier.
    task: str = ""
    published_as = ("AutoModelFor...Classification", "classifier")
    record_sections = ("encoder", "data", "views")

    @abc.abstractmethod
    def load_split(self, split: str):
        """One split of the dataset, with the views' input columns and an integer label column."""

    def load_stream(self, split: str):
        """One split as a ``datasets.IterableDataset`` (``--streaming``), with the columns of :meth:`load_split`."""
        raise UsageError(f"the {self.name} job does not stream its data: drop --streaming")

    @abc.abstractmethod
    def build_classifier(self, class_names: list[str]):
        """The classifier at its start, with ``num_labels`` / ``id2label`` / ``label2id`` from ``class_names``."""

    @abc.abstractmethod
    def views(self, unlabelled):
        """The weak / strong / plain views (``hf_ssl.views.*WeakStrongViews``); ``unlabelled`` for those that fit on it
        (text's TF-IDF table)."""

    def prepare(self) -> JobParts:
        model_args, data_args = self.arguments[:2]
        stream = self.load_stream(data_args.train_split) if data_args.streaming else None
        train = (materialize(stream, data_args.labelled_pool_examples) if stream is not None
                 else self.load_split(data_args.train_split))
        class_names = _class_names(train, self.label_column)
        labels = np.asarray(train[self.label_column])
        chosen = labelled_indices(labels, len(class_names), data_args.labels_per_class, data_args.num_labelled,
                                  data_args.labelled_seed)
        rest = np.setdiff1d(np.arange(len(train)), chosen)
        if data_args.max_unlabelled_examples is not None and len(rest) > data_args.max_unlabelled_examples:
            rest = np.sort(np.random.default_rng(data_args.labelled_seed + 1).choice(
                rest, data_args.max_unlabelled_examples, replace=False))
        self.labelled, self.unlabelled = train.select(chosen.tolist()), train.select(rest.tolist())
        if stream is not None:  # the whole train stream, the labelled examples included
            self.unlabelled = stream
        self.eval_dataset = None
        if data_args.eval_split and stream is not None:
            self.eval_dataset = materialize(self.load_stream(data_args.eval_split),
                                            data_args.max_eval_examples or STREAMED_EVAL_EXAMPLES)
        elif data_args.eval_split:
            self.eval_dataset = self.load_split(data_args.eval_split)
            if data_args.max_eval_examples is not None and len(self.eval_dataset) > data_args.max_eval_examples:
                picked = np.random.default_rng(0).choice(len(self.eval_dataset), data_args.max_eval_examples,
                                                         replace=False)
                self.eval_dataset = self.eval_dataset.select(np.sort(picked).tolist())
        logger.info("%d labelled, %s unlabelled, %s evaluation examples", len(self.labelled), _count(self.unlabelled),
                    len(self.eval_dataset) if self.eval_dataset is not None else "no")
        self.class_names = class_names
        model = self.build_classifier(class_names)
        self.semi_views = self.views(self.unlabelled if stream is None else train)  # a stream: fit on its first ones
        method = SEMI_METHOD_REGISTRY[model_args.method](self.method_config)
        audit = self.label_column if data_args.audit_unlabelled_labels else None
        return JobParts(
            model=model, train_dataset=self.labelled, eval_dataset=self.eval_dataset,
            trainer_class=SemiSupervisedTrainer,
            trainer_kwargs=dict(method=method, unlabelled_dataset=self.unlabelled, views=self.semi_views,
                                label_column=self.label_column, audit_label_column=audit),
        )

    @property
    def label_column(self) -> str:
        """The label column of the loaded splits (the image loader names it ``label`` whatever the source)."""
        return self.arguments[1].label_column

    def final_evaluation(self, model) -> FinalEvaluation | None:
        """Top-1 accuracy of the published classifier (the method's evaluation model) on the evaluation split."""
        _, data_args = self.arguments[:2]
        if self.eval_dataset is None:
            return None
        collate = PlainViewCollator(self.semi_views, self.label_column)
        accuracy = classifier_accuracy(model, self.eval_dataset, collate, self.training_args.per_device_eval_batch_size)
        labels = len(self.labelled)
        result = EvalResult(
            task_type=self.task, **model_index_dataset([data_args.dataset]), dataset_split=data_args.eval_split,
            metric_type="accuracy", metric_value=accuracy,
            metric_name=f"top-1 accuracy ({labels} labels, {_count(self.unlabelled)} unlabelled examples)",
        )
        table = (f"Top-1 accuracy on {data_args.dataset} / {data_args.eval_split} ({len(self.eval_dataset)} examples), "
                 f"{labels} labelled and {_count(self.unlabelled)} unlabelled training examples: {accuracy:.4f}")
        return FinalEvaluation(probes={"published": {"accuracy": accuracy}}, eval_results=[result], table=table)

    def run_record(self) -> dict[str, Any]:
        record = super().run_record()
        record["data"]["num_labelled_examples"] = len(getattr(self, "labelled", []))
        record["data"]["num_unlabelled_examples"] = _count(getattr(self, "unlabelled", []))
        record["data"]["class_names"] = getattr(self, "class_names", None)
        return record


def _count(dataset) -> int | str:
    """The number of examples, or ``"streamed"`` for a stream (no length)."""
    return len(dataset) if hasattr(dataset, "__len__") else "streamed"


def _class_names(dataset, label_column: str) -> list[str]:
    if label_column not in dataset.column_names:
        raise ValueError(f"the dataset has no label column {label_column!r} (columns: {dataset.column_names}); "
                         "name it with --label_column")
    feature = dataset.features[label_column]
    names = getattr(feature, "names", None)
    if names:
        return list(names)
    return [str(value) for value in range(int(max(dataset[label_column])) + 1)]
