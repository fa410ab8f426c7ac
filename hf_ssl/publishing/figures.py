"""The figures of a model card: the training curves (every scalar the Trainer logged, one panel each, against the
step), and the captions of the figures jobs save in the run folder (:func:`figure_caption`).

Reads ``trainer_state.json``'s ``log_history`` (a list of dicts, one per logging event, each with ``step``): training
loss, learning rate, the method's diagnostics that :class:`hf_ssl.training.trainer.SSLTrainer` logs (teacher entropy,
KL, momentum, temperature, ...) and evaluation metrics (``eval_knn_top1``, ``eval_loss``). Run summaries logged once at
the end (``train_runtime``, ``train_loss``, ...) are left out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

#: Keys of the end-of-training summary and of bookkeeping, not curves.
SUMMARY_KEYS = frozenset({
    "step", "epoch", "train_runtime", "train_samples_per_second", "train_steps_per_second", "train_loss",
    "total_flos", "eval_runtime", "eval_samples_per_second", "eval_steps_per_second", "num_input_tokens_seen",
})
#: Panels shown first, in this order; the rest follow alphabetically.
LEADING_KEYS = ("loss", "eval_loss", "learning_rate")
#: Captions of the figures jobs save at the top of a run folder, by file name.
FIGURE_CAPTIONS = {
    "attention_maps.png": "Self-attention of the published encoder's last layer: the CLS token's attention to each "
    "patch, one heat map per head, on held-out images (as in Caron et al. 2021, Figs. 1 and 3).",
    "reconstructions.png": "Held-out images, their masked version, and the model's reconstruction of the masked "
    "patches (visible patches shown as they are).",
}


def figure_caption(name: str) -> str:
    """The card caption of a figure file: :data:`FIGURE_CAPTIONS`, else its name in words ("my_plot.png" ->
    "My plot.")."""
    return FIGURE_CAPTIONS.get(name) or Path(name).stem.replace("_", " ").capitalize() + "."


def curves_from_log_history(log_history: Sequence[dict]) -> dict[str, tuple[list[float], list[float]]]:
    """``{name: (steps, values)}`` for every numeric key logged at least once (NaN/inf dropped)."""
    curves: dict[str, tuple[list[float], list[float]]] = {}
    for entry in log_history:
        step = entry.get("step")
        if step is None:
            continue
        for name, value in entry.items():
            if name in SUMMARY_KEYS or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if not math.isfinite(value):
                continue
            steps, values = curves.setdefault(name, ([], []))
            steps.append(float(step))
            values.append(float(value))
    ordered = [name for name in LEADING_KEYS if name in curves] + sorted(set(curves) - set(LEADING_KEYS))
    return {name: curves[name] for name in ordered}


def plot_training_curves(log_history: Sequence[dict], path: str | Path, title: str = "") -> Path | None:
    """Draw :func:`curves_from_log_history` as a grid of small panels (matplotlib, Agg backend) into ``path``.

    Returns the path, or ``None`` when nothing was logged (then no file is written).
    """
    curves = curves_from_log_history(log_history)
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    columns = min(3, len(curves))
    rows = math.ceil(len(curves) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.0 * columns, 2.8 * rows), squeeze=False)
    for axis, (name, (steps, values)) in zip(axes.flat, curves.items()):
        axis.plot(steps, values, marker="o" if len(steps) < 20 else None, markersize=3, linewidth=1.2)
        axis.set_title(name, fontsize=10)
        axis.set_xlabel("optimizer step", fontsize=8)
        axis.tick_params(labelsize=8)
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(curves):]:
        axis.set_visible(False)
    if title:
        figure.suptitle(title, fontsize=11)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
