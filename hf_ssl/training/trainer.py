"""``SSLTrainer``: a method-agnostic ``transformers.Trainer`` for self-supervised pretraining.

What it adds to ``Trainer``:
- SSL defaults in :class:`SSLTrainingArguments` (keep every column, drop the last incomplete batch, loss-only eval);
- the per-step method interface (schedules, EMA teacher, ...) through
:class:`hf_ssl.training.callbacks.SSLMethodCallback`;
- logging of every scalar diagnostic the model returns (teacher entropy, KL, ...) and of its schedule values,
  averaged over the logging interval and over processes;
- label-free evaluators (kNN, linear probe) run at each evaluation next to ``eval_loss``;
- atomic checkpoints (:mod:`hf_ssl.training.checkpoints`): a killed save never leaves a broken ``checkpoint-N``, and
  resuming the last checkpoint skips incomplete ones;
- a graceful stop on SIGINT / SIGTERM (:mod:`hf_ssl.training.interruption`): the step ends, a checkpoint is saved, and
  ``train()`` raises, so the run resumes where it stopped;
- one start line ``world size: N, per-device batch: B, global batch: G``.
It never asks which method it trains.
"""

from __future__ import annotations

import inspect
import json
import os
import signal
from collections.abc import Callable, Sequence

import datasets
import torch
from accelerate.data_loader import prepare_data_loader
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    set_model_state_dict,
)
from torch.distributed.tensor import DTensor
from torch.utils.data import Sampler
from transformers import PreTrainedModel, Trainer, TrainingArguments
from transformers.trainer_callback import ExportableState
from transformers.trainer_utils import SaveStrategy
from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, logging

from ..data.collators import stack_views
from ..data.streaming import (
    StreamBatches,
    StreamedDataset,
    TrackedStreamLoader,
    collate_examples,
    stream_loader,
)
from ..distributed import has_batch_norm
from ..publishing.hub import write_trainer_model_card
from .allocator import keep_freed_cpu_memory
from .arguments import global_batch_size
from .callbacks import SSLMethodCallback, TrainingTimeBudget, ViewEpochCallback
from .checkpoints import (
    TRAINER_STATE_NAME,
    checkpoint_folder,
    commit_checkpoint,
    discard_staged_checkpoints,
    last_complete_checkpoint,
    rotate_checkpoints,
    staging_folder,
)
from .errors import UsageError
from .grad_cache import check_gradient_cache_setup, gradient_cached_training_step
from .gradient_clipping import clip_gradients_per_parameter_
from .interruption import HANDLED_SIGNALS, GracefulInterruption
from .output_dir import check_checkpoint_method
from .process_group import leave_at_exit, leave_process_group
from .weight_decay import WeightDecaySchedule, mark_decaying_groups

logger = logging.get_logger(__name__)

#: The stream position of each process in a checkpoint of a streamed run (``{rank}``: the process index).
STREAM_STATE_NAME = "stream_state_{rank}.json"


def _constant_factor(step: int) -> float:
    """The ``LambdaLR`` factor of a fixed-learning-rate group (a named function: schedulers are pickled)."""
    return 1.0


