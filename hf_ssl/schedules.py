"""Where training stands (:class:`TrainingProgress`), and per-step schedules as pure functions of the optimizer step.

Being functions of ``step`` (not stateful objects) is what makes resuming exact: after ``resume_from_checkpoint`` the
trainer's ``global_step`` is restored and every schedule value follows from it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def cosine_schedule(step: int, total_steps: int, start: float, end: float) -> float:
    """Cosine interpolation from ``start`` (step 0) to ``end`` (step ``total_steps``), constant afterwards.

    DINO / BYOL use it for the teacher momentum (0.996 -> 1) and weight decay (0.04 -> 0.4), Caron et al. 2021 §3.
    """
    if total_steps <= 0:
        return end
    progress = min(max(step / total_steps, 0.0), 1.0)
    return end - (end - start) * (math.cos(math.pi * progress) + 1) / 2


def weight_decay_schedule(step: int, total_steps: int, start: float, end: float | None) -> float:
    """The weight decay of optimizer step ``step``: :func:`cosine_schedule` from ``start`` to ``end``, or ``start``
    throughout when ``end`` is ``None`` (a constant weight decay).

    DINO raises the weight decay of its weights (not of biases and norms) from 0.04 to 0.4 over training
    (Caron et al. 2021, arXiv:2104.14294, Appendix "Implementation details").
    """
    return start if end is None else cosine_schedule(step, total_steps, start, end)


def linear_warmup(step: int, warmup_steps: int, start: float, end: float) -> float:
    """Linear ramp from ``start`` to ``end`` over ``warmup_steps``, then ``end`` (DINO's teacher temperature)."""
    if warmup_steps <= 0 or step >= warmup_steps:
        return end
    return start + (end - start) * step / warmup_steps


@dataclass(frozen=True)
class TrainingProgress:
    """Where training stands, as the trainer knows it.

    step: optimizer steps completed (0 before the first update); max_steps: the run's total; steps_per_epoch:
    optimizer steps per epoch; global_batch_size: examples per optimizer step over all processes and accumulation
    steps (``None`` when unknown).
    """

    step: int
    max_steps: int
    steps_per_epoch: int
    global_batch_size: int | None = None

    @property
    def epoch(self) -> float:
        return self.step / max(self.steps_per_epoch, 1)
