"""The raw-waveform encoder of hf_ssl's audio methods: a transformers ``Wav2Vec2Model``, its presets, its receptive
field, the checks every audio forward runs, and one pooled feature vector per utterance.

Why ``Wav2Vec2Model`` for both CPC and wav2vec 2.0: its feature encoder *is* a strided 1-D convolution stack over the
raw waveform (the encoder of CPC and wav2vec), its config carries every architecture field, and a checkpoint whose
weights sit under ``wav2vec2.`` loads with plain ``AutoModel`` / ``AutoModelForAudioClassification`` (no hf_ssl, no
``trust_remote_code``).

Presets use ``feat_extract_norm="layer"`` (LayerNorm per frame, as the "large" wav2vec 2.0 models): wav2vec2-base's
GroupNorm normalises each channel over *time*, so the zeros of a padded batch would change the features of the real
frames; per-frame LayerNorm keeps a padded utterance's valid frames identical to the unpadded ones.
"""

from __future__ import annotations

import math

import torch
from transformers import Wav2Vec2Config

# Architecture presets. CPC: the encoder of van den Oord et al. 2018 (§3.1: strides 5, 4, 2, 2, 2, kernels 10, 8, 4, 4,
# 4; one frame per 10 ms at 16 kHz) with no transformer layer (see hf_ssl.methods.cpc). wav2vec 2.0: the feature
# encoder of Baevski et al. 2020 (§4.2: 7 blocks, strides 5, 2, 2, 2, 2, 2, 2, kernels 10, 3, 3, 3, 3, 2, 2; 20 ms).
_CPC_CONV = {"conv_stride": [5, 4, 2, 2, 2], "conv_kernel": [10, 8, 4, 4, 4], "conv_bias": True}
_WAV2VEC2_CONV = {"conv_stride": [5, 2, 2, 2, 2, 2, 2], "conv_kernel": [10, 3, 3, 3, 3, 2, 2], "conv_bias": True}
_COMMON = {"feat_extract_norm": "layer", "do_stable_layer_norm": True}
# wav2vec 2.0's masking (§4.2: p = 0.065 per frame as a span start, M = 10; transformers' mask_time_prob is p * M).
_WAV2VEC2_MASKING = {"mask_time_prob": 0.65, "mask_time_length": 10, "mask_time_min_masks": 2}
# CPC's targets are the encoder outputs themselves: no dropout on them.
_CPC_NO_DROPOUT = {"hidden_dropout": 0.0, "feat_proj_dropout": 0.0}

AUDIO_ENCODER_PRESETS: dict[str, dict] = {
    # CPC paper sizes: 512 conv channels, z of 512 (the GRU context size is a method setting).
    "cpc-base": {
        **_COMMON,
        **_CPC_CONV,
        **_CPC_NO_DROPOUT,
        "conv_dim": [512] * 5,
        "hidden_size": 512,
        "num_hidden_layers": 0,
        "num_attention_heads": 8,
        "intermediate_size": 2048,
        "num_conv_pos_embeddings": 16,
        "num_conv_pos_embedding_groups": 16,
    },
    # Small enough for minutes of CPU pretraining on FSDD.
    "cpc-tiny": {
        **_COMMON,
        **_CPC_CONV,
        **_CPC_NO_DROPOUT,
        "conv_dim": [64] * 5,
        "hidden_size": 64,
        "num_hidden_layers": 0,
        "num_attention_heads": 2,
        "intermediate_size": 128,
        "num_conv_pos_embeddings": 16,
        "num_conv_pos_embedding_groups": 4,
    },
    # wav2vec2-base sizes (768 hidden, 12 layers), with per-frame LayerNorm in the feature encoder.
    "wav2vec2-base": {
        **_COMMON,
        **_WAV2VEC2_CONV,
        **_WAV2VEC2_MASKING,
        "conv_dim": [512] * 7,
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
    },
    "wav2vec2-tiny": {
        **_COMMON,
        **_WAV2VEC2_CONV,
        **_WAV2VEC2_MASKING,
        "conv_dim": [64] * 7,
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 128,
        "num_conv_pos_embeddings": 16,
        "num_conv_pos_embedding_groups": 4,
        "codevector_dim": 64,
        "proj_codevector_dim": 64,
        "num_codevector_groups": 2,
        "num_codevectors_per_group": 32,
        "mask_time_length": 4,
        "num_negatives": 20,
    },
}


def audio_encoder_config(name: str, overrides: dict | None = None) -> Wav2Vec2Config:
    """A ``Wav2Vec2Config`` from a preset name (:data:`AUDIO_ENCODER_PRESETS`) or a folder / Hub id holding one,
    with ``overrides`` (config fields) applied on top."""
    overrides = dict(overrides or {})
    if name in AUDIO_ENCODER_PRESETS:
        values = {**AUDIO_ENCODER_PRESETS[name], **overrides}
        values["num_feat_extract_layers"] = len(values["conv_dim"])
        return Wav2Vec2Config(**values)
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(name, **overrides)
    except OSError as error:
        raise ValueError(
            f"unknown audio encoder {name!r}: use a preset ({sorted(AUDIO_ENCODER_PRESETS)}) or a folder / Hub id "
            "with a Wav2Vec2Config"
        ) from error
    if not isinstance(config, Wav2Vec2Config):
        raise ValueError(f"{name} holds a {type(config).__name__}; the audio methods need a Wav2Vec2Config")
    if hasattr(config, "ssl_config"):  # an hf_ssl checkpoint: keep the architecture, not its method settings
        del config.ssl_config
    return config