class SSLTrainer(Trainer):
    """Trainer for any :class:`hf_ssl.methods.base.SSLPreTrainedModel`.

    Args (beyond ``Trainer``'s):
        evaluators: callables ``model -> dict[str, float]`` run at every evaluation (e.g.
            :class:`hf_ssl.evaluation.knn.KNNEvaluator`); their metrics are logged with the ``eval_`` prefix.
        train_sampler: optional order of the training examples (e.g. :class:`hf_ssl.data.samplers.NoDuplicatesSampler`),
            used instead of the shuffled default; its batches are sharded over processes by accelerate.
        data_collator defaults to :func:`hf_ssl.data.collators.stack_views`.

    ``train_dataset`` may be a stream: a ``datasets.IterableDataset`` (its rows go to the collator as they are) or
    :func:`hf_ssl.views.apply_views` of one (with views). It is read as :mod:`hf_ssl.data.streaming` says: split over
    processes and dataloader workers by shard, never running dry (``max_steps`` is required and ends the run), and its
    position is saved in every checkpoint and continued on resume.
    """

    def __init__(
        self, *args, evaluators: Sequence[Callable] | None = None, train_sampler: Sampler | None = None, **kwargs
    ):
        kwargs.setdefault("data_collator", stack_views)
        training_args = kwargs.get("args", args[1] if len(args) > 1 else None)
        if training_args is None:
            raise ValueError("SSLTrainer needs `args=SSLTrainingArguments(output_dir=...)`")
        # Trainer refuses an eval strategy without eval_dataset; label-free probes (evaluators) are evaluation too.
        strategy = training_args.eval_strategy
        probe_only = bool(evaluators) and kwargs.get("eval_dataset") is None and strategy != "no"
        if isinstance(kwargs.get("train_dataset"), (datasets.IterableDataset, StreamedDataset)):
            check_streamed_run(training_args)
            kwargs["train_dataset"] = StreamedDataset(kwargs["train_dataset"]) if isinstance(
                kwargs["train_dataset"], datasets.IterableDataset) else kwargs["train_dataset"]
        if probe_only:
            training_args.eval_strategy = "no"
        try:
            super().__init__(*args, **kwargs)
        finally:
            training_args.eval_strategy = strategy
        leave_at_exit(self)  # a multi-process run leaves its group before the interpreter shuts down
        self.evaluators = list(evaluators or [])
        self.train_sampler = train_sampler
        self.stream_loader: TrackedStreamLoader | None = None  # the streamed loader, whose position checkpoints save
        self._stream_resume: dict | None = None
        if isinstance(self.train_dataset, StreamedDataset):
            self.train_dataset.seed = self.args.seed
        _synchronise_batch_norm(self.model, self.args)
        if getattr(self.args, "steady_cpu_allocator", False) and self.args.device.type == "cpu":
            keep_freed_cpu_memory()
        if getattr(self.args, "gradient_cache_chunk_size", None) is not None:
            check_gradient_cache_setup(self)
        self.add_callback(SSLMethodCallback())
        self.weight_decay_schedule = None
        if getattr(self.args, "weight_decay_end", None) is not None:
            self.weight_decay_schedule = WeightDecaySchedule(self.args.weight_decay, self.args.weight_decay_end)
            self.add_callback(self.weight_decay_schedule)
        if self.args.max_train_minutes is not None:
            self.add_callback(TrainingTimeBudget(self.args.max_train_minutes))
        transform = _view_transform(self.train_dataset)
        if transform is not None and hasattr(transform, "set_epoch"):
            transform.seed = self.args.seed
        # One callback for both (transformers warns when a callback class is added twice).
        epoch_followers = [part for part in (train_sampler, transform) if hasattr(part, "set_epoch")]
        if epoch_followers:
            self.add_callback(ViewEpochCallback(*epoch_followers))
        self._diagnostic_sums: dict[str, torch.Tensor] = {}
        self._diagnostic_count = 0
        # transformers' opt-in `enable_jit_checkpoint` handles SIGTERM itself; SIGINT stays ours then.
        jit = getattr(self.args, "enable_jit_checkpoint", False)
        handled = tuple(number for number in HANDLED_SIGNALS if not (jit and number == signal.SIGTERM))
        self.interruption = GracefulInterruption(self._largest_over_processes, handled)
        self.add_callback(self.interruption)

    # ----------------------------------------------------------------------------------------------------------------
    def train(self, resume_from_checkpoint: str | bool | None = None, *args, **kwargs):
        """``Trainer.train``; ``resume_from_checkpoint=True`` resumes the last *complete* checkpoint of ``output_dir``
        (:func:`~hf_ssl.training.checkpoints.last_complete_checkpoint`). SIGINT / SIGTERM during training save a
        checkpoint at the end of the step, then raise :class:`~hf_ssl.training.interruption.TrainingInterrupted` /
        :class:`~hf_ssl.training.interruption.TrainingTerminated` (:mod:`hf_ssl.training.interruption`)."""
        if resume_from_checkpoint is True:
            resume_from_checkpoint = last_complete_checkpoint(self.args.output_dir) or True  # none: Trainer's error
        self._stream_resume = None
        if isinstance(resume_from_checkpoint, str) and self.streamed_training_data() is not None:
            self._stream_resume = self._read_stream_state(resume_from_checkpoint)
        world = self.args.world_size
        per_device = self.args.per_device_train_batch_size
        line = f"world size: {world}, per-device batch: {per_device}, global batch: {global_batch_size(self.args)}"
        line += self.batch_composition()
        if self.args.gradient_accumulation_steps > 1:
            line += f" ({self.args.gradient_accumulation_steps} accumulation steps)"
        if self.is_world_process_zero():
            print(line, flush=True)
        logger.info(line)
        with self.interruption.installed():
            output = super().train(resume_from_checkpoint, *args, **kwargs)
        last = checkpoint_folder(self.args.output_dir, self.state.global_step)
        self.interruption.raise_if_stopped(str(last), announce=self.is_world_process_zero())
        return output

    def leave_process_group(self) -> None:
        """End this process's part in a multi-process run: release the prepared model (the DDP / FSDP wrapper holds
        the process group) and leave the group (:func:`hf_ssl.training.process_group.leave_process_group`). Call it
        when this process needs no collective any more; a process that does not is made to leave at exit. The
        trainer cannot train again afterwards."""
        leave_process_group(self)

    def _largest_over_processes(self, value: int) -> int:
        """``max`` of ``value`` over the processes (every step, so only when there are several)."""
        if self.args.world_size <= 1 or not torch.distributed.is_initialized():
            return value
        tensor = torch.tensor([value], device=self.args.device)
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
        return int(tensor.item())

    def _save_checkpoint(self, model, trial) -> None:
        """``Trainer._save_checkpoint`` (transformers 5.x), written atomically (:mod:`hf_ssl.training.checkpoints`):
        everything goes into ``_tmp-checkpoint-N``, which is synced and renamed to ``checkpoint-N`` once complete;
        pushing and the rotation of old checkpoints (``save_total_limit``) come after the rename. What a killed save
        left is deleted first. Subclasses add files through :meth:`save_checkpoint_files`."""
        if self.hp_search_backend is None and trial is None:
            self.store_flos()
        run_dir = self._get_output_dir(trial=trial)
        step = self.state.global_step
        final = checkpoint_folder(run_dir, step)
        staging = str(staging_folder(final))
        writes_folders = self.args.should_save or self.args.local_process_index == 0  # rank files on other nodes
        if writes_folders:
            discard_staged_checkpoints(run_dir)
        self.accelerator.wait_for_everyone()
        self.save_model(staging, _internal_call=True)
        if not self.args.save_only_model:
            self._save_optimizer_and_scheduler(staging)
            self._save_scaler(staging)
            self._save_rng_state(staging)
        self._save_stream_state(staging)
        self.save_checkpoint_files(staging)
        best_step = self.state.best_global_step
        if self.args.save_strategy in (SaveStrategy.STEPS, SaveStrategy.EPOCH, SaveStrategy.BEST) and best_step:
            best = checkpoint_folder(run_dir, best_step)
            if best_step == step or best.is_dir():
                self.state.best_model_checkpoint = str(best)
        if self.args.should_save:  # as Trainer: the stateful callbacks' state goes into trainer_state.json
            for callback in [*self.callback_handler.callbacks, self.control]:
                if isinstance(callback, ExportableState):
                    name = callback.__class__.__name__
                    if isinstance(self.state.stateful_callbacks[name], list):
                        self.state.stateful_callbacks[name].append(callback.state())
                    else:
                        self.state.stateful_callbacks[name] = callback.state()
            self.state.save_to_json(os.path.join(staging, TRAINER_STATE_NAME))
        self.accelerator.wait_for_everyone()
        if self.is_world_process_zero():
            commit_checkpoint(staging, final)
        self.accelerator.wait_for_everyone()
        if writes_folders and os.path.isdir(staging):  # a node with its own disk (save_on_each_node, rank files)
            commit_checkpoint(staging, final)
        if self.args.push_to_hub:
            self._push_from_checkpoint(str(final))
        if self.args.should_save:
            rotate_checkpoints(run_dir, self.args.save_total_limit, self.state.best_model_checkpoint)

    # ----------------------------------------------------------------------------------------------------------------
    def streamed_training_data(self) -> StreamedDataset | None:
        """The training stream (:mod:`hf_ssl.data.streaming`), or ``None`` for map-style data."""
        return self.train_dataset if isinstance(self.train_dataset, StreamedDataset) else None

    def get_train_dataloader(self):
        stream = self.streamed_training_data()
        if stream is None:
            return super().get_train_dataloader()
        return self.streamed_dataloader(stream, self._train_batch_size, collate_examples(stream, self.data_collator))

    def streamed_dataloader(self, stream: StreamedDataset, batch_size: int, make_batch) -> TrackedStreamLoader:
        """The loader of a stream for this process: :class:`~hf_ssl.data.streaming.StreamBatches` made in the
        dataloader workers (split over processes and workers there, so accelerate places the batches on the device
        without sharding them again), continuing from the checkpoint being resumed."""
        args, accelerator = self.args, self.accelerator
        batches = StreamBatches(stream, batch_size, make_batch, process_index=accelerator.process_index,
                                num_processes=accelerator.num_processes, resume=self._stream_resume)
        loader = stream_loader(batches, num_workers=args.dataloader_num_workers, pin_memory=args.dataloader_pin_memory,
                               persistent_workers=args.dataloader_persistent_workers,
                               prefetch_factor=args.dataloader_prefetch_factor,
                               multiprocessing_context=args.dataloader_multiprocessing_context)
        loader = prepare_data_loader(loader, device=args.device, num_processes=1, process_index=0,
                                     put_on_device=True, dispatch_batches=False)
        self.stream_loader = TrackedStreamLoader(
            loader, process_index=accelerator.process_index, num_processes=accelerator.num_processes,
            num_workers=args.dataloader_num_workers, resume=self._stream_resume,
        )
        return self.stream_loader

    def get_resumed_dataloader(self, dataloader, num_batches: int):
        # A stream continues from its saved position (train() reads it): nothing to skip.
        if isinstance(dataloader, TrackedStreamLoader):
            return dataloader
        return super().get_resumed_dataloader(dataloader, num_batches)

    def _save_stream_state(self, folder: str) -> None:
        if self.stream_loader is None:
            return
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, STREAM_STATE_NAME.format(rank=self.accelerator.process_index))
        with open(path, "w") as file:
            json.dump(self.stream_loader.state_dict(), file)

    def _read_stream_state(self, checkpoint: str) -> dict:
        path = os.path.join(checkpoint, STREAM_STATE_NAME.format(rank=self.accelerator.process_index))
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{checkpoint} has no {os.path.basename(path)}: it was not written by a streamed run of "
                f"{self.accelerator.num_processes} process(es); resume with the data and process count it was written "
                "with, or start a new run"
            )
        with open(path) as file:
            return json.load(file)

    def save_checkpoint_files(self, folder: str) -> None:
        """Write a subclass's own files into the checkpoint being saved (``folder``, before it is committed); called on
        every process. ``SSLTrainer`` adds none."""

    def batch_composition(self) -> str:
        """What the start line adds after the batch sizes (``SemiSupervisedTrainer``: the unlabelled batch)."""
        return ""

    def published_model(self) -> torch.nn.Module:
        """The model a run publishes: the trained one (``SemiSupervisedTrainer``: its method's evaluation model)."""
        return self.accelerator.unwrap_model(self.model)

    def save_published_model(self, output_dir: str) -> None:
        """Save :meth:`published_model` at the root of ``output_dir`` without pushing (``_internal_call``: Trainer would
        push a card drafted before the run record and the final evaluation exist)."""
        self.save_model(output_dir, _internal_call=True)

    def _get_train_sampler(self, train_dataset=None) -> Sampler | None:
        # A job's own order (duplicate-free batches for in-batch negatives); accelerate shards its batches by rank.
        if self.train_sampler is not None:
            return self.train_sampler
        return super()._get_train_sampler(train_dataset)

    def create_optimizer(self, model=None):
        """``Trainer``'s optimizer, with the model's :meth:`~hf_ssl.methods.base.SSLPreTrainedModel.learning_rate_scales`
        applied: each (weight-decay / no-decay) group is split by factor, and a scaled part's ``lr`` is multiplied by
        its factor. The learning-rate scheduler, created next, scales every group's initial ``lr`` by the same
        schedule, so the ratio holds throughout, except for the groups of the model's
        :meth:`~hf_ssl.methods.base.SSLPreTrainedModel.fixed_learning_rate_modules` (tagged ``fixed_lr``), which
        :meth:`create_scheduler` keeps constant. A model without either keeps Trainer's groups untouched."""
        optimizer = super().create_optimizer(model)
        built_for = self.model if model is None else model  # the model, and names, Trainer built its groups from
        decaying = set(self.get_decay_parameter_names(built_for))
        mark_decaying_groups(optimizer, (value for name, value in built_for.named_parameters() if name in decaying))
        target = self.accelerator.unwrap_model(self.model if model is None else model)
        scales = getattr(target, "learning_rate_scales", dict)()
        factor_of = {
            id(parameter): float(factor)
            for name, factor in scales.items() if float(factor) != 1.0
            for parameter in target.get_submodule(name).parameters()
        }
        fixed = {
            id(parameter)
            for name in getattr(target, "fixed_learning_rate_modules", list)()
            for parameter in target.get_submodule(name).parameters()
        }
        if not factor_of and not fixed:
            return optimizer
        inner = getattr(optimizer, "optimizer", optimizer)  # accelerate's AcceleratedOptimizer wraps the torch one
        split_groups = []
        for group in inner.param_groups:
            by_kind: dict[tuple[float, bool], list] = {}
            for parameter in group["params"]:
                kind = (factor_of.get(id(parameter), 1.0), id(parameter) in fixed)
                by_kind.setdefault(kind, []).append(parameter)
            options = {key: value for key, value in group.items() if key != "params"}
            split_groups += [
                {**options, "params": params, "lr": group["lr"] * factor, "fixed_lr": is_fixed}
                for (factor, is_fixed), params in by_kind.items()
            ]
        inner.param_groups.clear()  # no step taken yet: no optimizer state to carry over
        for group in split_groups:
            inner.add_param_group(group)
        logger.info("learning-rate scales: %s", ", ".join(f"{name} x{factor:g}" for name, factor in scales.items()))
        return optimizer

    def _clip_grad_norm(self, model):
        """Trainer's clipping of all gradients to one norm of ``max_grad_norm``, or, with
        ``gradient_clipping="per_parameter"``, each parameter's gradient to ``max_grad_norm`` on its own (DINO's
        ``clip_gradients``, :mod:`.gradient_clipping`). Returns the norm before clipping (logged as ``grad_norm``)."""
        if getattr(self.args, "gradient_clipping", "global") != "per_parameter":
            return super()._clip_grad_norm(model)
        self.accelerator.unscale_gradients()  # mixed precision: clip the true gradients, as clip_grad_norm_ does
        return clip_gradients_per_parameter_(model.parameters(), self.args.max_grad_norm)

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        """``Trainer``'s scheduler, with the optimizer groups tagged ``fixed_lr`` (see :meth:`create_optimizer`) held
        at their initial ``lr`` for the whole run. Written here because transformers' schedulers apply one lambda
        to every group; ``LambdaLR`` takes one per group, so those groups get a constant one."""
        scheduler = super().create_scheduler(num_training_steps, optimizer)
        inner = getattr(scheduler, "scheduler", scheduler)  # accelerate's AcceleratedScheduler wraps the torch one
        if not isinstance(inner, torch.optim.lr_scheduler.LambdaLR):
            if any(group.get("fixed_lr") for group in inner.optimizer.param_groups):
                raise ValueError(
                    f"a fixed predictor learning rate needs a LambdaLR schedule (lr_scheduler_type cosine, linear, "
                    f"constant_with_warmup, ...), got {type(inner).__name__}; pick one of those or set "
                    "predictor_fixed_learning_rate false"
                )
            return scheduler
        for index, group in enumerate(inner.optimizer.param_groups):
            if group.get("fixed_lr"):
                inner.lr_lambdas[index] = _constant_factor
                group["lr"] = group["initial_lr"]
        inner._last_lr = [group["lr"] for group in inner.optimizer.param_groups]
        return scheduler

    def create_model_card(self, language=None, license=None, tags=None, model_name=None, finetuned_from=None,
                          tasks=None, dataset_tags=None, dataset=None, dataset_args=None, **kwargs) -> None:
        """Write hf_ssl's card (:mod:`hf_ssl.publishing.model_card`) into ``output_dir``, as ``Trainer.push_to_hub`` expects.

        The stock draft calls a run from scratch a "fine-tuned version of [](...)" and knows nothing of the method,
        its paper or its probes. ``language``, ``license`` and ``tags`` go into the card's metadata. A model that is
        not an hf_ssl pretraining model (no ``ssl_config``) gets the stock draft.
        """
        if not self.is_world_process_zero():
            return
        config = getattr(self.accelerator.unwrap_model(self.model), "config", None)
        if not isinstance(getattr(config, "ssl_config", None), dict):
            super().create_model_card(language=language, license=license, tags=tags, model_name=model_name,
                                      finetuned_from=finetuned_from, tasks=tasks, dataset_tags=dataset_tags,
                                      dataset=dataset, dataset_args=dataset_args, **kwargs)
            return

        write_trainer_model_card(self, language=language, license=license, tags=tags, model_name=model_name)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        # transformers 5.x's Trainer restores checkpoint weights with a bare `load_state_dict(strict=False)`, but
        # `save_pretrained` writes the legacy key names of converted architectures (ViT: `encoder.layer.N.attention.
        # attention.query`, vs `layers.N.attention.q_proj` in memory): the encoder weights would be skipped silently
        # on resume (seen with 5.24). `from_pretrained` applies the key mapping; the strict copy fails loudly.
        target = self.accelerator.unwrap_model(model if model is not None else self.model)
        method = (getattr(getattr(target, "config", None), "ssl_config", None) or {}).get("method")
        if method is not None:  # a DINO checkpoint resumed by SimCLR: refused, naming both, before any weight loads
            check_checkpoint_method(resume_from_checkpoint, method)
        weights = [os.path.join(resume_from_checkpoint, name) for name in (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME)]
        if isinstance(target, PreTrainedModel) and any(os.path.isfile(path) for path in weights):
            restored = type(target).from_pretrained(resume_from_checkpoint, config=target.config)
            load_full_state_dict(target, restored.state_dict())
            return
        super()._load_from_checkpoint(resume_from_checkpoint, model)

    def training_step(self, model, inputs, num_items_in_batch=None):
        """``Trainer.training_step``, or with ``gradient_cache_chunk_size`` its gradient-cached version
        (:mod:`hf_ssl.training.grad_cache`): the same gradients with the activations of one chunk at a time."""
        if getattr(self.args, "gradient_cache_chunk_size", None) is None:
            return super().training_step(model, inputs, num_items_in_batch)
        return gradient_cached_training_step(self, model, inputs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # Token-level losses (masked-LM) normalise by the count over the whole accumulated, global batch: models that
        # declare `accepts_loss_kwargs = True` receive it (Trainer then skips its division by accumulation steps).
        if num_items_in_batch is not None and self.model_accepts_loss_kwargs:
            inputs = {**inputs, "num_items_in_batch": num_items_in_batch}
        outputs = model(**self._forward_inputs(inputs))
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs[0]
        if self.args.average_tokens_across_devices and self.model_accepts_loss_kwargs and num_items_in_batch is not None:
            # As Trainer.compute_loss: the loss is a sum over this process's items divided by the GLOBAL count, and
            # DDP averages gradients over processes, so scale back up by the number of data-parallel processes.
            loss = loss * (self.accelerator.num_processes // self.get_tp_size() if self.args.n_gpu <= 1 else self.args.n_gpu)
        if model.training:
            self.record_diagnostics({key: value for key, value in outputs.items() if key != "loss"})
        return (loss, outputs) if return_outputs else loss

    @torch.no_grad()
    def record_diagnostics(self, values: dict) -> None:
        """Add this micro-batch's scalar tensors to the sums logged (averaged over steps and processes) with the loss."""
        for key, value in values.items():
            if isinstance(value, torch.Tensor) and value.dim() == 0:
                total = self._diagnostic_sums.get(key)
                value = value.detach().float()
                self._diagnostic_sums[key] = value if total is None else total + value
        self._diagnostic_count += 1

    def _forward_inputs(self, inputs: dict) -> dict:
        """The batch fields the model's ``forward`` takes (all of them when it takes ``**kwargs``). Collators keep
        the labels of labelled data (``labels``); they reach a model that names them (a semi-supervised classifier,
        Sentence-BERT's NLI objective) and no other, so pretraining on a labelled dataset needs no column surgery."""
        forward = inspect.signature(self.accelerator.unwrap_model(self.model).forward).parameters
        if any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in forward.values()):
            return inputs
        return {name: value for name, value in inputs.items() if name in forward}

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._diagnostic_count:
            names = sorted(self._diagnostic_sums)
            if names:  # a model may return nothing but its loss
                stacked = torch.stack([self._diagnostic_sums[name] for name in names]) / self._diagnostic_count
                stacked = self.accelerator.reduce(stacked, reduction="mean")
                logs.update({name: round(value, 4) for name, value in zip(names, stacked.tolist())})
            self._diagnostic_sums, self._diagnostic_count = {}, 0
            schedule_values = getattr(self.accelerator.unwrap_model(self.model), "schedule_values", None)
            if schedule_values is not None:
                logs.update({name: round(value, 6) for name, value in schedule_values().items()})
            if self.weight_decay_schedule is not None:
                logs["weight_decay"] = round(self.weight_decay_schedule.value, 6)
        super().log(logs, start_time)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        metrics: dict[str, float] = {}
        if eval_dataset is not None or self.eval_dataset is not None:
            metrics.update(super().evaluate(eval_dataset, ignore_keys, metric_key_prefix))
        if self.evaluators:
            model = self.accelerator.unwrap_model(self.model)
            extra: dict[str, float] = {}
            # Probes run on the main process (features of a held-out split); others wait for the result.
            if self.is_world_process_zero():
                for evaluator in self.evaluators:
                    extra.update(evaluator(model))
            extra = _broadcast_object(extra)
            extra = {f"{metric_key_prefix}_{name}": value for name, value in extra.items()}
            self.log(dict(extra))
            self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, extra)
            metrics.update(extra)
        return metrics


