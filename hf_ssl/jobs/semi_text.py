"""Semi-supervised text classification (job ``semi_text``): a transformers sequence classifier fine-tuned on a few
labelled texts (or sentence pairs) and many unlabelled ones, with :class:`hf_ssl.views.TextWeakStrongViews` (word
swap or dropout; UDA's TF-IDF word replacement, its IDF table fitted on the unlabelled texts; back-translation, UDA's
other text view, needs a translation model and is not built in).

The classifier starts from a text checkpoint (``--encoder``: ``minilm``, the packaged all-MiniLM-L6-v2; an hf_ssl
masked-LM output; any BERT-like checkpoint) with a new head for the dataset's classes; the output folder holds the
tokenizer, so ``pipeline("text-classification")`` serves it. Data: STS-B and SNLI (their Hub ids or local copies) are
read as sentence pairs (``anchor``, ``positive``, ``label``); other datasets by the columns ``--input_columns``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from ..data.pairs import as_stream, load_pairs
from ..modules.text_encoder import TEXT_ENCODER_PRESETS, resolve_text_checkpoint
from ..views.weak_strong import TextWeakStrongConfig, TextWeakStrongViews
from .base import JobParts
from .semi import ClassifierArguments, SemiDataArguments, SemiSupervisedJob


@dataclass
class TextClassifierArguments(ClassifierArguments):
    """The classifier's start (a text checkpoint) and method, its tokenizer and the text columns."""

    tokenizer: str | None = field(default=None, metadata={"help": "Tokenizer folder / Hub id (default: the encoder's)."})
    max_length: int = field(default=128, metadata={"help": "Tokens per example (pairs: the longer text is cut first)."})
    input_columns: list[str] | None = field(
        default=None,
        metadata={"help": "The text column, or two for pairs (default: anchor positive when the data has them, else "
                  "text)."},
    )


class SemiTextJob(SemiSupervisedJob):
    """Semi-supervised fine-tuning of a text classifier; see the module docstring."""

    name = "semi_text"
    task = "text-classification"
    default_encoder = "minilm"
    published_as = ("AutoModelForSequenceClassification", "classifier")
    record_sections = ("encoder", "data", "views")
    argument_classes = (TextClassifierArguments, SemiDataArguments, TextWeakStrongConfig)

    def load_split(self, split: str):
        _, data_args, _ = self.arguments
        return load_pairs(data_args.dataset, split)

    def load_stream(self, split: str):
        _, data_args, _ = self.arguments
        return as_stream(load_pairs(data_args.dataset, split, streaming=True))

    def build_classifier(self, class_names: list[str]):
        model_args, _, _ = self.arguments
        if model_args.encoder in TEXT_ENCODER_PRESETS:
            raise ValueError(f"text classification starts from a checkpoint, not the preset {model_args.encoder!r}: "
                             "pass --encoder minilm, an hf_ssl masked-LM output or a Hub id")
        path = resolve_text_checkpoint(model_args.encoder)
        config = AutoConfig.from_pretrained(path)
        config.update({"num_labels": len(class_names), "id2label": dict(enumerate(class_names)),
                       "label2id": {name: index for index, name in enumerate(class_names)},
                       **model_args.config_overrides()})
        if hasattr(config, "ssl_config"):  # an hf_ssl pretraining output: the classifier needs its encoder only
            del config.ssl_config
        self.tokenizer = AutoTokenizer.from_pretrained(model_args.tokenizer or path)
        return AutoModelForSequenceClassification.from_pretrained(path, config=config, ignore_mismatched_sizes=True)

    def views(self, unlabelled):
        model_args, _, config = self.arguments
        columns = tuple(model_args.input_columns or (
            ("anchor", "positive") if "positive" in unlabelled.column_names else ("text",)))
        texts = zip(*(unlabelled[column] for column in columns)) if len(columns) > 1 else unlabelled[columns[0]]
        return TextWeakStrongViews.fit(texts, self.tokenizer, model_args.max_length, config=config,
                                       input_columns=columns)

    def prepare(self) -> JobParts:
        parts = super().prepare()
        parts.trainer_kwargs["processing_class"] = self.tokenizer  # Trainer saves it with every checkpoint
        return parts

    def save_extras(self, output_dir: str, model) -> None:
        # AutoTokenizer / pipeline("text-classification") tokenise exactly as training did.
        self.tokenizer.save_pretrained(output_dir)
