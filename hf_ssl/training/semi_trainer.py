"""``SemiSupervisedTrainer``: an ``SSLTrainer`` that fine-tunes any transformers classifier on a labelled and an
unlabelled dataset with a semi-supervised method (:mod:`hf_ssl.semi`).

What it adds:

- the train loader of :mod:`hf_ssl.data.streams`: device batches of ``B`` labelled and ``mu B`` unlabelled examples,
  each stream with its own seeded order, sharded over processes by accelerate and restored exactly on resume;
- the views of each stream (``views.weak`` / ``views.strong``, e.g. :class:`hf_ssl.views.ImageWeakStrongViews`) and the
  plain evaluation view (``views.plain``) of the evaluation set;
- the method's per-step objective and its diagnostics in the logs (supervised and unsupervised loss, weight, mask
  rate, pseudo-label accuracy when the unlabelled set secretly has labels);
- the method's state (EMA teacher, class statistics, per-example memory) in every checkpoint, restored on resume;
- evaluation (accuracy through ``compute_metrics``) and the saved model are the method's evaluation model: the EMA
  (FixMatch) or teacher (Mean Teacher) when it has one.

The result is an ordinary checkpoint of the classifier, with its ``id2label`` / ``label2id``: plain transformers loads
it and ``pipeline(...)`` serves it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import datasets
import torch
from safetensors.torch import load_model, save_model
from torch.utils.data import DataLoader
from transformers import TrainerCallback

from ..data.streaming import StreamedDataset, StreamedExample
from ..data.streams import (
    UNLABELLED,
    PlainViewCollator,
    StreamKey,
    TwoStreamBatchSampler,
    TwoStreamCollator,
    TwoStreamDataset,
)
from ..evaluation.metrics import classification_metrics
from ..schedules import TrainingProgress
from ..semi.base import SemiSupervisedMethod
from .arguments import global_batch_size
from .errors import UsageError
from .trainer import SSLTrainer, check_streamed_run

logger = logging.getLogger(__name__)

#: The file of the method's state inside a checkpoint folder.
METHOD_STATE_NAME = "semi_method.safetensors"


class SemiSupervisedTrainer(SSLTrainer):
    """Semi-supervised fine-tuning of a transformers classifier.

    Args (beyond ``Trainer``'s ``model`` (an ``AutoModelFor*Classification``), ``args``, ``eval_dataset``,
    ``callbacks``):
        method: a :class:`~hf_ssl.semi.base.SemiSupervisedMethod` (``FixMatch()``, ``MeanTeacher()``, ...).
        train_dataset: the labelled examples (the views' input columns and ``label_column``).
        unlabelled_dataset: the unlabelled examples (the views' input columns; a label column there is ignored, or
            read for diagnostics only with ``audit_label_column``).
        views: the modality's weak / strong / plain views and ``collate`` (see :mod:`hf_ssl.data.streams`).
        compute_metrics: default :func:`hf_ssl.evaluation.metrics.classification_metrics` (accuracy).
    The batch of ``args.per_device_train_batch_size`` labelled examples is joined by ``method.config.
    unlabelled_batch_ratio`` times as many unlabelled ones.

    ``unlabelled_dataset`` may be a stream (a ``datasets.IterableDataset``, :mod:`hf_ssl.data.streaming`): it is split
    over processes and workers by shard and resumed from its saved position, while the small labelled set stays
    map-style and cycles as with map-style data (device batch ``d`` takes the same labelled examples). ``max_steps`` is
    then required; methods with a per-example memory (class-wise thresholds, Noisy Student, temporal ensembling) need
    a map-style unlabelled set.
    """

    def __init__(
        self,
        model=None,
        args=None,
        *,
        method: SemiSupervisedMethod,
        train_dataset=None,
        unlabelled_dataset=None,
        views=None,
        eval_dataset=None,
        label_column: str = "label",
        audit_label_column: str | None = None,
        compute_metrics: Callable | None = None,
        **kwargs,
    ):
        if model is None or args is None or views is None or method is None:
            raise ValueError("SemiSupervisedTrainer needs model=, args=, method= and views=")
        if isinstance(unlabelled_dataset, (datasets.IterableDataset, StreamedDataset)):
            check_streamed_run(args)
            unlabelled_dataset = StreamedDataset(unlabelled_dataset, seed=args.seed) if isinstance(
                unlabelled_dataset, datasets.IterableDataset) else unlabelled_dataset
        _check_semi_supervised_data(model, train_dataset, unlabelled_dataset, eval_dataset, views, label_column)
        kwargs.setdefault("data_collator", PlainViewCollator(views, label_column))
        super().__init__(model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
                         compute_metrics=compute_metrics or classification_metrics, **kwargs)
        self.method = method
        self.unlabelled_dataset = unlabelled_dataset
        self.views = views
        self.label_column = label_column
        self.audit_label_column = audit_label_column
        counts = torch.bincount(torch.as_tensor(list(train_dataset[label_column])), minlength=model.config.num_labels)
        method.label_smoothing = self.args.label_smoothing_factor
        streamed = isinstance(unlabelled_dataset, StreamedDataset)
        method.setup(self.model, num_unlabelled=0 if streamed else len(unlabelled_dataset), labelled_class_counts=counts)
        if streamed:
            _check_streamable_method(method)
        method.to(self.args.device)
        self.add_callback(_MethodStepCallback(self))

    # ----------------------------------------------------------------------------------------------------------------
    def progress(self) -> TrainingProgress:
        """Where training stands, for the method's schedules (ramp-up)."""
        steps = max(self.state.max_steps, 1)
        return TrainingProgress(self.state.global_step, self.state.max_steps,
                                max(1, round(steps / max(self.state.num_train_epochs, 1))), global_batch_size(self.args))

    def batch_composition(self) -> str:
        ratio = self.method.config.unlabelled_batch_ratio
        return (f" labelled + {ratio * self.args.per_device_train_batch_size} unlabelled per device "
                f"(unlabelled_batch_ratio {ratio}; {self.method.config.method})")

    def streamed_training_data(self) -> StreamedDataset | None:
        """The unlabelled stream, or ``None`` when the unlabelled set is map-style."""
        return self.unlabelled_dataset if isinstance(self.unlabelled_dataset, StreamedDataset) else None

    def get_train_dataloader(self) -> DataLoader:
        args = self.args
        labelled_batch = args.per_device_train_batch_size
        dataset = TwoStreamDataset(
            self.train_dataset, self.unlabelled_dataset, self.views, label_column=self.label_column,
            unlabelled_views=self.method.unlabelled_views, audit_label_column=self.audit_label_column, seed=args.seed,
        )
        stream = self.streamed_training_data()
        if stream is not None:
            stream.seed = args.seed
            unlabelled_batch = labelled_batch * self.method.config.unlabelled_batch_ratio
            labelled_order = TwoStreamBatchSampler(  # only its labelled stream is used: device batch -> labelled keys
                len(self.train_dataset), unlabelled_batch * args.world_size, labelled_batch, unlabelled_batch,
                num_processes=args.world_size, seed=args.seed,
            )
            make_batch = _StreamedTwoStreamBatch(dataset, labelled_order, TwoStreamCollator(self.views.collate))
            return self.streamed_dataloader(stream, unlabelled_batch, make_batch)
        sampler = TwoStreamBatchSampler(
            len(self.train_dataset), len(self.unlabelled_dataset), labelled_batch,
            labelled_batch * self.method.config.unlabelled_batch_ratio, num_processes=args.world_size, seed=args.seed,
        )
        loader = DataLoader(
            dataset, batch_sampler=sampler, collate_fn=TwoStreamCollator(self.views.collate),
            num_workers=args.dataloader_num_workers, pin_memory=args.dataloader_pin_memory,
            persistent_workers=args.dataloader_persistent_workers and args.dataloader_num_workers > 0,
            prefetch_factor=args.dataloader_prefetch_factor if args.dataloader_num_workers > 0 else None,
        )
        return self.accelerator.prepare(loader)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if "labelled" not in inputs:  # an evaluation batch: the classifier's inputs and labels
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        self.method.train(model.training)
        labelled = self.method.mix_labelled(inputs["labelled"]) if model.training else inputs["labelled"]
        output = self.method.compute_loss(model, labelled, inputs["unlabelled"], self.progress())
        if model.training:
            self.record_diagnostics({
                "supervised_loss": output.supervised_loss, "unsupervised_loss": output.unsupervised_loss,
                "unsupervised_weight": output.unsupervised_weight, **(output.diagnostics or {}),
            })
        return (output.loss, output) if return_outputs else output.loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        # Evaluation reads the method's evaluation model (the EMA / teacher when there is one).
        # It runs in evaluation mode (no dropout) even when the method keeps it in training mode between evaluations,
        # as Mean Teacher's reference code does with its teacher.
        evaluated = self.method.evaluation_model(self.accelerator.unwrap_model(model))
        was_training = evaluated.training
        evaluated.eval()
        try:
            return super().prediction_step(evaluated, inputs, prediction_loss_only, ignore_keys)
        finally:
            evaluated.train(was_training)

    # ----------------------------------------------------------------------------------------------------------------
    def save_checkpoint_files(self, folder: str) -> None:
        if self.args.should_save:  # into the checkpoint before it is committed (SSLTrainer's atomic saves)
            save_model(self.method, os.path.join(folder, METHOD_STATE_NAME))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        state = os.path.join(resume_from_checkpoint, METHOD_STATE_NAME)
        if os.path.isfile(state):
            load_model(self.method, state, device=str(self.args.device))
        elif self.method.state_dict():
            raise FileNotFoundError(
                f"{resume_from_checkpoint} has no {METHOD_STATE_NAME} (the method's EMA / memories): it was not written "
                "by SemiSupervisedTrainer; start a new run, or pass the folder as the model to fine-tune from"
            )

    def published_model(self):
        """The method's evaluation model: the EMA (FixMatch) or teacher (Mean Teacher) when it has one."""
        return self.method.evaluation_model(self.accelerator.unwrap_model(self.model))

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False):
        """``trainer.save_model()`` saves the classifier to publish (:meth:`published_model`); checkpoints
        (``_internal_call``) save the trained weights, which resuming needs."""
        if _internal_call:
            return super().save_model(output_dir, _internal_call)
        return self._save_with_published_weights(lambda: super(SemiSupervisedTrainer, self).save_model(output_dir))

    def save_published_model(self, output_dir: str) -> None:
        self._save_with_published_weights(lambda: super(SemiSupervisedTrainer, self).save_model(output_dir, True))

    def _save_with_published_weights(self, save):
        """Run ``save`` with the published weights loaded into the trainer's model, then put the trained ones back."""
        model = self.accelerator.unwrap_model(self.model)
        published = self.published_model()
        if published is model:
            return save()
        trained = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
        model.load_state_dict(published.state_dict())
        try:
            return save()
        finally:
            model.load_state_dict(trained)