def receptive_field(config: Wav2Vec2Config) -> tuple[int, int]:
    """``(receptive_field, stride)`` of the convolutional feature encoder, in samples.

    One output frame sees ``1 + sum_i (kernel_i - 1) * prod_{j<i} stride_j`` samples; frames are ``prod_i stride_i``
    samples apart (CPC preset: 465 and 160, i.e. 29 ms and 10 ms at 16 kHz).
    """
    field, jump = 1, 1
    for kernel, stride in zip(config.conv_kernel, config.conv_stride):
        field += (kernel - 1) * jump
        jump *= stride
    return field, jump


def minimum_samples(config: Wav2Vec2Config, frames: int) -> int:
    """The fewest input samples that give ``frames`` output frames."""
    field, stride = receptive_field(config)
    return field + (frames - 1) * stride


def frame_lengths(config: Wav2Vec2Config, sample_lengths: torch.Tensor) -> torch.Tensor:
    """Output frames of the feature encoder for inputs of ``sample_lengths`` samples (transformers' formula)."""
    lengths = sample_lengths
    for kernel, stride in zip(config.conv_kernel, config.conv_stride):
        lengths = torch.div(lengths - kernel, stride, rounding_mode="floor") + 1
    return lengths.clamp_min(0)


def check_audio_input(
    config: Wav2Vec2Config,
    input_values: torch.Tensor,
    attention_mask: torch.Tensor | None,
    *,
    sampling_rate: int,
    min_frames: int,
    given_sampling_rate: int | None = None,
    reason: str = "",
) -> torch.Tensor:
    """Refuse inputs a raw-waveform encoder cannot use; return the per-example sample lengths ``(batch,)``.

    ``input_values``: ``(batch, samples)`` mono float waveforms (padding on the right); ``attention_mask``:
    ``(batch, samples)`` with 1 for real samples. ``min_frames``: frames each example needs after the convolutions
    (``reason`` says why, for the message). ``given_sampling_rate``: the rate the caller says the audio has.
    """
    if given_sampling_rate is not None and int(given_sampling_rate) != int(sampling_rate):
        raise ValueError(
            f"the audio is sampled at {given_sampling_rate} Hz but this model was pretrained at {sampling_rate} Hz; "
            f"resample it first (hf_ssl.data.audio.resample_audio(audio, {given_sampling_rate}, {sampling_rate}), "
            "which uses scipy.signal.resample_poly) or build the model with a matching sampling_rate"
        )
    if not isinstance(input_values, torch.Tensor) or input_values.dim() != 2 or not input_values.is_floating_point():
        shape = tuple(input_values.shape) if isinstance(input_values, torch.Tensor) else type(input_values).__name__
        raise ValueError(
            f"input_values must be a float tensor of mono waveforms (batch, samples), got {shape}; batch and pad "
            "audio with a Wav2Vec2FeatureExtractor (or hf_ssl.data.collators.AudioCollator), and average stereo channels"
        )
    batch, samples = input_values.shape
    if attention_mask is None:
        lengths = torch.full((batch,), samples, dtype=torch.long, device=input_values.device)
    else:
        if attention_mask.shape != input_values.shape:
            raise ValueError(
                f"attention_mask {tuple(attention_mask.shape)} must have the shape of input_values {(batch, samples)}"
            )
        lengths = attention_mask.long().sum(dim=-1)
    needed = minimum_samples(config, min_frames)
    short = (lengths < needed).nonzero().flatten().tolist()
    if short:
        field, stride = receptive_field(config)
        example = short[0]
        raise ValueError(
            f"audio example {example} has {int(lengths[example])} samples ({int(lengths[example]) / sampling_rate:.3f} "
            f"s at {sampling_rate} Hz), shorter than the {needed} samples ({needed / sampling_rate:.3f} s) needed for "
            f"{min_frames} frames{reason} (receptive field {field} samples, one frame every {stride}); drop clips "
            "shorter than that (--min_audio_seconds) or use longer crops"
        )
    return lengths


def feature_frame_mask(config: Wav2Vec2Config, sample_lengths: torch.Tensor, frames: int) -> torch.Tensor:
    """``(batch, frames)`` bool mask of the frames computed from real samples only (a prefix per utterance)."""
    valid = frame_lengths(config, sample_lengths)
    return torch.arange(frames, device=sample_lengths.device)[None, :] < valid[:, None]


def pooled_audio_features(encoder, input_values: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """One vector per utterance: the mean of ``last_hidden_state`` over its real frames, ``(batch, hidden)``.

    Mean pooling over frames is what ``Wav2Vec2ForSequenceClassification`` does before its classifier (without the
    projector), so a linear probe on these features is a frozen version of ``AutoModelForAudioClassification``.
    """
    hidden = encoder(input_values, attention_mask=attention_mask).last_hidden_state  # (B, T, D)
    if attention_mask is None:
        return hidden.mean(dim=1)
    mask = feature_frame_mask(encoder.config, attention_mask.long().sum(-1), hidden.shape[1]).to(hidden.dtype)
    return (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp_min(1.0)


def seconds_to_samples(seconds: float, sampling_rate: int) -> int:
    return int(math.ceil(seconds * sampling_rate))
