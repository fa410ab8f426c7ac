"""The pretraining view of an utterance: decoded, resampled and randomly cropped, seeded per example."""

from __future__ import annotations

import math

import numpy as np

from ..data.audio import load_waveform
from ..data.collators import VIEW_SEED
from .seeding import INDEX_COLUMN, example_seed


class AudioCropTransform:
    """The pretraining "view" of an utterance: decoded, resampled to ``sampling_rate``, randomly cropped to at most
    ``crop_seconds`` (shorter clips are kept whole and padded by the collator).

    Used with :func:`hf_ssl.views.apply_views` (a ``datasets`` transform): the crop offset of every example is seeded
    by ``(seed, epoch, ssl_index)``, so crops do not depend on processes, workers or a resume mid-epoch
    (``SSLTrainer`` calls :meth:`set_epoch`). Output: ``{"input_values": [float32 array (samples,)]}``.
    """

    def __init__(self, sampling_rate: int, crop_seconds: float | None = None, *, resample: bool = True, seed: int = 0):
        if crop_seconds is not None and crop_seconds <= 0:
            raise ValueError(f"crop_seconds must be > 0 (or None for whole clips), got {crop_seconds}")
        self.sampling_rate = int(sampling_rate)
        self.crop_samples = None if crop_seconds is None else int(math.ceil(crop_seconds * sampling_rate))
        self.resample = resample
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def crop(self, waveform: np.ndarray, index: int | None) -> np.ndarray:
        if self.crop_samples is None or len(waveform) <= self.crop_samples:
            return waveform
        if index is None:
            rng = np.random.default_rng()
        else:
            rng = np.random.default_rng(example_seed(self.seed, self.epoch, int(index)))
        start = int(rng.integers(0, len(waveform) - self.crop_samples + 1))
        return waveform[start : start + self.crop_samples]

    def __call__(self, batch: dict[str, list]) -> dict[str, list[np.ndarray]]:
        if "audio" not in batch:
            raise ValueError(
                f"the dataset has no 'audio' column (columns: {sorted(batch)}); load it with "
                "hf_ssl.data.audio.load_audio_dataset"
            )
        indices = batch.get(INDEX_COLUMN) or [None] * len(batch["audio"])
        output = {
            "input_values": [
                self.crop(load_waveform(source, self.sampling_rate, self.resample), index)
                for source, index in zip(batch["audio"], indices)
            ]
        }
        if batch.get(INDEX_COLUMN) is not None:
            output[VIEW_SEED] = [example_seed(self.seed, self.epoch, int(index)) for index in indices]
        return output
