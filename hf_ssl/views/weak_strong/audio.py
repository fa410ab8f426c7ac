"""Weak and strong views of an utterance, on the raw waveform (the input of wav2vec2-style classifiers).

- weak: random gain (± ``gain_db``), additive white Gaussian noise at a random signal-to-noise ratio, random circular
  time shift (up to 10 % of the clip);
- strong: the weak part, then SpecAugment-style masking (Park et al. 2019) moved to the waveform: frequency masks
  as band-stops (rFFT -> zero a band of bins -> inverse rFFT) and time masks as spans set to zero.

SpecAugment masks mel channels and frames of a log-mel spectrogram; a waveform model has no spectrogram at its
input, so the frequency bands here are bands of the whole clip's linear-frequency spectrum, and the time masks are
spans of samples. Frequency masks come before time masks, so that the masked spans stay exactly zero.

The FFTs are numpy's (``numpy.fft.rfft`` / ``irfft``, float64): the waveform is a numpy array from
:func:`hf_ssl.data.audio.load_waveform` to the feature extractor, and numpy keeps torch's thread pool and generator
out of the per-example work.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ...data.audio import load_waveform, resample_audio
from .protocol import check_columns, split_value


@dataclass
class AudioWeakStrongConfig:
    """Weak and strong audio views.

    gain_db: the gain is drawn uniformly from [-gain_db, +gain_db] dB (6 dB: a factor 0.5-2); 0 turns it off.
    snr_low_db, snr_high_db: the noise's signal-to-noise ratio is drawn uniformly from this range in dB (20-40:
        audible but mild); ``add_noise=False`` turns it off.
    shift_fraction: largest circular time shift, as a fraction of the clip (0.1); 0 turns it off.
    num_time_masks, time_mask_fraction: spans of the strong view set to zero, each of a uniform length in
        [0, time_mask_fraction * samples].
    num_frequency_masks, frequency_mask_fraction: bands of the strong view's spectrum removed, each of a uniform
        width in [0, frequency_mask_fraction * rFFT bins]. Defaults: two masks of each kind, as SpecAugment's LD
        policy has, each at most 10 % (a setting for short clips, chosen here, not the paper's).
    """

    gain_db: float = 6.0
    add_noise: bool = True
    snr_low_db: float = 20.0
    snr_high_db: float = 40.0
    shift_fraction: float = 0.1
    num_time_masks: int = 2
    time_mask_fraction: float = 0.1
    num_frequency_masks: int = 2
    frequency_mask_fraction: float = 0.1

    def __post_init__(self):
        if self.gain_db < 0:
            raise ValueError(f"gain_db is a range ± gain_db and must be >= 0, got {self.gain_db}")
        if self.snr_low_db > self.snr_high_db:
            raise ValueError(f"snr_low_db must be <= snr_high_db, got {self.snr_low_db} > {self.snr_high_db}")
        for name in ("shift_fraction", "time_mask_fraction", "frequency_mask_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} is a fraction of the clip and must be in [0, 1], got {getattr(self, name)}")
        for name in ("num_time_masks", "num_frequency_masks"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0 turns these masks off), got {getattr(self, name)}")


class AudioWeakStrongViews:
    """Weak and strong views of an utterance (a :class:`~hf_ssl.views.weak_strong.WeakStrongViews`).

    ``weak(entry, rng)`` / ``strong(entry, rng)``: an audio entry -> a float32 waveform ``(samples,)`` at
    ``sampling_rate``. Entries are what hf_ssl's audio datasets hold (:func:`hf_ssl.data.audio.load_audio_dataset`:
    a path, or an undecoded ``{"bytes", "path"}`` dict), decoded and resampled by
    :func:`hf_ssl.data.audio.load_waveform`; a decoded ``{"array", "sampling_rate"}`` dict is resampled, and a 1-D
    array is taken as already at ``sampling_rate``. With ``crop_seconds``, a random crop of that length is taken
    first (shorter clips are kept whole; the two views of an example get crops of their own).

    ``collate(waveforms)`` -> ``feature_extractor(waveforms, sampling_rate=..., padding=True,
    return_attention_mask=True, return_tensors="pt")``: ``{"input_values": (B, T) float32, "attention_mask": (B, T)}``
    (per-utterance normalisation as the feature extractor is configured).

    All random draws come from ``rng``; under one seed ``strong`` draws the weak part first, so it is the weak view
    with masks.
    """

    config_class = AudioWeakStrongConfig

    def __init__(
        self,
        feature_extractor,
        sampling_rate: int,
        crop_seconds: float | None = None,
        *,
        config: AudioWeakStrongConfig | None = None,
        audio_column: str = "audio",
        resample: bool = True,
    ):
        extractor_rate = getattr(feature_extractor, "sampling_rate", None)
        if extractor_rate is not None and int(extractor_rate) != int(sampling_rate):
            raise ValueError(
                f"sampling_rate is {sampling_rate} Hz but the feature extractor expects {extractor_rate} Hz: pass "
                f"sampling_rate={extractor_rate} (clips are resampled to it)"
            )
        if crop_seconds is not None and crop_seconds <= 0:
            raise ValueError(f"crop_seconds must be > 0 (or None for whole clips), got {crop_seconds}")
        self.feature_extractor = feature_extractor
        self.sampling_rate = int(sampling_rate)
        self.crop_samples = None if crop_seconds is None else int(math.ceil(crop_seconds * sampling_rate))
        self.config = config if config is not None else AudioWeakStrongConfig()
        self.input_columns = (audio_column,)
        self.resample = resample

    # -- the interface -------------------------------------------------------------------------------------------------

    def plain(self, value) -> np.ndarray:
        """The evaluation view: the whole clip, decoded and resampled, without augmentation."""
        return self._waveform(value)

    def weak(self, value, rng: np.random.Generator) -> np.ndarray:
        """Crop, gain, noise, circular shift: a float32 ``(samples,)`` waveform."""
        return self._weak(self._crop(self._waveform(value), rng), rng)

    def strong(self, value, rng: np.random.Generator) -> np.ndarray:
        """The weak part, then ``num_frequency_masks`` band-stops and ``num_time_masks`` zeroed spans."""
        cfg = self.config
        waveform = self._weak(self._crop(self._waveform(value), rng), rng)
        waveform = frequency_masks(waveform, rng, cfg.num_frequency_masks, cfg.frequency_mask_fraction)[0]
        return time_masks(waveform, rng, cfg.num_time_masks, cfg.time_mask_fraction)[0]

    def collate(self, values: list[np.ndarray]) -> dict[str, torch.Tensor]:
        """``{"input_values": (B, T) float32, "attention_mask": (B, T)}``, padded to the longest clip."""
        if not values:
            raise ValueError("collate got an empty batch: drop empty batches before collating")
        features = self.feature_extractor(
            [np.asarray(value, dtype=np.float32) for value in values],
            sampling_rate=self.sampling_rate,
            padding=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        return {"input_values": features["input_values"].to(torch.float32), "attention_mask": features["attention_mask"]}

    # -- checks --------------------------------------------------------------------------------------------------------

    def check_columns(self, column_names) -> None:
        """Refuse a dataset without the audio column (call it once on ``dataset.column_names``)."""
        check_columns(
            self.input_columns,
            column_names,
            "load the data with hf_ssl.data.audio.load_audio_dataset (an 'audio' column), or name the column with "
            "`audio_column=`",
        )

    # -- steps ---------------------------------------------------------------------------------------------------------

    def _waveform(self, value) -> np.ndarray:
        (entry,) = split_value(value, self.input_columns)
        if isinstance(entry, np.ndarray):
            if entry.ndim != 1:
                raise ValueError(f"a waveform must be 1-D (mono samples), got shape {entry.shape}: average the channels")
            return entry.astype(np.float32)
        if isinstance(entry, dict) and entry.get("array") is not None:
            if entry.get("sampling_rate") is None:
                raise ValueError("a decoded audio entry has an 'array' but no 'sampling_rate': add the clip's rate")
            waveform = np.asarray(entry["array"], dtype=np.float32)
            return resample_audio(waveform, int(entry["sampling_rate"]), self.sampling_rate)
        has_source = isinstance(entry, (str, Path, bytes, bytearray)) or (
            isinstance(entry, dict) and (entry.get("bytes") or entry.get("path"))
        )
        if not has_source:
            raise ValueError(
                f"the {self.input_columns[0]!r} column holds {_describe(entry)}, not an audio entry (a path, or a "
                "{'bytes', 'path'} dict): load the data with hf_ssl.data.audio.load_audio_dataset, or cast the "
                "column with datasets.Audio(decode=False)"
            )
        return load_waveform(entry, self.sampling_rate, self.resample)

    def _crop(self, waveform: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.crop_samples is None or len(waveform) <= self.crop_samples:
            return waveform
        start = int(rng.integers(0, len(waveform) - self.crop_samples + 1))
        return waveform[start : start + self.crop_samples]

    def _weak(self, waveform: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        cfg = self.config
        waveform = waveform * np.float32(10 ** (rng.uniform(-cfg.gain_db, cfg.gain_db) / 20))
        if cfg.add_noise:
            waveform = add_noise(waveform, rng.uniform(cfg.snr_low_db, cfg.snr_high_db), rng)
        limit = int(cfg.shift_fraction * len(waveform))
        waveform = np.roll(waveform, int(rng.integers(-limit, limit + 1)))
        return waveform.astype(np.float32)


def add_noise(waveform: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """``waveform`` plus white Gaussian noise of power ``mean(waveform²) / 10^(snr_db / 10)`` (silence stays
    silent)."""
    power = float(np.mean(np.square(waveform, dtype=np.float64))) if len(waveform) else 0.0
    scale = math.sqrt(power / 10 ** (snr_db / 10))
    return (waveform + scale * rng.standard_normal(len(waveform))).astype(np.float32)


def time_masks(
    waveform: np.ndarray, rng: np.random.Generator, num_masks: int, max_fraction: float
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """SpecAugment's time masks on samples: ``num_masks`` spans ``[start, stop)``, each of a uniform length in
    ``[0, max_fraction * samples]`` at a uniform start, set to zero. Returns the masked copy and the spans."""
    waveform = np.array(waveform, dtype=np.float32)
    samples, spans = len(waveform), []
    for _ in range(num_masks):
        length = int(rng.integers(0, int(max_fraction * samples) + 1))
        start = int(rng.integers(0, samples - length + 1))
        waveform[start : start + length] = 0.0
        spans.append((start, start + length))
    return waveform, spans


def frequency_masks(
    waveform: np.ndarray, rng: np.random.Generator, num_masks: int, max_fraction: float
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """SpecAugment's frequency masks as band-stops on the whole clip: ``num_masks`` bands ``[low, high)`` of rFFT
    bins (``samples // 2 + 1`` of them, bin ``k`` at ``k * sampling_rate / samples`` Hz), each of a uniform width in
    ``[0, max_fraction * bins]`` at a uniform position, removed by :func:`band_stop`. Returns the copy and the
    bands."""
    bins = len(waveform) // 2 + 1
    bands = []
    for _ in range(num_masks):
        width = int(rng.integers(0, int(max_fraction * bins) + 1))
        low = int(rng.integers(0, bins - width + 1))
        bands.append((low, low + width))
    if not any(high > low for low, high in bands):
        return np.asarray(waveform, dtype=np.float32), bands
    return band_stop(waveform, bands), bands


def band_stop(waveform: np.ndarray, bands: list[tuple[int, int]]) -> np.ndarray:
    """Zero the rFFT bins ``[low, high)`` of every band and return to the waveform (same length, float32)."""
    spectrum = np.fft.rfft(np.asarray(waveform, dtype=np.float64))
    for low, high in bands:
        spectrum[low:high] = 0.0
    return np.fft.irfft(spectrum, n=len(waveform)).astype(np.float32)


def _describe(entry) -> str:
    if entry is None:
        return "None (a missing clip)"
    if isinstance(entry, dict):
        return f"a dict with keys {sorted(entry)}"
    return f"a {type(entry).__name__}"
