"""wav2vec 2.0: masked contrastive learning over quantised speech units (Baevski et al. 2020, "wav2vec 2.0: A
Framework for Self-Supervised Learning of Speech Representations", arXiv:2006.11477, §3), by wrapping transformers'
``Wav2Vec2ForPreTraining``.

What transformers gives and what this adds. ``Wav2Vec2ForPreTraining`` computes the contrastive loss L_m (Eq. 3) and
the diversity loss L_d (Eq. 4) for given ``mask_time_indices`` and ``sampled_negative_indices``, as a **sum** over the
masked frames of its batch. This wrapper

- samples the masks and negatives with transformers' own ``_compute_mask_indices`` / ``_sample_negative_indices``
  (spans of ``mask_time_length`` frames starting with probability ``mask_time_prob``; negatives uniformly from the
  other masked frames of the same utterance, as fairseq), utterance by utterance on its real frames;
- divides that sum by the number of masked frames of the *global* batch: ``accepts_loss_kwargs = True``, and the
  Trainer passes ``num_items_in_batch``, the count of ``labels != -100`` over every micro-batch of the optimizer step
  and every process (fairseq normalises by the sample size the same way; an undivided sum per micro-batch would scale
  the gradients with the accumulation steps, transformers #37766). ``labels`` are the
  contrastive targets per frame: 0 (the positive sits first among the candidates) on masked frames, -100 elsewhere;
- anneals the Gumbel-softmax temperature per step from ``max_gumbel_temperature`` by ``gumbel_temperature_decay``
  down to ``min_gumbel_temperature`` (§4.2: 2 -> 0.5 by 0.999995 per update) through ``set_progress``.

Checkpoint layout: the modules of ``Wav2Vec2ForPreTraining`` are registered on this model under their own names
(``wav2vec2.``, ``quantizer.``, ``project_hid.``, ``project_q.``), so the saved weights are exactly a transformers
``Wav2Vec2ForPreTraining`` checkpoint: ``AutoModel`` / ``AutoModelForAudioClassification`` load the transformer
encoder, and ``Wav2Vec2ForPreTraining.from_pretrained`` the whole pretraining model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformers import PretrainedConfig, Wav2Vec2Config, Wav2Vec2ForPreTraining
from transformers.models.wav2vec2.modeling_wav2vec2 import (
    _compute_mask_indices,
    _sample_negative_indices,
)
from transformers.utils import ModelOutput

from ..distributed import all_reduce_sum, world_size
from ..modules.audio_encoder import check_audio_input, feature_frame_mask, frame_lengths
from .base import SSLMethodConfig, SSLPreTrainedModel, TrainingProgress

IGNORE_INDEX = -100


@dataclass
class Wav2Vec2SSLConfig(SSLMethodConfig):
    """The wav2vec 2.0 settings that ``Wav2Vec2Config`` does not hold (Baevski et al. 2020 §4.2).

    The objective's own settings stay in the encoder's ``Wav2Vec2Config``, where transformers reads them:
    ``mask_time_prob`` (0.65), ``mask_time_length`` (10), ``mask_time_min_masks`` (2), ``num_negatives`` (100),
    ``contrastive_logits_temperature`` (0.1), ``diversity_loss_weight`` (0.1), ``num_codevector_groups`` (G = 2),
    ``num_codevectors_per_group`` (V = 320); set them with ``--encoder_config_overrides``.

    max_gumbel_temperature / min_gumbel_temperature / gumbel_temperature_decay: the Gumbel-softmax temperature is
        ``max(max * decay ** step, min)`` at optimizer step ``step`` (2.0, 0.5, 0.999995 in the paper).
    sampling_rate: the rate (Hz) the encoder is trained at; the audio job resamples to it, forward checks it.
    """

    method = "wav2vec2"

    max_gumbel_temperature: float = 2.0
    min_gumbel_temperature: float = 0.5
    gumbel_temperature_decay: float = 0.999995
    sampling_rate: int = 16000

    def __post_init__(self):
        self.check_ranges(
            at_least_one=("sampling_rate",),
            positive=("max_gumbel_temperature", "min_gumbel_temperature", "gumbel_temperature_decay"),
        )
        if self.min_gumbel_temperature > self.max_gumbel_temperature or self.gumbel_temperature_decay > 1:
            raise ValueError(
                "the Gumbel temperature anneals down: need min_gumbel_temperature <= max_gumbel_temperature and "
                f"gumbel_temperature_decay <= 1, got {self.min_gumbel_temperature}, {self.max_gumbel_temperature}, "
                f"{self.gumbel_temperature_decay}"
            )


@dataclass
class Wav2Vec2SSLOutput(ModelOutput):
    """Output of :class:`Wav2Vec2SSLForPreTraining`.

    loss: ``(L_m + diversity_loss_weight * L_d * n_local) / n_global``: the contrastive loss summed over the local
        masked frames divided by the global masked-frame count, so that summing over micro-batches and averaging
        gradients over processes gives the mean over every masked frame of the optimizer step. Without
        ``num_items_in_batch`` (outside the Trainer), ``n_global`` is the all-reduced count over the number of
        processes. L_d is computed from each process's own codebook use, as in fairseq.
    contrastive_loss: L_m per masked frame of the local batch; diversity_loss: L_d (Eq. 4) of the local batch.
    codevector_perplexity: perplexity of the codebook use over the masked frames (G * V at best).
    num_masked_frames: masked frames in the local batch.
    projected_states / projected_quantized_states: ``(batch, frames, proj_codevector_dim)`` c_t and q_t.
    """

    loss: torch.Tensor | None = None
    contrastive_loss: torch.Tensor | None = None
    diversity_loss: torch.Tensor | None = None
    codevector_perplexity: torch.Tensor | None = None
    num_masked_frames: torch.Tensor | None = None
    projected_states: torch.Tensor | None = None
    projected_quantized_states: torch.Tensor | None = None


class Wav2Vec2SSLForPreTraining(SSLPreTrainedModel):
    """wav2vec 2.0 pretraining over transformers' ``Wav2Vec2ForPreTraining`` (see the module docstring).

    Inputs: ``input_values`` ``(batch, samples)`` and ``attention_mask`` ``(batch, samples)`` as a
    ``Wav2Vec2FeatureExtractor`` pads them; optionally ``mask_time_indices`` ``(batch, frames)`` and
    ``sampled_negative_indices`` ``(batch, frames, num_negatives)`` from :meth:`sample_pretraining_inputs` (the audio
    collator calls it, so the Trainer can count the masked frames in ``labels``); drawn here when absent.
    """

    method_config_class = Wav2Vec2SSLConfig
    pretraining_job = "audio"
    paper = (
        "Baevski et al. 2020. wav2vec 2.0: A Framework for Self-Supervised Learning of Speech Representations. "
        "arXiv:2006.11477"
    )
    main_input_name = "input_values"
    # The loss is a sum over masked frames divided by `num_items_in_batch` (the global masked-frame count).
    accepts_loss_kwargs = True

    def __init__(self, config: PretrainedConfig):
        super().__init__(config)
        if not isinstance(config, Wav2Vec2Config):
            raise ValueError(
                f"wav2vec 2.0 needs a Wav2Vec2Config, got {type(config).__name__}; use an audio preset such as "
                "'wav2vec2-tiny' (hf_ssl.modules.audio_encoder)"
            )
        if config.num_negatives < 1 or not 0 < config.mask_time_prob <= 1:
            raise ValueError(
                f"wav2vec 2.0 needs num_negatives >= 1 and 0 < mask_time_prob <= 1 in the encoder config, got "
                f"{config.num_negatives} and {config.mask_time_prob}"
            )
        # transformers' model, whose modules become ours (same objects, same names): its forward computes the loss.
        pretraining = Wav2Vec2ForPreTraining(config)
        object.__setattr__(self, "_pretraining", pretraining)
        self.register_published_encoder(pretraining.wav2vec2)
        self.dropout_features = pretraining.dropout_features
        self.quantizer = pretraining.quantizer
        self.project_hid = pretraining.project_hid
        self.project_q = pretraining.project_q
        self.post_init()
        self._gumbel_temperature = self.method_config.max_gumbel_temperature
        self.quantizer.temperature = self._gumbel_temperature

    def published_prefixes(self) -> tuple[str, ...]:
        # The published root stays a whole Wav2Vec2ForPreTraining checkpoint (module docstring), quantizer included.
        return tuple(name for name, _ in self._pretraining.named_children())

    def _init_weights(self, module):
        # transformers' initialisation (Gumbel projection N(0, 1), uniform codebook, Kaiming convolutions), not the
        # heads' truncated normal; project_hid / project_q keep nn.Linear's default, as Wav2Vec2ForPreTraining does.
        if module is self:
            self.project_hid.reset_parameters()
            self.project_q.reset_parameters()
        elif module not in (self.project_hid, self.project_q):
            self._pretraining._init_weights(module)

    # ----------------------------------------------------------------------------------------------------------------
    def set_progress(self, progress: TrainingProgress) -> None:
        settings: Wav2Vec2SSLConfig = self.method_config
        self._gumbel_temperature = max(
            settings.max_gumbel_temperature * settings.gumbel_temperature_decay**progress.step,
            settings.min_gumbel_temperature,
        )
        self.quantizer.temperature = self._gumbel_temperature

    def schedule_values(self) -> dict[str, float]:
        return {"gumbel_temperature": self._gumbel_temperature}

    # ----------------------------------------------------------------------------------------------------------------
    def minimum_frames(self) -> int:
        """Frames an utterance needs: room for ``mask_time_min_masks`` distinct spans, and at least 2 masked frames
        (a masked frame's negatives are the *other* masked frames of its utterance)."""
        config = self.config
        return max(config.mask_time_length + max(config.mask_time_min_masks, 2) - 1, 2)

    def sample_pretraining_inputs(
        self,
        attention_mask: torch.Tensor | None,
        batch: int,
        samples: int,
        seed: int | Sequence[int] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Masks, negatives and contrastive targets for a padded batch ``(batch, samples)``.

        Each utterance is drawn on its own real frames: spans from transformers' ``_compute_mask_indices``,
        negatives from ``_sample_negative_indices`` among the masked frames of the same utterance (so never padding),
        so an utterance's draws depend neither on the padding nor on the other utterances' lengths. Both helpers draw
        from NumPy's global RNG; ``seed`` makes them draw from a stream seeded by it and leaves the global state as it
        was: one int for the batch (the utterances drawn one after the other), or one per utterance (its masks and
        negatives are then the same whatever batch or process it lands in, as a data-parallel run needs).

        Returns ``mask_time_indices`` ``(B, T)`` bool, ``sampled_negative_indices`` ``(B, T, num_negatives)`` int64
        (flat indices into ``B * T``; unmasked frames point at their utterance's first frame) and ``labels``
        ``(B, T)``: 0 on masked frames, -100 elsewhere.
        """
        config = self.config
        if attention_mask is None:
            lengths = torch.full((batch,), samples, dtype=torch.long)
        else:
            lengths = attention_mask.long().sum(-1).cpu()
        frames = int(frame_lengths(config, torch.tensor(samples)))
        real_frames = feature_frame_mask(config, lengths, frames).sum(-1).tolist()
        per_example = seed is not None and not isinstance(seed, (int, np.integer))
        if per_example and len(seed) != batch:
            raise ValueError(f"seed must be one int or one per utterance ({batch}), got {len(seed)} seeds")
        mask = np.zeros((batch, frames), dtype=bool)
        negatives = np.zeros((batch, frames, config.num_negatives), dtype=np.int64)
        with _numpy_seeded(None if per_example else seed):
            for row, length in enumerate(real_frames):
                with _numpy_seeded(seed[row] if per_example else None):
                    spans = _compute_mask_indices(
                        (1, length),
                        mask_prob=config.mask_time_prob,
                        mask_length=config.mask_time_length,
                        min_masks=max(config.mask_time_min_masks, 2),
                    )
                    if spans.sum() < 2:
                        raise ValueError(
                            f"an utterance got fewer than 2 masked frames (mask_time_length="
                            f"{config.mask_time_length}, {real_frames} real frames): use longer audio or a shorter "
                            "mask_time_length"
                        )
                    drawn = _sample_negative_indices((1, length), config.num_negatives, mask_time_indices=spans)
                mask[row, :length] = spans[0]
                negatives[row, :length] = drawn[0]
        negatives += np.arange(batch)[:, None, None] * frames
        mask_tensor = torch.from_numpy(mask)
        labels = torch.full((batch, frames), IGNORE_INDEX, dtype=torch.long).masked_fill(mask_tensor, 0)
        return {
            "mask_time_indices": mask_tensor,
            "sampled_negative_indices": torch.from_numpy(negatives),
            "labels": labels,
        }

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        mask_time_indices: torch.Tensor | None = None,
        sampled_negative_indices: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        num_items_in_batch: torch.Tensor | int | None = None,
        sampling_rate: int | None = None,
        return_loss: bool = True,
        **kwargs,
    ) -> Wav2Vec2SSLOutput:
        check_audio_input(
            self.config,
            input_values,
            attention_mask,
            sampling_rate=self.method_config.sampling_rate,
            min_frames=self.minimum_frames(),
            given_sampling_rate=sampling_rate,
            reason=f" (masked spans of {self.config.mask_time_length} frames)",
        )
        if mask_time_indices is None:
            if labels is not None:
                mask_time_indices = labels.ne(IGNORE_INDEX)
            else:
                sampled = self.sample_pretraining_inputs(attention_mask, *input_values.shape)
                mask_time_indices = sampled["mask_time_indices"].to(input_values.device)
                sampled_negative_indices = sampled["sampled_negative_indices"].to(input_values.device)
        mask_time_indices = mask_time_indices.bool()
        if labels is not None and not torch.equal(labels.ne(IGNORE_INDEX), mask_time_indices):
            raise ValueError("labels must be -100 exactly on the frames that mask_time_indices does not mask")
        if sampled_negative_indices is None and return_loss:
            raise ValueError(
                "pass sampled_negative_indices with mask_time_indices (Wav2Vec2SSLForPreTraining."
                "sample_pretraining_inputs gives both), or neither and the model samples them"
            )
        outputs = self._pretraining(
            input_values,
            attention_mask=attention_mask,
            mask_time_indices=mask_time_indices,
            sampled_negative_indices=sampled_negative_indices if return_loss else None,
        )
        num_masked = mask_time_indices.sum()
        if not return_loss:
            return Wav2Vec2SSLOutput(
                codevector_perplexity=outputs.codevector_perplexity,
                num_masked_frames=num_masked,
                projected_states=outputs.projected_states,
                projected_quantized_states=outputs.projected_quantized_states,
            )
        # transformers: loss = sum over masked frames of L_m + alpha * L_d * n_local; normalise by the global count.
        # Without the Trainer's count: the masked frames of every process over the number of processes, so that DDP's
        # gradient average (and the mean of the processes' losses) is the global batch's mean.
        if num_items_in_batch is None:
            denominator = all_reduce_sum(num_masked.detach().float().clone()) / world_size()
        else:
            denominator = num_items_in_batch
        if isinstance(denominator, torch.Tensor):
            denominator = denominator.to(outputs.loss.device, outputs.loss.dtype)
        return Wav2Vec2SSLOutput(
            loss=outputs.loss / denominator,
            contrastive_loss=(outputs.contrastive_loss / num_masked).detach(),
            diversity_loss=(outputs.diversity_loss / num_masked).detach(),
            codevector_perplexity=outputs.codevector_perplexity.detach(),
            num_masked_frames=num_masked.detach().float(),
            projected_states=outputs.projected_states,
            projected_quantized_states=outputs.projected_quantized_states,
        )


@contextlib.contextmanager
def _numpy_seeded(seed: int | None):
    """NumPy's global RNG seeded with ``seed`` inside, restored on exit (``None``: untouched). transformers' mask and
    negative helpers call ``np.random`` directly, so a seeded stream has to go through the global state."""
    if seed is None:
        yield
        return
    state = np.random.get_state()
    np.random.seed(seed % 2**32)
    try:
        yield
    finally:
        np.random.set_state(state)
