"""The arguments every job shares, each declared once.

:class:`ModelArguments` (which method, which encoder, where to start from) is the first argument class of every job;
the jobs extend it with what only their encoders have (a ViT's patch size, a tokenizer, a text tower).
:class:`KNNArguments` holds the kNN monitor's settings, whose defaults are :mod:`hf_ssl.evaluation.knn`'s.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..evaluation.knn import DEFAULT_K, DEFAULT_TEMPERATURE


def parse_json_object(text: str | None, flag: str) -> dict[str, Any]:
    """``'{"num_hidden_layers": 6}'`` -> a dict (``None`` or ``""`` -> ``{}``); anything but a JSON object is refused
    with a message naming ``flag``."""
    if not text:
        return {}
    try:
        value = json.loads(text) if isinstance(text, str) else text
    except json.JSONDecodeError as error:
        raise ValueError(f"{flag} must be a JSON object, e.g. '{{\"num_hidden_layers\": 2}}'; got {text!r}") from error
    if not isinstance(value, dict):
        raise ValueError(f"{flag} must be a JSON object, e.g. '{{\"num_hidden_layers\": 2}}'; got {text!r}")
    return value


@dataclass
class ModelArguments:
    """Which method, which encoder, and where to start from (every job's first argument class)."""

    method: str = field(
        default="dino", metadata={"help": "Pretraining method; it picks the job (`hf-ssl list` shows them all)."}
    )
    encoder: str | None = field(
        default=None,
        metadata={"help": "A preset (images: vit-tiny, vit-small, vit-base, timm:<arch>; text: bert-tiny ... bert-base, "
                  "albert-mini, albert-base; sentence pairs: minilm; audio: cpc-tiny, cpc-base, wav2vec2-tiny, "
                  "wav2vec2-base) or a folder / Hub id of a checkpoint. Default: the job's (`hf-ssl list`). For "
                  "image-text training this is the vision tower."},
    )
    encoder_config_overrides: str | None = field(
        default=None, metadata={"help": 'JSON dict of encoder config fields, e.g. \'{"num_hidden_layers": 6}\'.'}
    )
    init_from: str | None = field(
        default=None,
        metadata={"help": "An hf_ssl output folder to continue pretraining from: its weights (teacher, centre, queue "
                  "included), method settings and tokenizer or processor (method flags are then ignored). Optimizer "
                  "and schedules start anew; to resume a run exactly, use --resume_from_checkpoint "
                  "<output_dir>/checkpoint-N."},
    )

    def config_overrides(self) -> dict[str, Any]:
        """``encoder_config_overrides`` as a dict."""
        return parse_json_object(self.encoder_config_overrides, "--encoder_config_overrides")


@dataclass
class VisionEncoderArguments(ModelArguments):
    """:class:`ModelArguments` for a vision encoder built from a preset."""

    patch_size: int = field(default=4, metadata={"help": "Patch size of the ViT presets."})


@dataclass
class KNNArguments:
    """The weighted kNN probe (Wu et al. 2018): neighbours and vote temperature."""

    knn_k: int = field(default=DEFAULT_K, metadata={"help": "Neighbours of the kNN probe (Wu et al. 2018: 200)."})
    knn_temperature: float = field(
        default=DEFAULT_TEMPERATURE, metadata={"help": "Temperature T of the kNN votes exp(similarity / T)."}
    )
