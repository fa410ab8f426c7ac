"""The few collective operations SSL losses need, written once.

Losses call these unconditionally: outside ``torch.distributed`` (one process) they are identities, so the same code
runs under ``python``, ``torchrun`` and ``accelerate launch``.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """True inside an initialised process group with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def broadcast_object(value):
    """Process 0's ``value`` on every process (``torch.distributed.broadcast_object_list``; picklable objects); one
    process: ``value`` itself."""
    if not is_distributed():
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


@torch.no_grad()
def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all processes (in place and returned). No gradient flows through it."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` (``(n, ...)`` on every process) along dim 0 in rank order, keeping gradients.

    ``accelerator.gather`` carries no gradient; ``torch.distributed.nn.functional.all_gather`` does, so every process's
    loss back-propagates into the embeddings of every other process (needed for gathered negatives).
    Returns ``(world_size * n, ...)``.
    """
    if not is_distributed():
        return tensor
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(tensor), dim=0)


@torch.no_grad()
def all_gather_no_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` (``(n, ...)`` on every process) along dim 0 in rank order, without gradients.

    For keys of a momentum encoder (MoCo's queue, MoCo v3's gathered keys), which carry no gradient anyway. Every
    process must pass the same shape. One process: returns ``tensor`` detached. Returns ``(world_size * n, ...)``.
    """
    tensor = tensor.detach()
    if not is_distributed():
        return tensor
    gathered = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(gathered, tensor.contiguous())
    return torch.cat(gathered, dim=0)


def has_batch_norm(*modules: torch.nn.Module) -> bool:
    """Whether any of ``modules`` holds a BatchNorm layer (whose statistics are per process unless synchronised)."""
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for module in modules for m in module.modules())
