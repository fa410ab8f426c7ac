"""Stopping on SIGINT / SIGTERM without losing the run: finish the step, save a checkpoint, exit non-zero.

``transformers.Trainer`` dies on Ctrl-C (SIGINT: ``KeyboardInterrupt``) or on a scheduler's SIGTERM (SLURM, Kubernetes
and ``torchrun`` send it before SIGKILL) with everything since the last checkpoint lost; its opt-in
``enable_jit_checkpoint`` handles SIGTERM only, saves after a fixed wait, and ends the run as if it had finished.
While :class:`hf_ssl.training.trainer.SSLTrainer` trains, :class:`GracefulInterruption` instead

1. notes the signal (``signal.signal`` handlers, installed for the duration of ``train()`` in the main thread, the
   previous ones restored afterwards; a signal the process ignores stays ignored);
2. at the end of the current optimizer step, makes every process agree (a signal may reach one rank first) and asks
   Trainer to save a checkpoint (atomically, :mod:`hf_ssl.training.checkpoints`) and stop;
3. once ``train()`` returns, raises :class:`TrainingInterrupted` (SIGINT: a ``KeyboardInterrupt``, exit status 130 from
   ``hf-ssl``) or :class:`TrainingTerminated` (SIGTERM: ``SystemExit(143)``), so that nothing treats the run as
   finished: no final model, evaluation or card is written, and ``--resume_from_checkpoint true`` continues it
   exactly where it stopped.

The same signal a second time stops at once (the previous handler's behaviour), for a save that takes too long.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from transformers import TrainerCallback

#: The signals that stop a run gracefully.
HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on SIGINT after saving a checkpoint; ``hf-ssl`` exits with status 130 (128 + SIGINT)."""

    exit_status = 128 + signal.SIGINT


class TrainingTerminated(SystemExit):
    """Training stopped on SIGTERM after saving a checkpoint; the process exits with status 143 (128 + SIGTERM)."""

    exit_status = 128 + signal.SIGTERM

    def __init__(self, message: str):
        super().__init__(self.exit_status)
        self.message = message

    def __str__(self) -> str:
        return self.message


class GracefulInterruption(TrainerCallback):
    """The callback that turns SIGINT / SIGTERM into "save a checkpoint at the end of this step, then stop".

    Args:
        agree: ``signal number -> signal number``: the largest over the processes (an all-reduce with ``max``; 0: none
            received), so that every process stops at the same step on the same signal; the identity for one process.
        signals: the signals handled (default :data:`HANDLED_SIGNALS`).
    """

    def __init__(self, agree: Callable[[bool], bool], signals: tuple[int, ...] = HANDLED_SIGNALS):
        self.agree = agree
        self.signals = tuple(signals)
        self.received: int | None = None  # the signal this process got, if any
        self.stopped_by: int | None = None  # the signal the processes stopped on, once they agreed
        self._previous: dict[int, object] = {}

    @contextmanager
    def installed(self) -> Iterator[GracefulInterruption]:
        """Handle :attr:`signals` inside the ``with`` block (training), then put the previous handlers back. Outside the
        main thread, where Python cannot set handlers, nothing is installed."""
        self.received = self.stopped_by = None
        if threading.current_thread() is threading.main_thread():
            for number in self.signals:
                previous = signal.getsignal(number)
                if previous is signal.SIG_IGN or previous is None:  # ignored (nohup, a background job): stays so
                    continue
                self._previous[number] = previous
                signal.signal(number, self._handle)
        try:
            yield self
        finally:
            self._restore()
            if self.received is not None and self.stopped_by is None:
                # It came after the last step (the final save): what it would have done without this handler.
                os.kill(os.getpid(), self.received)

    def _handle(self, number: int, frame) -> None:
        if self.received is not None:  # again: the user insists, stop at once as without this handler
            previous = self._previous.get(number, signal.SIG_DFL)
            self._restore()
            if callable(previous):
                previous(number, frame)
            elif previous == signal.SIG_DFL:
                os.kill(os.getpid(), number)
            return
        self.received = number
        os.write(2, (f"\n{signal.Signals(number).name} received: finishing this step, saving a checkpoint, then "
                     "stopping (send it again to stop at once, without saving)\n").encode())

    def _restore(self) -> None:
        for number, previous in self._previous.items():
            signal.signal(number, previous)
        self._previous.clear()

    def on_step_end(self, args, state, control, **kwargs):
        if self.stopped_by is not None:
            return control
        number = self.agree(self.received or 0)
        if number:
            self.stopped_by = number
            control.should_save = True
            control.should_training_stop = True
        return control

    def raise_if_stopped(self, checkpoint: str, announce: bool = True) -> None:
        """After ``train()``: raise :class:`TrainingInterrupted` / :class:`TrainingTerminated` if a signal stopped it,
        naming ``checkpoint`` (the one just saved) and how to resume it; ``announce``: also print that on stderr (the
        main process)."""
        if self.stopped_by is None:
            return
        message = (f"training stopped on {signal.Signals(self.stopped_by).name} after saving {checkpoint}; resume with "
                   "--resume_from_checkpoint true (Trainer.train(resume_from_checkpoint=True))")
        if announce:
            print(message, file=sys.stderr, flush=True)
        if self.stopped_by == signal.SIGINT:
            raise TrainingInterrupted(message)
        raise TrainingTerminated(message)
