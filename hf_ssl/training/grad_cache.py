"""Gradient caching: a contrastive batch larger than memory allows, with the loss and gradients of the big batch (Gao
et al. 2021, "Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup", arXiv:2101.06983; the
"GradCache" of sentence-transformers' CachedMultipleNegativesRankingLoss).

An in-batch-negative loss couples every row of the batch through the embeddings only, so its gradient factorises
(Gao et al. §3.2): ``dL/dtheta = sum_i dL/df(x_i) . df(x_i)/dtheta``. One step is three passes:

1. embed the batch chunk by chunk without a graph (``torch.no_grad``): only the ``(batch, dim)`` embeddings stay;
2. compute the loss on all the embeddings at once and back-propagate it to the embeddings (and to the parameters the
   loss itself holds: a projection head, a temperature), caching ``dL/df(x_i)``;
3. embed each chunk again, with a graph, and back-propagate the cached gradient of its rows
   (``embeddings.backward(cached_grad)``), freeing the chunk's activations before the next one.

Activation memory is that of one chunk, not of the batch, for about one more forward pass of compute. The random
state (dropout, stochastic depth) of each chunk's first pass is saved and replayed in its second (Gao et al.'s
``RandContext``), so both passes compute the same function and the gradients are exactly those of the loss reported.

What a method provides (SimCLR, Sentence-BERT, CLIP-style): ``embed(**inputs) -> dict[str, Tensor]``, the per-row
part of its ``forward`` (every tensor ``(rows, ...)``, rows independent of each other), and
``loss_from_embeddings(embeddings, **inputs) -> ModelOutput``, the batch-coupled rest; its ``forward`` is the two in
sequence, so gradient caching computes the same maths. A BatchNorm layer that runs in the chunked pass would compute
per-chunk statistics: it is refused (SimCLR keeps its BatchNorm projection head in ``loss_from_embeddings``, where
it sees the whole batch, so SimCLR with a ViT encoder is exact; a ResNet encoder is refused).

Across processes: the loss gathers the embeddings of every process with gradients, so step 2 caches the gradient of
the sum of all processes' losses; DDP's own gradient hooks are bypassed (the passes call the unwrapped model) and
:func:`average_gradients` averages the gradients over processes once per optimizer step, as DDP would have.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn
from torch.utils.checkpoint import get_device_states, set_device_states
from transformers.utils import ModelOutput

from ..distributed import is_distributed, world_size


def supports_gradient_cache(model: nn.Module) -> bool:
    """Whether ``model`` splits its ``forward`` into ``embed`` and ``loss_from_embeddings``."""
    return callable(getattr(model, "embed", None)) and callable(getattr(model, "loss_from_embeddings", None))


def check_gradient_cache_support(model: nn.Module) -> None:
    """Raise a one-line error naming the fix when ``model`` cannot be trained with gradient caching."""
    if not supports_gradient_cache(model):
        raise ValueError(
            f"gradient_cache_chunk_size needs a method whose loss couples the batch through its embeddings only "
            f"(SimCLR, Sentence-BERT, CLIP-style: they define embed and loss_from_embeddings); "
            f"{type(model).__name__} does not. Unset gradient_cache_chunk_size (use gradient_accumulation_steps)."
        )
    settings = getattr(model, "method_config", None)
    if getattr(settings, "auxiliary_rotation_weight", 0):  # its loss is a forward hook, which the chunked passes skip
        raise ValueError(
            "gradient_cache_chunk_size cannot add the auxiliary rotation loss (it is computed in forward, which gradient "
            "caching bypasses): set auxiliary_rotation_weight to 0 or unset gradient_cache_chunk_size"
        )


def split_rows(inputs: dict, chunk_size: int) -> list[dict]:
    """The batch ``inputs`` cut into chunks of at most ``chunk_size`` rows: every tensor with a first dimension is
    sliced along it (all must have the same number of rows); 0-d tensors and other values go to every chunk."""
    if chunk_size < 1:
        raise ValueError(f"gradient_cache_chunk_size must be a positive number of rows, got {chunk_size}")
    rows = {name: value.shape[0] for name, value in inputs.items() if isinstance(value, torch.Tensor) and value.dim()}
    if not rows:
        raise ValueError("gradient caching found no batch tensor to split in the inputs")
    if len(set(rows.values())) > 1:
        raise ValueError(
            f"gradient caching splits every batch tensor along its first dimension, which must be the batch; got "
            f"{rows}"
        )
    batch = next(iter(rows.values()))
    return [
        {name: value[start:start + chunk_size] if name in rows else value for name, value in inputs.items()}
        for start in range(0, batch, chunk_size)
    ]


class RandomState:
    """The CPU random state and that of the accelerator devices holding ``tensors``, taken now and replayed later
    (Gao et al.'s ``RandContext``; the helpers are those of ``torch.utils.checkpoint``, which replays its
    recomputation the same way): dropout masks drawn inside :meth:`replay` are those drawn after the capture."""

    def __init__(self, tensors: list[torch.Tensor]):
        self.device_type = next((t.device.type for t in tensors if t.device.type != "cpu"), "cuda")
        self.cpu_state = torch.get_rng_state()
        self.devices, self.device_states = get_device_states(*tensors)

    @contextlib.contextmanager
    def replay(self) -> Iterator[None]:
        """Run the block from the captured states; the states after it are those before it (``fork_rng``)."""
        with torch.random.fork_rng(devices=sorted(set(self.devices)), device_type=self.device_type):
            torch.set_rng_state(self.cpu_state)
            set_device_states(self.devices, self.device_states, device_type=self.device_type)
            yield


@contextlib.contextmanager
def refuse_batch_norm(model: nn.Module) -> Iterator[None]:
    """Raise if a BatchNorm layer in training mode runs inside the block (the chunked pass): its statistics would
    be those of a chunk, not of the batch."""

    def refuse(module: nn.Module, args) -> None:
        if module.training:
            name = next(name for name, candidate in model.named_modules() if candidate is module)
            raise ValueError(
                f"gradient caching embeds the batch in chunks, but the BatchNorm layer {name!r} runs in "
                f"{type(model).__name__}.embed: its statistics would be per chunk. Use an encoder without BatchNorm "
                "(a ViT) or unset gradient_cache_chunk_size."
            )

    hooks = [
        module.register_forward_pre_hook(refuse)
        for module in model.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)
    ]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()


def gradient_cached_backward(
    model: nn.Module,
    inputs: dict,
    chunk_size: int,
    backward: Callable[[torch.Tensor], None] = torch.Tensor.backward,
    forward_context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> ModelOutput:
    """One forward and backward of ``model`` on the batch ``inputs`` with the activations of ``chunk_size`` rows at a
    time; the gradients accumulated into the parameters are those of ``backward(model(**inputs).loss)``.

    Args:
        model: the unwrapped method (``embed`` / ``loss_from_embeddings``, see the module docstring).
        inputs: the batch, every tensor ``(batch, ...)`` (as ``forward`` takes it).
        chunk_size: rows embedded at once.
        backward: back-propagates the loss (the trainer's scales it for gradient accumulation and mixed precision);
            whatever it multiplies the loss by reaches the cached gradients, hence every parameter.
        forward_context: entered around each forward computation (the trainer's autocast).

    Returns:
        ``loss_from_embeddings``'s output, its loss detached (not scaled by ``backward``).
    """
    check_gradient_cache_support(model)
    chunks = split_rows(inputs, chunk_size)
    states, pieces = [], []
    with torch.no_grad(), refuse_batch_norm(model):  # 1. embeddings without a graph
        for chunk in chunks:
            states.append(RandomState([value for value in chunk.values() if isinstance(value, torch.Tensor)]))
            with forward_context():
                pieces.append(model.embed(**chunk))
    embeddings = {
        key: torch.cat([piece[key] for piece in pieces]).requires_grad_(pieces[0][key].is_floating_point())
        for key in pieces[0]
    }
    with forward_context():  # 2. the loss on the whole batch, back-propagated to the embeddings
        output = model.loss_from_embeddings(embeddings, **inputs)
    backward(output.loss)
    cached = {key: embedding.grad for key, embedding in embeddings.items()}
    offsets = dict.fromkeys(cached, 0)
    for chunk, state, piece in zip(chunks, states, pieces):  # 3. each chunk again, with its cached gradient
        with state.replay(), forward_context():
            recomputed = model.embed(**chunk)
        tensors, gradients = [], []
        for key, tensor in recomputed.items():
            rows, start = piece[key].shape[0], offsets[key]
            offsets[key] = start + rows
            if cached[key] is not None and tensor.requires_grad:
                tensors.append(tensor)
                gradients.append(cached[key][start:start + rows])
        if tensors:
            torch.autograd.backward(tensors, gradients)
    output.loss = output.loss.detach()
    return output


@torch.no_grad()
def average_gradients(model: nn.Module, bucket_elements: int = 2**24) -> None:
    """Average the parameters' gradients over the processes (what DDP's hooks do, here once per optimizer step), in
    flat buckets of at most ``bucket_elements`` per all-reduce. One process: nothing to do."""
    if not is_distributed():
        return
    groups: dict[tuple, list[torch.Tensor]] = {}
    for parameter in model.parameters():
        if parameter.grad is not None:
            groups.setdefault((parameter.grad.dtype, parameter.grad.device), []).append(parameter.grad)
    for gradients in groups.values():
        buckets, size = [[]], 0
        for gradient in gradients:
            if buckets[-1] and size + gradient.numel() > bucket_elements:
                buckets.append([])
                size = 0
            buckets[-1].append(gradient)
            size += gradient.numel()
        for bucket in buckets:
            flat = torch.cat([gradient.reshape(-1) for gradient in bucket])
            torch.distributed.all_reduce(flat)
            flat /= world_size()
            offset = 0
            for gradient in bucket:
                gradient.copy_(flat[offset:offset + gradient.numel()].view_as(gradient))
                offset += gradient.numel()


def gradient_cached_training_step(trainer, model: nn.Module, inputs: dict) -> torch.Tensor:
    """``Trainer.training_step`` with gradient caching in chunks of ``trainer.args.gradient_cache_chunk_size`` rows.

    The micro-batch (``per_device_train_batch_size`` rows per process) is the contrastive batch: its in-batch
    negatives are all its rows on every process, and its gradients are those of the plain step. Gradient
    accumulation keeps its meaning: each micro-batch's loss (its own negatives only) is divided by the accumulation
    steps and the gradients add up; the average over processes happens at the optimizer step. One process or DDP;
    DeepSpeed, FSDP and ``DataParallel`` are refused. Returns the loss divided by the accumulation steps, detached.
    """
    check_gradient_cache_setup(trainer)
    unwrapped = trainer.accelerator.unwrap_model(model)
    model.train()
    if hasattr(trainer.optimizer, "train") and callable(trainer.optimizer.train):
        trainer.optimizer.train()
    inputs = trainer._forward_inputs(trainer._prepare_inputs(inputs))
    steps = trainer.current_gradient_accumulation_steps

    def backward(loss: torch.Tensor) -> None:
        trainer.accelerator.backward(loss / steps)  # the fp16 gradient scaler, when there is one

    with trainer.compute_loss_context_manager():
        output = gradient_cached_backward(
            unwrapped, inputs, trainer.args.gradient_cache_chunk_size, backward, trainer.accelerator.autocast
        )
    trainer.record_diagnostics({key: value for key, value in output.items() if key != "loss"})
    if trainer.accelerator.sync_gradients:
        average_gradients(unwrapped)
    return output.loss / steps


def check_gradient_cache_setup(trainer) -> None:
    """Refuse the setups gradient caching does not support (see :func:`gradient_cached_training_step`)."""
    check_gradient_cache_support(trainer.accelerator.unwrap_model(trainer.model))
    kind = trainer.accelerator.distributed_type.value
    if kind in ("DEEPSPEED", "FSDP", "MEGATRON_LM", "XLA") or trainer.args.n_gpu > 1:
        raise ValueError(
            f"gradient_cache_chunk_size works on one process or with DDP (torchrun, accelerate launch --multi_gpu), "
            f"not with {kind if trainer.args.n_gpu <= 1 else 'DataParallel over several GPUs'}; unset it"
        )
