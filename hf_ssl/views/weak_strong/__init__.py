"""Weak and strong views for semi-supervised learning (FixMatch, UDA, Mean Teacher, Π-model, pseudo-labelling), one
class per modality behind one interface, :class:`WeakStrongViews`:

- images: :class:`ImageWeakStrongViews` (FixMatch: flip + translate; RandAugment + Cutout), :mod:`.image`;
- text: :class:`TextWeakStrongViews` (EDA swap or word dropout; UDA's TF-IDF word replacement), :mod:`.text`,
  :mod:`.tfidf`;
- audio: :class:`AudioWeakStrongViews` (gain, noise, shift; SpecAugment-style masks on the waveform), :mod:`.audio`.

:func:`draw_view` is the caller's side of the determinism contract: one seed per (example, view) seeds both ``rng``
and torch's global generator.
"""

from .audio import AudioWeakStrongConfig, AudioWeakStrongViews
from .image import ImageWeakStrongConfig, ImageWeakStrongViews
from .protocol import WeakStrongViews, draw_view
from .text import TextWeakStrongConfig, TextWeakStrongViews
from .tfidf import TfIdfTable, fit_idf

__all__ = [
    "AudioWeakStrongConfig",
    "AudioWeakStrongViews",
    "ImageWeakStrongConfig",
    "ImageWeakStrongViews",
    "TextWeakStrongConfig",
    "TextWeakStrongViews",
    "TfIdfTable",
    "WeakStrongViews",
    "draw_view",
    "fit_idf",
]
