"""Leaving a multi-process run cleanly.

A process that exits while it still holds a gloo process group can abort during interpreter shutdown: gloo's worker
threads still hold work objects whose tensors reach back into Python, and tearing them down then ends in
``terminate called without an active exception`` (SIGABRT) after a run that otherwise finished (pytorch issue
#190489; transformers' ``Trainer`` and accelerate leave the group to the script). The DDP / FSDP wrapper holds the
group too, so ``destroy_process_group`` alone is not enough while a trainer still references its prepared model.

Two ways out, both releasing the prepared model first and then the group:

- :func:`leave_process_group`: a process that needs no collective any more leaves now (the runner does this on the
  ranks other than 0 before rank 0 evaluates and publishes, and on every rank when a signal ends the run);
- :func:`leave_at_exit`: every trainer of a multi-process run is registered, and one ``atexit`` handler leaves the
  group while the interpreter is still whole, so a user's own script that never calls ``destroy_process_group``
  exits cleanly too.
"""

from __future__ import annotations

import atexit
import gc
import weakref

import torch

#: The trainers of multi-process runs that have not left yet (weak: a trainer the script dropped is not kept alive).
_open_trainers: weakref.WeakSet = weakref.WeakSet()
_exit_handler_registered = False


def _release_prepared_model(trainer) -> None:
    """Drop the trainer's and accelerate's references to the DDP / FSDP-wrapped model (which holds the group)."""
    trainer.accelerator.free_memory()
    trainer.model_wrapped = trainer.model = None


def leave_process_group(trainer) -> None:
    """End this process's part in a multi-process run now: release ``trainer``'s prepared model, then leave the group
    (``accelerator.end_training``). The trainer cannot train again afterwards."""
    _release_prepared_model(trainer)
    _open_trainers.discard(trainer)
    gc.collect()
    trainer.accelerator.end_training()


def leave_at_exit(trainer) -> None:
    """Register ``trainer`` (when this process is part of a group) so that the process leaves the group cleanly at
    exit, whether or not the script does it itself."""
    global _exit_handler_registered
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    _open_trainers.add(trainer)
    if not _exit_handler_registered:
        atexit.register(_leave_at_exit)
        _exit_handler_registered = True


def _leave_at_exit() -> None:
    for trainer in list(_open_trainers):
        _release_prepared_model(trainer)
    _open_trainers.clear()
    gc.collect()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
