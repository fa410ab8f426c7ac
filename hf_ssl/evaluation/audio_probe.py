"""Frozen utterance features for audio probes: mean-pooled encoder outputs, and the MFCC baseline.

The MFCC baseline (Davis & Mermelstein 1980) is computed with transformers' ``audio_utils`` (the same STFT and mel
filter bank code its Whisper / CLAP feature extractors use) and ``scipy.fft.dct``: 25 ms Hann windows every 10 ms,
40 HTK mel filters, log, DCT-II (orthonormal), first 20 coefficients; an utterance is the mean and standard deviation
of its frames' coefficients (40 numbers). Nothing is hand-rolled but the pooling.

:class:`AudioLinearProbeEvaluator` scores a model with :func:`hf_ssl.evaluation.linear_probe.linear_probe_accuracy`
(standardised features, L-BFGS softmax regression) for every label column, e.g. FSDD's digit and speaker.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ..data.audio import load_waveform
from ..methods.base import SSLPreTrainedModel
from ..modules.audio_encoder import pooled_audio_features
from .features import frozen
from .linear_probe import linear_probe_accuracy


def load_waveforms(dataset, sampling_rate: int, resample: bool = True) -> list[np.ndarray]:
    """Every clip of ``dataset`` (its ``audio`` column), whole, decoded and brought to ``sampling_rate``."""
    plain = dataset.select_columns(["audio"]).with_format(None)
    return [load_waveform(source, sampling_rate, resample) for source in plain["audio"]]


@torch.no_grad()
def encoder_features(
    model: nn.Module,
    waveforms: Sequence[np.ndarray],
    feature_extractor,
    *,
    batch_size: int = 64,
    representation: str = "encoder",
) -> torch.Tensor:
    """``(N, D)`` float32 features, one per waveform, in order.

    ``model``: a ``Wav2Vec2Model`` or an hf_ssl audio pretraining model (its published ``encoder`` is used).
    ``representation``: ``"encoder"`` (mean of ``last_hidden_state`` over real frames: what vanilla transformers
    loads) or ``"context"`` (CPC's mean-pooled GRU context, through ``model.context_features``). Clips are batched by
    length (less padding); the features of a clip do not depend on its batch (per-frame LayerNorm, masked attention).
    """
    if representation == "context":
        if not hasattr(model, "context_features"):
            raise ValueError(f"{type(model).__name__} has no context network; use representation='encoder'")
        encode = model.context_features
        module = model
    elif representation == "encoder":
        encoder = model.encoder if isinstance(model, SSLPreTrainedModel) else model
        module = encoder

        def encode(values, mask):
            return pooled_audio_features(encoder, values, mask)
    else:
        raise ValueError(f"representation must be 'encoder' or 'context', got {representation!r}")
    device = next(module.parameters()).device
    order = np.argsort([len(waveform) for waveform in waveforms], kind="stable")
    features: list[torch.Tensor | None] = [None] * len(waveforms)
    with frozen(module):
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            batch = feature_extractor(
                [waveforms[i] for i in chunk],
                sampling_rate=feature_extractor.sampling_rate,
                padding=True,
                return_attention_mask=True,
                return_tensors="pt",
            )
            pooled = encode(batch["input_values"].float().to(device), batch["attention_mask"].to(device))
            for position, index in enumerate(chunk):
                features[index] = pooled[position].float().cpu()
    return torch.stack(features)


def mfcc_features(
    waveforms: Sequence[np.ndarray],
    sampling_rate: int,
    *,
    num_coefficients: int = 20,
    num_mel_filters: int = 40,
    max_frequency: float | None = None,
) -> torch.Tensor:
    """``(N, 2 * num_coefficients)``: mean and standard deviation over frames of each clip's MFCCs.

    ``max_frequency``: top of the mel filter bank (default: Nyquist). Audio upsampled from 8 kHz has nothing above
    4 kHz, so FSDD recipes set 4000.
    """
    from scipy.fft import dct
    from transformers.audio_utils import mel_filter_bank, spectrogram, window_function

    frame_length = int(round(0.025 * sampling_rate))
    hop_length = int(round(0.010 * sampling_rate))
    fft_length = 1 << (frame_length - 1).bit_length()
    filters = mel_filter_bank(
        num_frequency_bins=fft_length // 2 + 1,
        num_mel_filters=num_mel_filters,
        min_frequency=20.0,
        max_frequency=float(max_frequency or sampling_rate / 2),
        sampling_rate=sampling_rate,
        mel_scale="htk",
    )
    window = window_function(frame_length, "hann")
    rows = []
    for waveform in waveforms:
        log_mel = spectrogram(
            np.asarray(waveform, dtype=np.float32),
            window,
            frame_length=frame_length,
            hop_length=hop_length,
            fft_length=fft_length,
            power=2.0,
            mel_filters=filters,
            log_mel="log",
        )  # (num_mel_filters, frames)
        coefficients = dct(log_mel, type=2, axis=0, norm="ortho")[:num_coefficients]  # (C, frames)
        rows.append(np.concatenate([coefficients.mean(axis=1), coefficients.std(axis=1)]))
    return torch.from_numpy(np.stack(rows).astype(np.float32))


class AudioLinearProbeEvaluator:
    """Linear probes on frozen, mean-pooled features for each label column: ``{f"linear_probe_{column}": acc}``.

    Clips are decoded and resampled once, at construction. Call with any hf_ssl audio pretraining model or a
    ``Wav2Vec2Model``; ``representation`` as in :func:`encoder_features`.
    """

    def __init__(
        self,
        train_dataset,
        eval_dataset,
        label_columns: Sequence[str],
        feature_extractor,
        *,
        resample: bool = True,
        batch_size: int = 64,
        probe_epochs: int = 100,
    ):
        missing = [
            c for c in label_columns if c not in train_dataset.column_names or c not in eval_dataset.column_names
        ]
        if not label_columns or missing:
            raise ValueError(
                f"label columns {missing or list(label_columns)} are missing (train columns: "
                f"{train_dataset.column_names}); pass --probe_label_columns with integer label columns"
            )
        self.label_columns = list(label_columns)
        self.feature_extractor = feature_extractor
        self.batch_size = batch_size
        self.probe_epochs = probe_epochs
        rate = feature_extractor.sampling_rate
        self.train_waveforms = load_waveforms(train_dataset, rate, resample)
        self.eval_waveforms = load_waveforms(eval_dataset, rate, resample)
        self.train_labels = {c: torch.tensor(train_dataset[c], dtype=torch.long) for c in self.label_columns}
        self.eval_labels = {c: torch.tensor(eval_dataset[c], dtype=torch.long) for c in self.label_columns}

    def features(self, model: nn.Module, representation: str = "encoder") -> tuple[torch.Tensor, torch.Tensor]:
        kwargs = {"batch_size": self.batch_size, "representation": representation}
        return (
            encoder_features(model, self.train_waveforms, self.feature_extractor, **kwargs),
            encoder_features(model, self.eval_waveforms, self.feature_extractor, **kwargs),
        )

    def probe(self, train_features: torch.Tensor, eval_features: torch.Tensor) -> dict[str, float]:
        """Linear-probe accuracy of given features for every label column."""
        return {
            f"linear_probe_{column}": linear_probe_accuracy(
                train_features,
                self.train_labels[column],
                eval_features,
                self.eval_labels[column],
                epochs=self.probe_epochs,
            )
            for column in self.label_columns
        }

    def mfcc(self, **kwargs) -> dict[str, float]:
        """The probes on the MFCC baseline features (:func:`mfcc_features`)."""
        rate = self.feature_extractor.sampling_rate
        return self.probe(
            mfcc_features(self.train_waveforms, rate, **kwargs), mfcc_features(self.eval_waveforms, rate, **kwargs)
        )

    def __call__(self, model: nn.Module, representation: str = "encoder") -> dict[str, float]:
        return self.probe(*self.features(model, representation))
