"""Exponential moving average ("momentum") teachers, written once for every teacher-student method.

The teacher is a copy of the student whose parameters follow ``teacher = m * teacher + (1 - m) * student`` after each
optimizer step (Tarvainen & Valpola 2017; He et al. 2020 MoCo; Grill et al. 2020 BYOL; Caron et al. 2021 DINO).
The teacher never requires gradients, so it stays out of the optimizer and DDP's gradient synchronisation.

Sharded models: under FSDP2 (``fully_shard``) teacher and student parameters are DTensors sharded alike (same shapes,
same mesh), so the update runs on each process's local shards with no communication. Under DeepSpeed ZeRO-3 a
parameter is empty outside the forward pass (its partition lives in DeepSpeed's own storage): the update gathers the
parameters with DeepSpeed's ``GatheredParameters`` and re-partitions them after, as DeepSpeed documents for code that
modifies partitioned weights.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import torch
from torch import nn


def make_teacher(student: nn.Module) -> nn.Module:
    """A frozen deep copy of ``student`` (same weights, ``requires_grad=False``)."""
    teacher = copy.deepcopy(student)
    freeze(teacher)
    return teacher


def freeze(module: nn.Module) -> None:
    for parameter in module.parameters():
        parameter.requires_grad_(False)


@torch.no_grad()
def copy_weights_(teacher: nn.Module, student: nn.Module) -> None:
    """Make ``teacher`` equal to ``student`` (parameters and floating-point buffers)."""
    with _zero3_gathered(teacher, student):
        for target, source in zip(_tensors(teacher), _tensors(student), strict=True):
            target.copy_(source)


@torch.no_grad()
def ema_update_(teacher: nn.Module, student: nn.Module, momentum: float, *, include_buffers: bool = False) -> None:
    """``teacher = momentum * teacher + (1 - momentum) * student`` for every parameter, in one fused
    ``torch._foreach_lerp_(teacher, student, 1 - momentum)`` (the same average written as
    ``teacher + (1 - momentum) * (student - teacher)``: one pass reading both and writing the teacher, where a
    ``_foreach_mul_`` then ``_foreach_add_`` pair reads and writes the teacher twice; the optimizers' own foreach
    paths update Adam's moving averages the same way).

    ``include_buffers=False`` (the self-supervised teachers): buffers (BatchNorm statistics) are left to the teacher's
    own forward passes, as in DINO's reference code. ``include_buffers=True`` (Mean Teacher, the evaluation EMA of
    FixMatch): floating-point buffers are averaged the same way and the others (``num_batches_tracked``) copied, as
    timm's ``ModelEmaV2`` averages the whole state dict: a teacher that never runs in training mode then still has
    BatchNorm statistics that match its weights.
    """
    with _zero3_gathered(teacher, student):
        _ema_update(teacher, student, momentum, include_buffers)


def _ema_update(teacher: nn.Module, student: nn.Module, momentum: float, include_buffers: bool) -> None:
    teacher_params = list(teacher.parameters())
    student_params = [p.detach() for p in student.parameters()]
    if len(teacher_params) != len(student_params):
        raise ValueError("teacher and student have different parameter lists; build the teacher with make_teacher")
    if include_buffers:
        teacher_buffers, student_buffers = list(teacher.buffers()), list(student.buffers())
        if len(teacher_buffers) != len(student_buffers):
            raise ValueError("teacher and student have different buffers; build the teacher with make_teacher")
        for target, source in zip(teacher_buffers, student_buffers):
            if target.is_floating_point():
                teacher_params.append(target)
                student_params.append(source.detach())
            else:
                target.copy_(source)
    torch._foreach_lerp_(teacher_params, student_params, 1.0 - momentum)


@contextlib.contextmanager
def _zero3_gathered(*modules: nn.Module) -> Iterator[None]:
    """Gathers the DeepSpeed ZeRO-3 partitioned parameters of ``modules`` (those with a ``ds_id``) for the body, then
    re-partitions them with the main process's values (``GatheredParameters(modifier_rank=0)``). Nothing to do for
    whole tensors and FSDP2's DTensors."""
    partitioned = [p for module in modules for p in module.parameters() if hasattr(p, "ds_id")]
    if not partitioned:
        yield
        return
    import deepspeed  # only models that DeepSpeed partitioned get here, so it is installed

    with deepspeed.zero.GatheredParameters(partitioned, modifier_rank=0):
        yield


def _tensors(module: nn.Module) -> list[torch.Tensor]:
    return list(module.parameters()) + [b for b in module.buffers() if b.is_floating_point()]
