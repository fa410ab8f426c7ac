"""What a pretraining job is: the modality-specific half of ``recipes/pretrain.py`` / ``hf-ssl pretrain``.

:func:`hf_ssl.jobs.runner.run` is modality-agnostic: it parses arguments, asks the job for the model, data, collator
and evaluators, trains with :class:`hf_ssl.training.trainer.SSLTrainer`, saves, and writes the run record and the final
evaluation. A job supplies everything that depends on the kind of data:

- ``argument_classes``: the dataclasses parsed from the YAML config and flags besides the method's config and
  :class:`~hf_ssl.training.arguments.SSLTrainingArguments`; the first is :class:`~hf_ssl.jobs.arguments.ModelArguments`
  or a subclass of it (method, encoder, its overrides, ``init_from``);
- ``default_encoder``: the encoder used when ``--encoder`` is not given;
- :meth:`prepare`: model, train dataset, collator, evaluators (and optionally an eval dataset for ``eval_loss``);
- :meth:`save_extras`: files beside the weights (tokenizer, image processor, sentence-transformers modules, figures);
- :meth:`final_evaluation`: after training, the probes against baselines, as :class:`FinalEvaluation`.

Each method names its job with ``SSLPreTrainedModel.pretraining_job`` (``"image"`` for DINO, SimCLR, ...), and a job
registers itself in :data:`JOB_REGISTRY` by subclassing with ``name = "..."``.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from huggingface_hub import EvalResult

from ..publishing.run_record import eval_result_to_dict

JOB_REGISTRY: dict[str, type[PretrainingJob]] = {}


@dataclass
class JobParts:
    """What :meth:`PretrainingJob.prepare` hands to the trainer.

    data_collator: ``None`` means :func:`hf_ssl.data.collators.stack_views` (multi-view image batches).
    eval_dataset: optional held-out data for ``eval_loss`` (masked-LM); label-free probes go in ``evaluators``.
    """

    model: Any
    train_dataset: Any
    data_collator: Callable | None = None
    evaluators: list[Callable] = field(default_factory=list)
    eval_dataset: Any = None
    #: Optional ``torch.utils.data.Sampler`` of the training order (e.g. :class:`hf_ssl.data.samplers.
    #: NoDuplicatesSampler` for in-batch negatives); ``None``: Trainer's shuffled order. It must be rank-agnostic
    #: (accelerate shards its batches) and seeded by ``(seed, epoch)``; a ``set_epoch`` method is called at each epoch.
    train_sampler: Any = None
    #: The trainer class (``SSLTrainer`` for pretraining; ``SemiSupervisedTrainer`` for semi-supervised jobs) and the
    #: keyword arguments it takes beyond Trainer's (``method``, ``unlabelled_dataset``, ``views``, ...).
    trainer_class: Any = None
    trainer_kwargs: dict[str, Any] = field(default_factory=dict)
    #: ``TrainerCallback``s the job's training needs (DeepCluster: the re-clustering at each epoch's start).
    callbacks: list[Any] = field(default_factory=list)


@dataclass
class FinalEvaluation:
    """The result of :meth:`PretrainingJob.final_evaluation`.

    probes: job-specific nested dict (e.g. ``{"pretrained": {"knn_top1": ..}, "random_init": {..}}``), written to
        ``eval_results.json`` as is.
    eval_results: the headline numbers of the *pretrained* model as ``huggingface_hub.EvalResult`` (task, dataset,
        split, metric, value): model cards turn them into ``model-index``. Put the protocol in ``metric_name``
        (e.g. ``"kNN top-1 (k=200, T=0.1)"``) and baselines in ``probes``.
    table: a printable comparison for the console.
    """

    probes: dict[str, Any] = field(default_factory=dict)
    eval_results: list[EvalResult] = field(default_factory=list)
    table: str = ""

    def to_json(self, pretraining_steps: int) -> dict[str, Any]:
        return {
            "pretraining_steps": pretraining_steps,
            "probes": self.probes,
            "eval_results": [eval_result_to_dict(result) for result in self.eval_results],
        }


class PretrainingJob(abc.ABC):
    """Base of the jobs; see the module docstring. Instances are built by :func:`hf_ssl.jobs.runner.run`.

    Attributes set at construction: ``arguments`` (instances of ``argument_classes``, in order), ``method_config``,
    ``training_args``.
    """

    name: ClassVar[str] = ""
    argument_classes: ClassVar[tuple[type, ...]] = ()
    default_encoder: ClassVar[str] = ""
    #: The transformers class that loads the published model, and what it is (for the run's last line).
    published_as: ClassVar[tuple[str, str]] = ("AutoModel", "encoder")
    #: The names of the ``argument_classes`` in ``hf_ssl_run.json``, in order; model cards render them as they are.
    record_sections: ClassVar[tuple[str, ...]] = ("encoder", "data")

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.name:
            JOB_REGISTRY[cls.name] = cls

    def __init__(self, arguments: tuple, method_config, training_args):
        self.arguments = tuple(arguments)
        self.method_config = method_config
        self.training_args = training_args

    @abc.abstractmethod
    def prepare(self) -> JobParts:
        """Load data, build (or load from ``init_from``) the model, and say how to batch and monitor it."""

    def save_extras(self, output_dir: str, model) -> None:
        """Write files the checkpoint needs beside the weights (tokenizer, processor, ...). Main process only."""

    def final_evaluation(self, model) -> FinalEvaluation | None:
        """Probe the trained model against baselines after training (main process only); ``None``: nothing to do."""
        return None

    def run_record(self) -> dict[str, Any]:
        """The job's arguments for ``hf_ssl_run.json``: ``{section: {field: value}}``, sections named by
        :attr:`record_sections` (override to add what the arguments do not say, e.g. the resolved vocabulary)."""
        return {section: dataclass_values(arguments) for section, arguments in zip(self.record_sections, self.arguments)}


def dataclass_values(instance) -> dict[str, Any]:
    return {f.name: getattr(instance, f.name) for f in dataclasses.fields(instance)}
