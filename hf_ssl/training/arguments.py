"""``SSLTrainingArguments``: ``TrainingArguments`` with the defaults self-supervised training needs."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import TrainingArguments

#: ``--gradient_clipping``: one norm over all gradients (transformers), or one per parameter (DINO).
GRADIENT_CLIPPING_MODES = ("global", "per_parameter")


def batch_size_across_processes(args: TrainingArguments) -> int:
    """Examples in one forward pass summed over the data-parallel processes: the batch in which in-batch negatives
    are drawn (``per_device_train_batch_size x world_size``)."""
    return args.per_device_train_batch_size * args.world_size


def global_batch_size(args: TrainingArguments) -> int:
    """Examples per optimizer step: ``per_device_train_batch_size x world_size x gradient_accumulation_steps``."""
    return batch_size_across_processes(args) * args.gradient_accumulation_steps


@dataclass
class SSLTrainingArguments(TrainingArguments):
    """``TrainingArguments`` with the defaults self-supervised pretraining needs.

    ``remove_unused_columns=False``: on-the-fly view transforms need the raw image column, which the model's forward
    does not name. ``dataloader_drop_last=True``: losses with batch statistics (DINO's centre, BatchNorm) and
    multi-process runs want equal, full batches. ``prediction_loss_only=True``: evaluation reports ``eval_loss`` (SSL
    models accept ``return_loss``) and the label-free probes; set it False with a ``compute_metrics`` to gather
    predictions. ``label_names`` is transformers' default: the model's ``labels`` argument when its forward has one
    (collators keep the labels of labelled data; models that do not name them never see them).
    ``ddp_find_unused_parameters=False``:
    every trainable parameter gets a gradient (the teacher has none), so DDP's extra graph traversal is wasted.
    ``overwrite_output_dir`` (``--overwrite``): the flag of transformers 4's example scripts, which transformers 5's
    ``TrainingArguments`` dropped; :func:`hf_ssl.training.output_dir.prepare_output_dir` applies it.
    ``weight_decay_end``: cosine-schedule the weight decay from ``weight_decay`` to this value over ``max_steps``
    (DINO's 0.04 -> 0.4, :mod:`hf_ssl.training.weight_decay`). ``gradient_clipping="per_parameter"``: clip each
    parameter's gradient to ``max_grad_norm`` separately, as DINO's reference code does
    (:mod:`hf_ssl.training.gradient_clipping`), instead of one norm over all of them. ``steady_cpu_allocator``: on a
    CPU, glibc keeps freed memory in the process, so a step's large activations are not faulted in again every step
    (:mod:`hf_ssl.training.allocator`).
    """

    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep all dataset columns (SSL default)."})
    dataloader_drop_last: bool = field(default=True, metadata={"help": "Drop the last incomplete batch."})
    prediction_loss_only: bool = field(default=True, metadata={"help": "Evaluation reports the loss only."})
    logging_steps: float = field(default=10, metadata={"help": "Log every N optimizer steps."})
    ddp_find_unused_parameters: bool | None = field(
        default=False,
        metadata={"help": "SSL models use every trainable parameter (frozen teachers have no gradients): skip DDP's "
                  "unused-parameter search. Set True for an encoder with unused parameters."},
    )
    dataloader_pin_memory: bool | None = field(
        default=None, metadata={"help": "Pin host memory for the dataloader (default: only when CUDA is used)."}
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"aliases": ["--overwrite"],
                  "help": "Replace the run that output_dir holds: its model, checkpoints, record, evaluation and card "
                  "are deleted before training (other files stay). Without it, hf-ssl refuses a folder that holds a "
                  "run; --resume_from_checkpoint continues that run instead."},
    )
    max_train_minutes: float | None = field(
        default=None,
        metadata={"help": "Stop after this many minutes of training steps (evaluation excluded) and save; the "
                  "schedules still follow max_steps. For budget-matched comparisons."},
    )

    weight_decay_end: float | None = field(
        default=None,
        metadata={"help": "Cosine-schedule the weight decay from weight_decay (first step) to this value (last of "
                  "max_steps), set every step on the parameters that decay (biases and norms stay at 0); DINO: 0.04 "
                  "-> 0.4. Unset: weight_decay throughout."},
    )
    gradient_clipping: str = field(
        default="global",
        metadata={"help": "How max_grad_norm clips: 'global' (one norm over all gradients, transformers' default) or "
                  "'per_parameter' (each parameter's gradient to max_grad_norm on its own: DINO's clip_gradients)."},
    )

    gradient_cache_chunk_size: int | None = field(
        default=None,
        metadata={"help": "Gradient caching (GradCache, Gao et al. 2021) for in-batch-negative losses (SimCLR, "
                  "Sentence-BERT, CLIP-style): embed the per-device batch this many rows at a time, so the contrastive "
                  "batch can exceed what fits in memory, with the same loss and gradients. Each accumulation "
                  "micro-batch stays one contrastive batch. Unset: one forward pass per micro-batch."},
    )
    steady_cpu_allocator: bool = field(
        default=True,
        metadata={"help": "On a CPU run under glibc, keep the memory each step frees in the process instead of "
                  "unmapping large activations and faulting them in again next step (mallopt: no mmap for large "
                  "blocks, no heap trimming; hf_ssl.training.allocator). The process keeps its peak heap. False: "
                  "glibc's defaults."},
    )

    def __getstate__(self):
        # Trainer pickles the arguments into every checkpoint (training_args.bin), and checkpoint pushes upload it:
        # a token given as --hub_token must not travel with them.
        state = self.__dict__.copy()
        if state.get("hub_token"):
            state["hub_token"] = None
        return state

    @property
    def global_batch_size(self) -> int:
        """Examples per optimizer step (:func:`global_batch_size`)."""
        return global_batch_size(self)

    @property
    def batch_size_across_processes(self) -> int:
        """Examples per forward pass over all processes (:func:`batch_size_across_processes`)."""
        return batch_size_across_processes(self)

    def __post_init__(self):
        if self.gradient_clipping not in GRADIENT_CLIPPING_MODES:
            raise ValueError(
                f"gradient_clipping must be one of {', '.join(GRADIENT_CLIPPING_MODES)}, got {self.gradient_clipping!r}"
            )
        if self.weight_decay_end is not None and self.weight_decay_end < 0:
            raise ValueError(f"weight_decay_end must be >= 0 (or unset for a constant weight decay), got "
                             f"{self.weight_decay_end}")
        if self.gradient_cache_chunk_size is not None and self.gradient_cache_chunk_size < 1:
            raise ValueError(f"gradient_cache_chunk_size must be a positive number of rows (e.g. 32), or unset; got "
                             f"{self.gradient_cache_chunk_size}")
        if self.dataloader_pin_memory is None:
            self.dataloader_pin_memory = torch.cuda.is_available() and not self.use_cpu
        super().__post_init__()
