"""CPC: Contrastive Predictive Coding on raw audio (van den Oord et al. 2018, "Representation Learning with
Contrastive Predictive Coding", arXiv:1807.03748, §2 and §3.1), with wav2vec's k-step-ahead framing (Schneider et al.
2019, "wav2vec: Unsupervised Pre-training for Speech Recognition", arXiv:1904.05862).

A strided 1-D convolutional encoder maps the waveform to frames ``z_t``; an autoregressive GRU summarises
``z_{<=t}`` into a context ``c_t``; for each of K future steps a linear map ``W_k`` predicts ``z_{t+k}`` from ``c_t``,
scored with InfoNCE against negatives drawn from the batch, the global batch across processes
(:class:`hf_ssl.losses.cpc.CPCInfoNCELoss`).

Checkpoint layout (why vanilla transformers loads the CPC encoder): the config is a ``Wav2Vec2Config`` and the
encoder a ``Wav2Vec2Model`` under ``wav2vec2.`` with **no transformer layer** (``num_hidden_layers = 0``), so that

    z_t = LayerNorm(W_proj LayerNorm(conv(x))_t + pos_conv(.)_t)     (Wav2Vec2Model.last_hidden_state)

is exactly the CPC encoder output. Its relative positional convolution is set to zero and frozen: it reaches
``num_conv_pos_embeddings // 2`` frames into the future and past, which would let the context network see the frames
it must predict. The GRU and the predictors are extra weights (``context_network.``, ``predictor.``) that
``AutoModel`` / ``AutoModelForAudioClassification`` ignore: they load the trained convolutional encoder, and
``last_hidden_state`` is the paper's ``z``. The paper probes ``c_t`` instead; the final comparison of the audio job
reports both (the context through hf_ssl only).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import PretrainedConfig, Wav2Vec2Config
from transformers.utils import ModelOutput

from ..losses.cpc import NEGATIVE_SAMPLING_MODES, CPCInfoNCELoss
from ..modules.audio_encoder import check_audio_input, feature_frame_mask
from .base import SSLMethodConfig, SSLPreTrainedModel


@dataclass
class CPCConfig(SSLMethodConfig):
    """CPC hyperparameters (defaults: the paper's audio setting, van den Oord et al. 2018 §3.1, and the reference
    implementation facebookresearch/CPC_audio).

    context_dim / context_layers: the GRU context network g_ar (256 units, 1 layer).
    prediction_steps: K, frames predicted ahead (12, i.e. 120 ms at 10 ms frames).
    num_negatives: negatives per anchor frame, shared by its K predictions (128 in CPC_audio; wav2vec uses 10).
    negative_sampling: "batch" (same and other utterances, the paper's), "same_utterance" or "other_utterances".
    sampling_rate: the rate (Hz) the encoder is trained at; the audio job resamples to it, forward checks it.
    """

    method = "cpc"

    context_dim: int = 256
    context_layers: int = 1
    prediction_steps: int = 12
    num_negatives: int = 128
    negative_sampling: str = "batch"
    sampling_rate: int = 16000

    def __post_init__(self):
        self.check_ranges(
            at_least_one=("context_dim", "context_layers", "prediction_steps", "num_negatives", "sampling_rate")
        )
        if self.negative_sampling not in NEGATIVE_SAMPLING_MODES:
            raise ValueError(
                f"negative_sampling must be one of {NEGATIVE_SAMPLING_MODES}, got {self.negative_sampling!r}"
            )


@dataclass
class CPCOutput(ModelOutput):
    """Output of :class:`CPCForPreTraining`.

    loss: scalar InfoNCE (CPC Eq. 4), mean over the valid (frame, step) predictions; across processes, this
        process's share (see :class:`hf_ssl.losses.cpc.CPCInfoNCELoss`), whose mean over processes is the global mean.
    prediction_accuracy: fraction of predictions whose true future frame outscores every negative.
    encoded: ``(batch, frames, hidden)`` encoder outputs z (``Wav2Vec2Model.last_hidden_state``).
    context: ``(batch, frames, context_dim)`` GRU outputs c.
    frame_mask: ``(batch, frames)`` bool, True for frames computed from real (not padded) samples.
    """

    loss: torch.Tensor | None = None
    prediction_accuracy: torch.Tensor | None = None
    encoded: torch.Tensor | None = None
    context: torch.Tensor | None = None
    frame_mask: torch.Tensor | None = None


class CPCForPreTraining(SSLPreTrainedModel):
    """CPC over a ``Wav2Vec2Model`` feature encoder (see the module docstring for the layout).

    Modules: ``wav2vec2`` (the published encoder, no transformer layer), ``context_network`` (``nn.GRU``, causal, so
    right-padding never reaches a real frame's context), ``predictor`` (the K maps ``W_k`` as one bias-free Linear)
    and ``loss_fn``.

    Inputs: ``input_values`` ``(batch, samples)`` normalised mono waveforms at ``sampling_rate`` and
    ``attention_mask`` ``(batch, samples)`` (1 = real sample), as a ``Wav2Vec2FeatureExtractor`` pads them.
    """

    method_config_class = CPCConfig
    pretraining_job = "audio"
    paper = "van den Oord et al. 2018. Representation Learning with Contrastive Predictive Coding. arXiv:1807.03748"
    main_input_name = "input_values"

    @classmethod
    def from_encoder_config(cls, encoder_config: PretrainedConfig, **method_kwargs) -> CPCForPreTraining:
        """As the base class, after turning off what would let the encoder see the future or mask its input:
        SpecAugment masking (``apply_spec_augment``) and the transformer layers (must be 0)."""
        config = encoder_config.__class__.from_dict(encoder_config.to_dict())
        config.apply_spec_augment = False
        config.mask_time_prob = 0.0
        config.mask_feature_prob = 0.0
        return super().from_encoder_config(config, **method_kwargs)

    def __init__(self, config: PretrainedConfig):
        super().__init__(config)
        _check_cpc_encoder_config(config)
        settings: CPCConfig = self.method_config
        self.register_published_encoder(self.build_encoder())
        self.context_network = nn.GRU(
            config.hidden_size, settings.context_dim, num_layers=settings.context_layers, batch_first=True
        )
        self.predictor = nn.Linear(settings.context_dim, settings.prediction_steps * config.hidden_size, bias=False)
        self.loss_fn = CPCInfoNCELoss(settings.num_negatives, settings.negative_sampling)
        self.post_init()
        _zero_positional_convolution(self.encoder)

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        sampling_rate: int | None = None,
        return_loss: bool = True,
        **kwargs,
    ) -> CPCOutput:
        settings: CPCConfig = self.method_config
        lengths = check_audio_input(
            self.config,
            input_values,
            attention_mask,
            sampling_rate=settings.sampling_rate,
            min_frames=2,
            given_sampling_rate=sampling_rate,
            reason=" (CPC predicts at least one frame ahead)",
        )
        encoded = self.encoder(input_values, attention_mask=attention_mask).last_hidden_state  # (B, T, D)
        frame_mask = feature_frame_mask(self.config, lengths, encoded.shape[1])
        context, _ = self.context_network(encoded)  # (B, T, C); causal: padding only follows real frames
        if not return_loss:
            return CPCOutput(encoded=encoded, context=context, frame_mask=frame_mask)
        batch, frames, hidden = encoded.shape
        predictions = self.predictor(context).view(batch, frames, settings.prediction_steps, hidden)
        loss, stats = self.loss_fn(predictions, encoded, frame_mask)
        return CPCOutput(
            loss=loss, prediction_accuracy=stats["accuracy"], encoded=encoded, context=context, frame_mask=frame_mask
        )

    def context_features(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``(batch, context_dim)``: the GRU context, mean-pooled over each utterance's real frames (the
        representation the CPC paper probes)."""
        output = self(input_values, attention_mask=attention_mask, return_loss=False)
        mask = output.frame_mask.to(output.context.dtype)[..., None]
        return (output.context * mask).sum(1) / mask.sum(1).clamp_min(1.0)


def _check_cpc_encoder_config(config: PretrainedConfig) -> None:
    if not isinstance(config, Wav2Vec2Config):
        raise ValueError(
            f"CPC needs a Wav2Vec2Config (its feature encoder is the strided convolution stack), got "
            f"{type(config).__name__}; use an audio preset such as 'cpc-tiny' (hf_ssl.modules.audio_encoder)"
        )
    if config.num_hidden_layers != 0:
        raise ValueError(
            f"CPC's encoder must have num_hidden_layers=0, got {config.num_hidden_layers}: transformer layers attend "
            "to future frames, which the context network must predict. Use a 'cpc-*' preset or set "
            "num_hidden_layers to 0 (or pretrain with the wav2vec2 method, which masks instead)"
        )
    if getattr(config, "apply_spec_augment", True) and (config.mask_time_prob > 0 or config.mask_feature_prob > 0):
        raise ValueError(
            "CPC's encoder config masks its input (mask_time_prob / mask_feature_prob > 0); build the model with "
            "CPCForPreTraining.from_encoder_config, which turns SpecAugment off"
        )


@torch.no_grad()
def _zero_positional_convolution(encoder: nn.Module) -> None:
    """Zero and freeze the encoder's positional convolution (it sees future frames; see the module docstring).

    The weight is weight-normed (``g * v / ||v||``): zeroing the gain ``g`` and the bias makes the output GELU(0) = 0,
    so frame t of ``last_hidden_state`` depends only on the samples of its own convolutional receptive field.
    Frozen parameters stay out of the optimizer and get no gradient under DDP.
    """
    convolution = encoder.encoder.pos_conv_embed.conv
    parametrizations = getattr(convolution, "parametrizations", None)
    gain = parametrizations.weight.original0 if parametrizations is not None else convolution.weight_g
    gain.zero_()
    convolution.bias.zero_()
    for parameter in convolution.parameters():
        parameter.requires_grad_(False)