class _StreamedTwoStreamBatch:
    """A ``make_batch`` of :class:`~hf_ssl.data.streaming.StreamBatches`: device batch ``d`` of the unlabelled stream's
    examples joined by the labelled examples the map-style sampler gives device batch ``d``. An unlabelled example is
    keyed by its global position and its slot's epoch, so its views are seeded by ``(seed, stream, position, epoch,
    view)``, as a map-style one's by its index and epoch."""

    def __init__(self, dataset: TwoStreamDataset, labelled_order: TwoStreamBatchSampler, collate: TwoStreamCollator):
        self.dataset, self.labelled_order, self.collate = dataset, labelled_order, collate

    def __call__(self, examples: list[StreamedExample], device_batch: int) -> dict:
        self.dataset.streams[UNLABELLED] = {example.position: example.row for example in examples}
        keys = self.labelled_order.labelled_keys(device_batch)
        keys += [StreamKey(UNLABELLED, example.position, example.epoch) for example in examples]
        return self.collate([self.dataset[key] for key in keys])


def _check_streamable_method(method: SemiSupervisedMethod) -> None:
    """A method that keeps a memory per unlabelled example (sized by the unlabelled count, 0 for a stream) cannot
    read a stream."""
    memories = [name for name, buffer in method.named_buffers() if buffer.dim() >= 1 and buffer.shape[0] == 0]
    if memories:
        raise UsageError(
            f"{method.config.method} keeps a memory per unlabelled example ({', '.join(memories)}), which needs a "
            "map-style unlabelled set of known size: load the unlabelled data without --streaming (or turn the "
            "per-example option off)"
        )


