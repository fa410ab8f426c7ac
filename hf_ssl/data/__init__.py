"""Data: loaders per modality into one standard form, every collator, and samplers.

``images`` (``image`` + ``label``; a held-out split for folders without one), ``image_decoding`` (every image
mode to RGB, unreadable files named), ``text`` (documents, tokenizers), ``tables`` (the text columns of a table),
``pairs`` (sentence pairs and image-caption pairs), ``sequences`` (masked-LM / SOP / NSP training sequences),
``audio`` (decoding, resampling, audio folders), ``collators`` (every batch builder, labels kept), ``samplers``,
``sources`` (datasets named by Hub id; local copies found through ``HF_SSL_DATA_DIR``).
"""

from .audio import load_audio_dataset
from .collators import (
    AudioCollator,
    ImageCaptionCollator,
    MaskedLMCollator,
    SentenceTupleCollator,
    stack_views,
)
from .image_decoding import UnreadableImageError, to_rgb
from .images import load_image_dataset, load_image_splits
from .pairs import load_pairs, load_sts_benchmark
from .samplers import NoDuplicatesSampler
from .sources import DatasetNotAvailableError, hub_id_for, resolve_dataset
from .text import load_text_documents

__all__ = [
    "AudioCollator",
    "DatasetNotAvailableError",
    "ImageCaptionCollator",
    "MaskedLMCollator",
    "NoDuplicatesSampler",
    "SentenceTupleCollator",
    "UnreadableImageError",
    "hub_id_for",
    "load_audio_dataset",
    "load_image_dataset",
    "load_image_splits",
    "load_pairs",
    "load_sts_benchmark",
    "load_text_documents",
    "resolve_dataset",
    "stack_views",
    "to_rgb",
]
