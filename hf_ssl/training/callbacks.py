"""Trainer callbacks that carry per-step SSL work (the method's schedules / EMA, the views' epoch), the time budget,
label-free evaluators, and the record of which method wrote a checkpoint."""

from __future__ import annotations

import math
import time

import torch
from transformers import (
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)
from transformers.trainer_callback import ExportableState

from ..schedules import TrainingProgress
from .arguments import global_batch_size


class SSLMethodCallback(TrainerCallback):
    """Calls a model's per-step interface (:class:`hf_ssl.methods.base.SSLPreTrainedModel`):
    ``set_progress`` at each step's start, ``before_optimizer_step`` after backward, ``after_optimizer_step`` after
    the update. Any model exposing these three methods works, whatever its method; works with a plain ``Trainer``.
    """

    def __init__(self):
        self.steps_per_epoch = 1

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        dataloader = kwargs.get("train_dataloader")
        try:
            batches = len(dataloader)
        except TypeError:  # iterable dataset: one "epoch" is the whole run
            batches = state.max_steps * args.gradient_accumulation_steps
        self.steps_per_epoch = max(1, math.ceil(batches / args.gradient_accumulation_steps))
        self._call(kwargs.get("model"), "set_progress", state, args)

    def on_step_begin(self, args, state, control, **kwargs):
        self._call(kwargs.get("model"), "set_progress", state, args)

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self._call(kwargs.get("model"), "before_optimizer_step", state, args)

    def on_optimizer_step(self, args, state, control, **kwargs):
        self._call(kwargs.get("model"), "after_optimizer_step", state, args)

    def _call(self, model, hook: str, state: TrainerState, args: TrainingArguments) -> None:
        function = getattr(model, hook, None)
        if function is not None:
            function(TrainingProgress(state.global_step, state.max_steps, self.steps_per_epoch, global_batch_size(args)))


class ViewEpochCallback(TrainerCallback):
    """Tells the view transform (and a custom train sampler) which epoch starts, so each epoch draws new (but
    reproducible) views and orders: ``set_epoch(epoch)`` on each of ``followers``."""

    def __init__(self, *followers):
        self.followers = followers

    def on_epoch_begin(self, args, state, control, **kwargs):
        epoch = math.floor(state.epoch + 1e-6) if state.epoch else 0
        for follower in self.followers:
            follower.set_epoch(epoch)


class TrainingTimeBudget(TrainerCallback):
    """Stops training after ``minutes`` of training time and saves: for budget-matched comparisons.

    Training time is what a step costs end to end: loading and augmenting its batch, forward, backward, optimizer
    and the method's per-step work. Evaluation, saving and logging are not counted: the clock restarts after each of
    them. The learning-rate and method schedules still run over ``max_steps``; pick ``max_steps`` so that it about
    fits the budget. With several processes the ranks agree (max over processes), so all stop at the same step.
    """

    def __init__(self, minutes: float):
        if not minutes > 0:
            raise ValueError(f"the time budget must be positive minutes, got {minutes}")
        self.seconds = 60.0 * minutes
        self.elapsed = 0.0
        self._since: float | None = None

    def _restart_clock(self, *args, **kwargs):
        self._since = time.perf_counter()

    on_train_begin = on_log = on_evaluate = on_save = _restart_clock

    def on_step_end(self, args, state, control, **kwargs):
        now = time.perf_counter()
        self.elapsed += now - (self._since if self._since is not None else now)
        self._since = now
        over = torch.tensor([float(self.elapsed >= self.seconds)])
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            if torch.distributed.get_backend() == "nccl":
                over = over.cuda()
            torch.distributed.all_reduce(over, op=torch.distributed.ReduceOp.MAX)
        if over.item() > 0:
            control.should_training_stop = True
            control.should_save = True


class EvaluatorCallback(TrainerCallback):
    """Runs label-free probes (e.g. :class:`hf_ssl.evaluation.knn.KNNEvaluator`) at every evaluation of any ``Trainer``.

    The metrics (prefixed ``eval_``) are added to the dict ``trainer.evaluate()`` returns and to
    ``state.log_history``. ``SSLTrainer(evaluators=[...])`` does the same and also sends them to the loggers
    (TensorBoard, W&B, ...); use this callback with a plain ``Trainer``.
    """

    def __init__(self, *evaluators, prefix: str = "eval"):
        self.evaluators = evaluators
        self.prefix = prefix

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        if model is None or not state.is_world_process_zero:
            return
        results = {}
        for evaluator in self.evaluators:
            results.update({f"{self.prefix}_{name}": value for name, value in evaluator(model).items()})
        if metrics is not None:
            metrics.update(results)
        state.log_history.append({**results, "step": state.global_step})


class RunMethodRecord(TrainerCallback, ExportableState):
    """Records the method and job of a run in every checkpoint it writes.

    Trainer saves the ``state()`` of its ``ExportableState`` callbacks in the checkpoint's ``trainer_state.json``
    (``stateful_callbacks.RunMethodRecord.args``), so that resuming the checkpoint with another method is refused
    before anything loads (:func:`hf_ssl.training.output_dir.check_checkpoint_method`); a semi-supervised
    checkpoint's ``config.json`` is a classifier's and would not tell.
    """

    def __init__(self, method: str, job: str | None = None):
        self.method = method
        self.job = job

    def state(self) -> dict:
        return {"args": {"method": self.method, "job": self.job}, "attributes": {}}
