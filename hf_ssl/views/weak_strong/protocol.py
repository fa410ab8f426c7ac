"""The interface of weak and strong views (FixMatch, UDA, Mean Teacher, Π-model, pseudo-labelling), and the caller's
side of its determinism contract, written once (:func:`draw_view`).

A semi-supervised trainer sees one object per modality through :class:`WeakStrongViews`: it reads
``input_columns`` from each example, asks for ``weak`` and/or ``strong`` augmented forms, one example at a time, and
turns a batch of them into the model's inputs with ``collate``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from ...data.streams import VIEW_NAMES, draw_view  # noqa: F401  (the seeding rule lives with the loader)


@runtime_checkable
class WeakStrongViews(Protocol):
    """Weak and strong views of one modality.

    ``input_columns``: the dataset columns read, e.g. ``("image",)``, ``("text",)``, ``("premise", "hypothesis")``.
    ``weak(value, rng)`` / ``strong(value, rng)``: one example's content -> its augmented form. ``value`` is the
    column's value for one input column (a PIL image, a str, an audio entry), a tuple of values, in
    ``input_columns`` order, for several (a sentence pair).
    ``collate(values)``: augmented forms of a batch -> the inputs of a transformers classifier
    (``pixel_values``; ``input_ids``/``attention_mask``(/``token_type_ids``); ``input_values``/``attention_mask``).

    Determinism: the caller seeds ``rng`` per example and view and, inside :func:`torch.random.fork_rng`, torch's
    global generator with a seed drawn from the same example (torchvision v2 transforms draw from it); implementations
    draw everything else from ``rng``, never from Python's ``random`` or numpy's global state. :func:`draw_view`
    does exactly this.
    """

    input_columns: tuple[str, ...]

    def weak(self, value: Any, rng: np.random.Generator) -> Any: ...

    def strong(self, value: Any, rng: np.random.Generator) -> Any: ...

    def collate(self, values: list[Any]) -> dict[str, torch.Tensor]: ...


def check_columns(input_columns: tuple[str, ...], column_names: Iterable[str], hint: str) -> None:
    """Fail fast when the dataset lacks a column the views read; ``hint`` names the fix for this modality."""
    column_names = list(column_names)
    missing = [name for name in input_columns if name not in column_names]
    if missing:
        raise ValueError(f"the dataset has no column {', '.join(map(repr, missing))} (columns: {column_names}); {hint}")


def split_value(value: Any, input_columns: tuple[str, ...]) -> tuple[Any, ...]:
    """The values of one example as a tuple in ``input_columns`` order: ``(value,)`` for one column, ``value`` itself
    (a tuple or list of that many values) for several. Refuses a value whose arity does not match the columns."""
    count = len(input_columns)
    if count == 1:
        if isinstance(value, tuple):
            raise ValueError(
                f"got a tuple of {len(value)} values but these views read one column {input_columns}: pass the "
                "column's value itself, or name every column the tuple holds in `input_columns=`"
            )
        return (value,)
    if not isinstance(value, (tuple, list)) or len(value) != count:
        got = f"a {type(value).__name__}" if not isinstance(value, (tuple, list)) else f"{len(value)} values"
        raise ValueError(
            f"these views read {count} columns {input_columns} and take a tuple of {count} values per example, got "
            f"{got}: pass (value of {input_columns[0]!r}, ...) in that order, or set `input_columns=` to the columns "
            "the data has"
        )
    return tuple(value)
