"""The sentence-pairs job: Sentence-BERT training on sentence pairs / NLI / scored pairs, evaluated on STS-B.

Arguments: :class:`SentenceEncoderArguments` (which encoder, published weights or from scratch) and
:class:`SentencePairDataArguments` (which pairs, STS-B for evaluation, duplicate-free batches). The output folder
holds the encoder (vanilla ``AutoModel``), the tokenizer and the sentence-transformers module files, so
``SentenceTransformer(output_dir)`` loads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from datasets import IterableDataset
from huggingface_hub import EvalResult

from ..data.collators import SentenceTupleCollator
from ..data.pairs import as_stream, load_pairs, load_sts_benchmark, pairs_for_objective, text_keys
from ..data.samplers import NoDuplicatesSampler
from ..evaluation.sts import STSEvaluator, sts_spearman
from ..methods import METHOD_REGISTRY, AutoSSLModel
from ..methods.sentence_bert import save_sentence_transformers_modules
from ..modules.text_encoder import resolve_text_checkpoint
from ..publishing.datasets import model_index_dataset
from ..training.arguments import batch_size_across_processes
from .arguments import ModelArguments
from .base import FinalEvaluation, JobParts, PretrainingJob, dataclass_values


@dataclass
class SentenceEncoderArguments(ModelArguments):
    """:class:`~hf_ssl.jobs.arguments.ModelArguments` of a sentence encoder (default ``minilm``, the packaged
    all-MiniLM-L6-v2): its published weights, or its config only (``from_scratch``, where
    ``encoder_config_overrides`` may change the architecture)."""

    from_scratch: bool = field(
        default=False, metadata={"help": "Use only the encoder's config (random init), not its weights."}
    )
    tokenizer: str | None = field(default=None, metadata={"help": "Tokenizer folder / Hub id (default: the encoder's)."})


@dataclass
class SentencePairDataArguments:
    """Which sentence pairs to train on and how to evaluate."""

    dataset: str = field(
        default="stanfordnlp/snli",
        metadata={"help": "A Hub dataset id (a local copy through HF_SSL_DATA_DIR; STS-B and SNLI are read into pairs), "
                  "or a .csv/.tsv/.json/.jsonl/.parquet file."},
    )
    train_split: str = field(default="validation")
    text_columns: list[str] | None = field(
        default=None, metadata={"help": "Source columns that become anchor, positive (, negative)."}
    )
    label_column: str | None = field(default=None)
    min_positive_score: float = field(
        default=0.8, metadata={"help": "multiple_negatives on scored pairs: keep pairs scoring at least this (0-1)."}
    )
    max_train_examples: int | None = field(default=None)
    streaming: bool = field(
        default=False,
        metadata={"help": "Read the pairs as a stream (needs --max_steps; see hf_ssl.data.streaming): files and Hub "
                  "datasets are never loaded whole; no_duplicates does not apply (a stream has no sampler)."},
    )
    no_duplicates: bool = field(
        default=True, metadata={"help": "Batches without repeated texts (no in-batch false negatives)."}
    )
    sts_dataset: str | None = field(
        default="sentence-transformers/stsb",
        metadata={"help": "STS-B for evaluation: Hub id (a local copy through HF_SSL_DATA_DIR) or a folder; empty to "
                  "disable."},
    )
    monitor_max_examples: int | None = field(
        default=500, metadata={"help": "STS-B dev pairs scored at each evaluation during training (all at the end)."}
    )
    sts_max_examples: int | None = field(
        default=None, metadata={"help": "Score only the first N pairs of STS-B dev/test at the end (quick checks)."}
    )


class SentencePairsJob(PretrainingJob):
    """Sentence-BERT on pairs; STS-B dev monitor; final STS-B dev/test Spearman, trained vs starting point."""

    name = "sentence_pairs"
    default_encoder = "minilm"
    argument_classes = (SentenceEncoderArguments, SentencePairDataArguments)

    def prepare(self) -> JobParts:
        from transformers import AutoTokenizer

        encoder_args, data_args = self.arguments
        model = self.build_model()
        settings = model.method_config
        tokenizer_source = encoder_args.tokenizer or (
            encoder_args.init_from or resolve_text_checkpoint(encoder_args.encoder)
        )
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
        pairs = load_pairs(data_args.dataset, data_args.train_split, data_args.text_columns, data_args.label_column,
                           streaming=data_args.streaming)
        pairs = pairs_for_objective(pairs, settings.objective, data_args.min_positive_score)
        if data_args.max_train_examples is not None and not isinstance(pairs, IterableDataset):
            pairs = pairs.shuffle(seed=self.training_args.seed).select(range(min(len(pairs), data_args.max_train_examples)))
        if data_args.streaming:
            pairs = as_stream(pairs)
        sampler = None
        if data_args.no_duplicates and settings.objective == "multiple_negatives" and not data_args.streaming:
            sampler = NoDuplicatesSampler(
                text_keys(pairs), batch_size_across_processes(self.training_args), seed=self.training_args.seed
            )
        self.sts = {}
        evaluators = []
        if data_args.sts_dataset:
            self.sts = {split: load_sts_benchmark(data_args.sts_dataset, split, flag="--sts_dataset") for split in ("dev", "test")}
            if data_args.sts_max_examples:
                self.sts = {split: pairs.select(range(min(len(pairs), data_args.sts_max_examples)))
                            for split, pairs in self.sts.items()}
            monitor = self.sts["dev"]
            if data_args.monitor_max_examples:
                monitor = monitor.select(range(min(len(monitor), data_args.monitor_max_examples)))
            evaluators.append(STSEvaluator(monitor, self.tokenizer, "sts_dev", settings.max_seq_length))
        collator = SentenceTupleCollator(self.tokenizer, settings.max_seq_length)
        # Trainer saves its processing_class with the model: in every checkpoint and at the root.
        return JobParts(
            model=model, train_dataset=pairs, data_collator=collator, evaluators=evaluators, train_sampler=sampler,
            trainer_kwargs={"processing_class": self.tokenizer},
        )

    def build_model(self):
        """The model at its starting point: the published checkpoint's weights, random init (``from_scratch``), or
        an hf_ssl checkpoint (``init_from``). Called again after training for the final comparison."""
        from transformers import AutoConfig

        encoder_args, _ = self.arguments
        if encoder_args.init_from:
            return AutoSSLModel.from_pretrained(encoder_args.init_from)
        model_class = METHOD_REGISTRY[encoder_args.method]
        settings = dataclass_values(self.method_config)
        source = resolve_text_checkpoint(encoder_args.encoder)
        if encoder_args.from_scratch:
            config = AutoConfig.from_pretrained(source)
            for key, value in encoder_args.config_overrides().items():
                if not hasattr(config, key):
                    raise ValueError(f"encoder config {type(config).__name__} has no field {key!r}")
                setattr(config, key, value)
            return model_class.from_encoder_config(config, **settings)
        if encoder_args.encoder_config_overrides:
            raise ValueError("--encoder_config_overrides changes the architecture: use it with --from_scratch true")
        return model_class.from_text_encoder(source, **settings)

    def save_extras(self, output_dir: str, model) -> None:
        self.tokenizer.save_pretrained(output_dir)
        save_sentence_transformers_modules(model, output_dir)

    def final_evaluation(self, model) -> FinalEvaluation | None:
        import torch

        if not self.sts:
            return None
        settings = model.method_config

        def scores(candidate) -> dict[str, float]:
            return {f"sts_{split}_spearman": sts_spearman(candidate, self.tokenizer, pairs, settings.max_seq_length)
                    for split, pairs in self.sts.items()}

        encoder_args, data_args = self.arguments
        start_name = "random_init" if encoder_args.from_scratch else "before_training"
        with torch.random.fork_rng():
            torch.manual_seed(self.training_args.seed)
            start = self.build_model() if not encoder_args.init_from else None
        probes = {"pretrained": scores(model)}
        if start is not None:
            probes[start_name] = scores(start.to(model.device))
        lines = [f"{'model':<18} {'STS-B dev':>10} {'STS-B test':>11}"]
        for name, values in probes.items():
            lines.append(f"{name:<18} {100 * values['sts_dev_spearman']:>10.2f} {100 * values['sts_test_spearman']:>11.2f}")
        table = "STS-B Spearman x 100 of the cosine similarity of the sentence embeddings:\n" + "\n".join(lines)
        results = [
            EvalResult(
                task_type="sentence-similarity", **model_index_dataset([data_args.sts_dataset]),
                dataset_split=split, metric_type="spearman_cosine", metric_value=float(value),
                metric_name=f"Spearman correlation of cosine similarity ({split}, {len(self.sts[split])} pairs)",
            )
            for split, value in (("dev", probes["pretrained"]["sts_dev_spearman"]),
                                 ("test", probes["pretrained"]["sts_test_spearman"]))
        ]
        return FinalEvaluation(probes=probes, eval_results=results, table=table)