def check_streamed_run(args: TrainingArguments) -> None:
    """A stream has no length: the run's length is ``max_steps``, which must be set."""
    if args.max_steps is None or args.max_steps <= 0:
        raise UsageError("a streamed training dataset has no length, so epochs cannot be counted: set --max_steps "
                         "(e.g. --max_steps 10000)")


def _synchronise_batch_norm(model: torch.nn.Module, args: TrainingArguments) -> None:
    """BatchNorm in heads (DINO's ResNet setting, SimCLR, BYOL) must see the global batch, as in the papers: convert it
    to SyncBatchNorm (in place) when several CUDA processes train. SyncBatchNorm has no CPU kernel, so CPU runs keep
    per-process statistics and say so."""
    if args.world_size <= 1 or not has_batch_norm(model):
        return
    if args.device.type == "cuda":
        torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        logger.info("BatchNorm layers converted to SyncBatchNorm for %d processes", args.world_size)
    else:
        logger.warning(
            "BatchNorm statistics are computed per process on CPU (SyncBatchNorm needs CUDA): with %d processes the "
            "run is not identical to one process with the %d-times batch.", args.world_size, args.world_size
        )


def _view_transform(dataset):
    format_ = getattr(dataset, "format", None) or {}
    return (format_.get("format_kwargs") or {}).get("transform")


def _broadcast_object(value):
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        holder = [value]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]
    return value


def load_full_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a full (unsharded) state dict into ``model``, strictly. A model sharded with FSDP2 (DTensor parameters)
    takes it through ``torch.distributed.checkpoint``, which scatters each full tensor to the local shards (a plain
    ``load_state_dict`` cannot copy a tensor into a DTensor)."""
    if not any(isinstance(parameter, DTensor) for parameter in model.parameters()):
        model.load_state_dict(state, strict=True)
        return
    expected = set(model.state_dict())
    if set(state) != expected:
        raise RuntimeError(f"the checkpoint does not match the model: missing {sorted(expected - set(state))}, "
                           f"unexpected {sorted(set(state) - expected)}")
    set_model_state_dict(model, dict(state), options=StateDictOptions(full_state_dict=True))