class _MethodStepCallback(TrainerCallback):
    """Calls the method's ``after_optimizer_step`` (the EMA update) after every optimizer step."""

    def __init__(self, trainer: SemiSupervisedTrainer):
        self.trainer = trainer

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.trainer.method.after_optimizer_step(self.trainer.model, self.trainer.progress())


def _check_semi_supervised_data(model, labelled, unlabelled, evaluation, views, label_column: str) -> None:
    """Refuse the inputs a semi-supervised run cannot use, with the fix in the message; warn about an unlabelled set
    that holds the evaluation set."""
    if labelled is None or unlabelled is None:
        raise ValueError("pass train_dataset= (the labelled examples) and unlabelled_dataset=")
    streamed = isinstance(unlabelled, StreamedDataset)  # a stream's emptiness and columns show when it is read
    if not streamed and len(unlabelled) == 0:
        raise ValueError("the unlabelled dataset is empty: semi-supervised training needs unlabelled examples")
    if len(labelled) == 0:
        raise ValueError("the labelled dataset is empty: pass at least one labelled batch")
    if label_column not in labelled.column_names:
        raise ValueError(f"the labelled dataset has no label column {label_column!r} (columns: {labelled.column_names});"
                         " pass label_column= or rename the column")
    for name, dataset in (("labelled", labelled), ("unlabelled", unlabelled)):
        if dataset.column_names is None:
            continue
        missing = [column for column in views.input_columns if column not in dataset.column_names]
        if missing:
            raise ValueError(f"the {name} dataset has no column(s) {missing} that the views read "
                             f"(columns: {dataset.column_names}); rename them or set the views' input columns")
    labels = torch.as_tensor(list(labelled[label_column]))
    classes = int(model.config.num_labels)
    if labels.dtype.is_floating_point or int(labels.min()) < 0 or int(labels.max()) >= classes:
        raise ValueError(f"labels must be integers in [0, {classes}) (the classifier's num_labels), got "
                         f"[{labels.min().item()}, {labels.max().item()}]; load the classifier with num_labels= the "
                         "number of classes (and id2label)")
    if evaluation is not None and _same_data(unlabelled, evaluation):
        logger.warning("the unlabelled dataset holds the evaluation dataset: its accuracy is then measured on examples "
                       "the model trained on without labels; hold the evaluation split out of the unlabelled data")


def _same_data(first, second) -> bool:
    """The same ``datasets.Dataset`` (fingerprint) or the same files on disk."""
    if getattr(first, "_fingerprint", None) is not None and first._fingerprint == getattr(second, "_fingerprint", None):
        return True
    files = {entry.get("filename") for entry in getattr(first, "cache_files", []) or []}
    return bool(files) and files == {entry.get("filename") for entry in getattr(second, "cache_files", []) or []}
