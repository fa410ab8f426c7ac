"""``hf-ssl evaluate CHECKPOINT --task NAME``: one evaluation protocol of :mod:`hf_ssl.evaluation` on a checkpoint.

Each task is a dataclass of arguments (parsed by ``transformers.HfArgumentParser``, like the recipes' arguments: the
kNN flags are the recipes' ``--knn_k`` / ``--knn_temperature``) and a function ``(checkpoint, arguments) -> dict``
whose result is printed as JSON (or a string printed as is). Tasks:

- ``probe``: frozen-feature protocols of the encoder that plain ``transformers.AutoModel`` loads, on a labelled image
  dataset (optionally against random init and raw pixels): kNN and linear-probe top-1, few-shot episodes on the test
  split (:mod:`hf_ssl.evaluation.few_shot`) and out-of-distribution detection against other image sets
  (:mod:`hf_ssl.evaluation.ood`); ``--update_card`` records the results in the checkpoint's ``eval_results.json``
  and model card;
- ``sts``: STS-benchmark Spearman of sentence embeddings (an hf_ssl model that embeds text, or any text encoder,
  pooled as a Sentence-BERT bi-encoder);
- ``zero-shot``: zero-shot top-1 of an image-text checkpoint with held-out prompt templates.

Other code adds tasks with :func:`register_evaluation_task`.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import EvalResult
from transformers import AutoConfig, AutoModel, AutoTokenizer
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from ..data.images import EVAL_FRACTION, ImageSplits, load_image_dataset, load_image_splits
from ..data.pairs import HELD_OUT_TEMPLATES, load_sts_benchmark
from ..data.sources import bare_name, hub_id_for, readable_name
from ..evaluation.comparison import (
    compare_with_random_init,
    evaluate_checkpoint,
    format_comparison,
)
from ..evaluation.features import default_eval_transform, extract_features, fixed_subset, raw_pixel_features
from ..evaluation.few_shot import (
    CLASSIFIER_DESCRIPTIONS,
    DEFAULT_EPISODES,
    DEFAULT_QUERIES,
    DEFAULT_SHOTS,
    DEFAULT_WAYS,
    FEW_SHOT_CLASSIFIERS,
    few_shot_evaluation,
    few_shot_key,
)
from ..evaluation.ood import DEFAULT_OOD_K, OOD_SCORES, TPR_LEVEL, ood_evaluation, ood_key
from ..evaluation.sts import sts_spearman
from ..evaluation.zero_shot import zero_shot_accuracy
from ..methods import METHOD_REGISTRY, AutoSSLModel, SentenceBertForPreTraining
from ..modules.backbones import build_encoder
from ..modules.text_encoder import resolve_text_checkpoint
from ..publishing.datasets import model_index_dataset
from ..publishing.model_card import comparison_table, write_model_card
from ..publishing.run_record import (
    EVAL_RESULTS,
    RUN_RECORD,
    eval_result_to_dict,
    eval_results_from_json,
    recorded_normalisation,
)
from ..training.errors import DataclassArgumentParser
from .arguments import KNNArguments


@dataclass
class EvaluateArguments:
    """What to evaluate, and with which protocol."""

    checkpoint: str = field(
        metadata={"help": "Folder or Hub id of a checkpoint (an hf_ssl run's output_dir); also the first positional "
                  "argument. The sts task also takes any text encoder, or 'minilm' (the packaged all-MiniLM-L6-v2)."}
    )
    task: str = field(default="probe", metadata={"help": "The protocol (see the task list above)."})


@dataclass
class ImageDataArguments:
    """The labelled image data of the probe and zero-shot tasks."""

    dataset: str = field(
        default="embedded",
        metadata={"help": "'embedded', a Hub dataset id (resolved to a local copy through HF_SSL_DATA_DIR) or a folder "
                  "(CIFAR-10 zips, Fashion-MNIST IDX, imagefolder)."},
    )
    train_split: str = field(default="train", metadata={"help": "kNN memory / probe training split."})
    test_split: str = field(
        default="test",
        metadata={"help": "Split the accuracy is measured on. A dataset whose only split is train_split (a folder of "
                  "class subfolders) holds out eval_fraction of it instead: the images pretraining probed on."},
    )
    eval_fraction: float = field(
        default=EVAL_FRACTION, metadata={"help": "Share of each class held out when there is no test_split."}
    )
    image_size: int | None = field(default=None, metadata={"help": "Default: the encoder config's image_size."})
    check_image_files: bool = field(
        default=True, metadata={"help": "First check that every image file of a local folder decodes."}
    )
    skip_bad_files: bool = field(
        default=False, metadata={"help": "Leave out the files the check finds unreadable (each one logged)."}
    )

    def load(self, max_train_examples: int | None = None) -> ImageSplits:
        """The train split and the measured images (``test_split``, or the hold-out pretraining used)."""
        splits = load_image_splits(
            self.dataset, self.train_split, self.test_split, eval_fraction=self.eval_fraction,
            max_train_examples=max_train_examples, check_files=self.check_image_files,
            skip_bad_files=self.skip_bad_files,
        )
        if splits.eval is None:
            raise ValueError(
                f"{self.dataset} has no labelled images to measure on (no {self.test_split!r} split, and no class "
                "labels to hold out from); use a labelled dataset (class subfolders) or name a split: --test_split"
            )
        return splits


#: The probe task's protocols: those of :func:`compare_with_random_init`, and the few-shot and OOD protocols.
CLASSIFICATION_PROBES = ("knn", "linear")
PROBES = (*CLASSIFICATION_PROBES, "few_shot", "ood")


@dataclass
class ProbeArguments(KNNArguments):
    """The probe task: frozen-feature protocols."""

    probes: list[str] = field(
        default_factory=lambda: list(CLASSIFICATION_PROBES),
        metadata={"help": "Any of knn, linear (top-1 on --test_split), few_shot (episodes from --test_split), ood "
                  "(--test_split against --ood_datasets)."},
    )
    max_train_examples: int | None = field(
        default=None, metadata={"help": "Cap the train split (default: all): kNN bank, probe set, OOD reference."}
    )
    max_test_examples: int | None = field(
        default=None,
        metadata={"help": "Cap the measured split (fixed subset, seed 0): its accuracy, few-shot episodes and OOD "
                  "positives (default: all)."},
    )
    compare_random_init: bool = field(
        default=False, metadata={"help": "Also probe the same encoder at random init, and raw pixels."}
    )
    update_card: bool = field(
        default=False,
        metadata={"help": "Record the results in the checkpoint folder's eval_results.json (model-index entries, "
                  "baselines) and rewrite its model card README.md."},
    )


@dataclass
class FewShotArguments:
    """The few_shot probe: N-way K-shot episodes on the test split (Chen et al. 2019; Tian et al. 2020)."""

    few_shot_ways: int = field(default=DEFAULT_WAYS, metadata={"help": "Classes per episode (N)."})
    few_shot_shots: list[int] = field(
        default_factory=lambda: list(DEFAULT_SHOTS), metadata={"help": "Support images per class (K), each a setting."}
    )
    few_shot_queries: int = field(default=DEFAULT_QUERIES, metadata={"help": "Query images per class."})
    few_shot_episodes: int = field(default=DEFAULT_EPISODES, metadata={"help": "Episodes per setting."})
    few_shot_classifiers: list[str] = field(
        default_factory=lambda: list(FEW_SHOT_CLASSIFIERS),
        metadata={"help": "prototype (nearest prototype), cosine (baseline++ trained on the support set), logistic "
                  "(scikit-learn logistic regression)."},
    )
    few_shot_seed: int = field(default=0, metadata={"help": "Seed of the episodes (the same for every encoder)."})


@dataclass
class OODArguments:
    """The ood probe: the test split (in-distribution, positives) against other image sets."""

    ood_datasets: list[str] | None = field(
        default=None,
        metadata={"help": "Out-of-distribution image sets: Hub ids (local copies through HF_SSL_DATA_DIR), "
                  "'emoji_captions' or folders, e.g. zalando-datasets/fashion_mnist emoji_captions."},
    )
    ood_split: str = field(
        default="test", metadata={"help": "Split of each OOD set (a set with one split only uses that one)."}
    )
    max_ood_examples: int | None = field(default=None, metadata={"help": "Cap each OOD set (fixed subset, seed 0)."})
    ood_scores: list[str] = field(
        default_factory=lambda: list(OOD_SCORES),
        metadata={"help": "knn (k-th neighbour distance, Sun et al. 2022) and/or mahalanobis (SSD, shared "
                  "covariance)."},
    )
    ood_knn_k: int = field(
        default=DEFAULT_OOD_K, metadata={"help": "Neighbour rank of the knn score (50 with all of CIFAR-10 train)."}
    )
    ood_clusters: int = field(
        default=0,
        metadata={"help": "0: Mahalanobis to the class means of the train split; N: to N k-means clusters of the "
                  "train features, without labels (SSD)."},
    )


@dataclass
class STSArguments:
    """The sts task: Spearman of the cosine similarity of sentence embeddings against gold scores."""

    sts_dataset: str = field(
        default="sentence-transformers/stsb",
        metadata={"help": "STS-B: its Hub id (resolved through HF_SSL_DATA_DIR) or a folder with sts-*.csv."},
    )
    sts_splits: list[str] = field(default_factory=lambda: ["dev", "test"], metadata={"help": "Splits to score."})
    sts_max_pairs: int | None = field(default=None, metadata={"help": "Score the first N pairs of each split only."})
    pooling: str = field(
        default="mean", metadata={"help": "mean, cls or max: pooling of a plain text encoder (hf_ssl runs keep theirs)."}
    )


@dataclass
class ZeroShotArguments:
    """The zero-shot task's prompts."""

    zero_shot_templates: list[str] | None = field(
        default=None,
        metadata={"help": "Prompt templates with one {} for the class name (default: the templates hf_ssl's CLIP "
                  "recipes hold out from training)."},
    )


@dataclass(frozen=True)
class EvaluationTask:
    """One ``--task``: its help line, its argument dataclasses and ``run(checkpoint, arguments) -> dict | str``, where
    ``arguments`` maps each dataclass to its parsed instance."""

    help: str
    argument_classes: tuple[type, ...]
    run: Callable[[str, dict[type, Any]], dict | str]


#: Evaluation tasks by name; other modules add theirs with :func:`register_evaluation_task`.
EVALUATION_TASKS: dict[str, EvaluationTask] = {}


def register_evaluation_task(name: str, help: str, argument_classes: tuple[type, ...], run: Callable) -> None:
    """Make ``hf-ssl evaluate --task NAME`` available, with the flags of ``argument_classes`` (dataclasses)."""
    EVALUATION_TASKS[name] = EvaluationTask(help, tuple(argument_classes), run)


def main(argv: list[str]) -> int:
    """``hf-ssl evaluate``: parse ``[CHECKPOINT] [--flag value ...]``, run the task, print its result."""
    if argv and not argv[0].startswith("-"):
        argv = ["--checkpoint", argv[0], *argv[1:]]
    classes = list(dict.fromkeys(cls for task in EVALUATION_TASKS.values() for cls in task.argument_classes))
    parser = DataclassArgumentParser(  # errors raise UsageError: one line in hf-ssl
        [EvaluateArguments, *classes], prog="hf-ssl evaluate",
        description="Evaluate a checkpoint on one task. Tasks: "
        + "; ".join(f"{name}: {task.help}" for name, task in EVALUATION_TASKS.items()) + ".",
    )
    common, *parsed = parser.parse_args_into_dataclasses(args=argv)
    if common.task not in EVALUATION_TASKS:
        parser.error(f"unknown task {common.task!r}; choose one of {', '.join(EVALUATION_TASKS)}")
    task = EVALUATION_TASKS[common.task]
    result = task.run(common.checkpoint, {type(arguments): arguments for arguments in parsed})
    print(result if isinstance(result, str) else json.dumps(result, indent=2))
    return 0


# --------------------------------------------------------------------------------------------------------------------
def _run_probes(checkpoint: str, arguments: dict[type, Any]) -> dict | str:
    data, probe = arguments[ImageDataArguments], arguments[ProbeArguments]
    few_shot, ood = arguments[FewShotArguments], arguments[OODArguments]
    unknown = [name for name in probe.probes if name not in PROBES]
    if unknown or not probe.probes:
        raise ValueError(f"--probes takes any of {', '.join(PROBES)}; got {' '.join(probe.probes) or 'nothing'}")
    if "ood" in probe.probes and not ood.ood_datasets:
        raise ValueError("the ood probe needs out-of-distribution images: --ood_datasets "
                         "zalando-datasets/fashion_mnist")
    if ood.ood_clusters < 0:
        raise ValueError(f"--ood_clusters must be 0 (class means) or a number of k-means clusters, got "
                         f"{ood.ood_clusters}")
    if probe.update_card and not (Path(checkpoint) / "config.json").is_file():
        raise ValueError(f"--update_card writes into a local checkpoint folder; {checkpoint} is not one (no "
                         "config.json): evaluate a folder, or drop --update_card")
    splits = data.load()
    measured = len(splits.eval)
    splits.eval = fixed_subset(splits.eval, probe.max_test_examples, 0, "max_test_examples")
    if len(splits.eval) < measured:  # the cards say so
        splits.eval_name = f"{splits.eval_name} ({len(splits.eval):,} of {measured:,} images, seed 0)"
    train, test = splits.train, splits.eval
    encoder = AutoModel.from_pretrained(checkpoint)
    size = data.image_size or getattr(encoder.config, "image_size", 224)
    transform = default_eval_transform(size, *_normalisation(checkpoint))
    classification = tuple(name for name in probe.probes if name in CLASSIFICATION_PROBES)
    rows: dict[str, dict[str, float]] = {}
    if classification:
        common = dict(probes=classification, k=probe.knn_k, temperature=probe.knn_temperature, transform=transform,
                      max_train_examples=probe.max_train_examples)
        if probe.compare_random_init:
            rows = compare_with_random_init(encoder, train, test, **common)
        else:
            rows = {"pretrained": evaluate_checkpoint(encoder, train, test, **common)}
    sections = _feature_protocols(encoder, splits, probe, few_shot, ood, transform, size, data)
    if probe.update_card:
        _record_results(Path(checkpoint), rows, sections, _eval_results(rows, sections, data, splits, probe, few_shot,
                                                                        ood))
    if not probe.compare_random_init:
        return {**rows.get("pretrained", {}), **{k: v for section in sections.values() for k, v in
                                                 section.get("pretrained", {}).items()}}
    tables = [format_comparison(rows)] if rows else []
    tables += [f"{name}:\n{comparison_table(section)}" for name, section in sections.items()]
    return "\n\n".join(tables)


def _feature_protocols(encoder, splits: ImageSplits, probe: ProbeArguments, few_shot: FewShotArguments,
                       ood: OODArguments, transform, size, data: ImageDataArguments) -> dict[str, dict]:
    """``{"few_shot": {encoder: {metric: value}}, "ood": {...}}`` for the requested protocols; each encoder's
    features of each split are extracted once."""
    wanted = [name for name in ("few_shot", "ood") if name in probe.probes]
    if not wanted:
        return {}
    train = fixed_subset(splits.train, probe.max_train_examples, 0, "max_train_examples")
    ood_sets = {_dataset_key(source): _load_ood_set(source, ood, data) for source in ood.ood_datasets or []}
    sections: dict[str, dict[str, dict[str, float]]] = {name: {} for name in wanted}
    for name, features_of in _feature_extractors(encoder, probe.compare_random_init, transform, size):
        test_features, test_labels = features_of(splits.eval, "label")
        if "few_shot" in wanted:
            sections["few_shot"][name] = few_shot_evaluation(
                test_features, test_labels, ways=few_shot.few_shot_ways, shots=few_shot.few_shot_shots,
                queries=few_shot.few_shot_queries, episodes=few_shot.few_shot_episodes,
                classifiers=few_shot.few_shot_classifiers, seed=few_shot.few_shot_seed,
            )
        if "ood" in wanted:
            train_features, train_labels = features_of(train, "label")
            sections["ood"][name] = ood_evaluation(
                train_features, test_features, {key: features_of(images, None)[0] for key, images in ood_sets.items()},
                train_labels=train_labels if ood.ood_clusters == 0 else None, scores=ood.ood_scores,
                k=ood.ood_knn_k, num_clusters=max(1, ood.ood_clusters),
            )
    return sections


def _feature_extractors(encoder, compare: bool, transform, size) -> Iterator[tuple[str, Callable]]:
    """``(name, features_of(dataset, label_column))`` for the encoder and, with ``compare``, the same architecture at
    random init (seed 0, as :func:`compare_with_random_init`) and raw pixels."""
    def of(model):
        return lambda dataset, label_column: extract_features(model, dataset, label_column=label_column,
                                                              transform=transform)

    yield "pretrained", of(encoder)
    if compare:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            random_encoder = build_encoder(encoder.config)
        yield "random_init", of(random_encoder)
        yield "raw_pixels", lambda dataset, label_column: raw_pixel_features(
            dataset, image_size=size, label_column=label_column, transform=transform)


def _load_ood_set(source: str, ood: OODArguments, data: ImageDataArguments):
    splits = load_image_dataset(source, check_files=data.check_image_files, skip_bad_files=data.skip_bad_files)
    if ood.ood_split in splits:
        images = splits[ood.ood_split]
    elif len(splits) == 1:
        images = next(iter(splits.values()))
    else:
        raise ValueError(f"{source} has no {ood.ood_split!r} split (it has {', '.join(splits)}); pick one with "
                         "--ood_split")
    return fixed_subset(images, ood.max_ood_examples, 0, "max_ood_examples")


def _dataset_key(source: str) -> str:
    """A short name for result keys: ``zalando-datasets/fashion_mnist`` -> ``fashion_mnist``."""
    name = Path(bare_name(source).rstrip("/\\")).name or str(source)
    return re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")


def _eval_results(rows, sections, data: ImageDataArguments, splits: ImageSplits, probe: ProbeArguments,
                  few_shot: FewShotArguments, ood: OODArguments) -> list[EvalResult]:
    """The pretrained encoder's numbers as model-index entries, each with its protocol in ``metric_name``."""
    dataset = dict(**model_index_dataset([data.dataset]), dataset_split=splits.eval_name)
    pretrained = rows.get("pretrained", {})
    results = []
    classification = {"knn_top1": f"kNN top-1 (k={probe.knn_k}, T={probe.knn_temperature}, frozen features)",
                      "linear_probe_top1": "linear probe top-1 (frozen features, L-BFGS)"}
    for key, protocol in classification.items():
        if key in pretrained:
            results.append(EvalResult(task_type="image-classification", metric_type="accuracy",
                                      metric_value=float(pretrained[key]), metric_name=protocol, **dataset))
    scores = sections.get("few_shot", {}).get("pretrained", {})
    for shots in few_shot.few_shot_shots:
        for classifier in few_shot.few_shot_classifiers:
            key = few_shot_key(few_shot.few_shot_ways, shots, classifier)
            if key in scores:
                protocol = (f"{few_shot.few_shot_ways}-way {shots}-shot, {CLASSIFIER_DESCRIPTIONS[classifier]} "
                            f"({few_shot.few_shot_episodes} episodes, {few_shot.few_shot_queries} queries per class, "
                            "frozen features)")
                results.append(EvalResult(
                    task_type="image-classification", task_name="few-shot image classification",
                    metric_type="accuracy", metric_value=float(scores[key]), metric_name=protocol,
                    metric_args={"ci95": float(scores[f"{key}_ci95"])}, **dataset))
    scores = sections.get("ood", {}).get("pretrained", {})
    means = "class means" if ood.ood_clusters == 0 else f"{ood.ood_clusters} k-means clusters"
    detectors = {"knn": f"kNN distance (k={ood.ood_knn_k}, L2-normalised features)",
                 "mahalanobis": f"Mahalanobis distance to {means}, shared covariance"}
    metrics = {"auroc": ("roc_auc", "AUROC"), "fpr95": ("fpr", f"FPR at {TPR_LEVEL:.0%} TPR")}
    for source in ood.ood_datasets or []:
        other = readable_name(source) or hub_id_for(source) or _dataset_key(source)
        for score in ood.ood_scores:
            for metric, (metric_type, label) in metrics.items():
                key = ood_key(_dataset_key(source), score, metric)
                if key in scores:
                    results.append(EvalResult(
                        task_type="image-classification", task_name=f"out-of-distribution detection vs {other}",
                        metric_type=metric_type, metric_value=float(scores[key]),
                        metric_name=f"{label} vs {other}: {detectors[score]}, in-distribution positive",
                        dataset_args={"out_of_distribution": hub_id_for(source) or other}, **dataset))
    return results


def _record_results(folder: Path, rows: dict, sections: dict, results: list[EvalResult]) -> None:
    """Merge into ``folder/eval_results.json`` (an entry with the same task, data, metric and protocol is replaced;
    baseline rows are updated) and rewrite the model card of an hf_ssl run folder."""
    path = folder / EVAL_RESULTS
    recorded = json.loads(path.read_text()) if path.is_file() else {}
    for section, values in (("probes", rows), *sections.items()):
        merged = recorded.setdefault(section, {})
        for encoder_name, metrics in values.items():
            merged.setdefault(encoder_name, {}).update(metrics)

    def identity(result: EvalResult) -> tuple:
        return (result.task_type, result.task_name, result.dataset_type, result.dataset_split, result.metric_type,
                result.metric_name)

    new = {identity(result) for result in results}
    recorded_results = eval_results_from_json(recorded.get("eval_results", []))
    kept = [result for result in recorded_results if identity(result) not in new]
    recorded["eval_results"] = [eval_result_to_dict(result) for result in kept + results]
    path.write_text(json.dumps(recorded, indent=2))
    if (folder / RUN_RECORD).is_file():
        write_model_card(folder)


def _run_sts(checkpoint: str, arguments: dict[type, Any]) -> dict:
    sts = arguments[STSArguments]
    path = resolve_text_checkpoint(checkpoint)
    if _embeds_text(path):  # an hf_ssl checkpoint that embeds text itself (Sentence-BERT, CLIP-style)
        model = AutoSSLModel.from_pretrained(path)
    else:  # any text encoder, as a Sentence-BERT bi-encoder over it
        model = SentenceBertForPreTraining.from_text_encoder(path, pooling=sts.pooling)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    results = {}
    for split in sts.sts_splits:
        pairs = load_sts_benchmark(sts.sts_dataset, split, flag="--sts_dataset")
        if sts.sts_max_pairs:
            pairs = pairs.select(range(min(sts.sts_max_pairs, len(pairs))))
        results[f"sts_{split}_spearman"] = sts_spearman(model, tokenizer, pairs)
    return results


def _run_zero_shot(checkpoint: str, arguments: dict[type, Any]) -> dict:
    data, prompts = arguments[ImageDataArguments], arguments[ZeroShotArguments]
    model = AutoSSLModel.from_pretrained(checkpoint).eval()
    if not hasattr(model, "embed_image"):
        raise ValueError(f"{checkpoint} is not an image-text (CLIP-style) checkpoint; zero-shot needs one")
    test = data.load(max_train_examples=1).eval  # the train split only decides the hold-out, if there is one
    size = data.image_size or model.config.vision_config.image_size
    transform = default_eval_transform(size, *_normalisation(checkpoint))
    templates = prompts.zero_shot_templates or list(HELD_OUT_TEMPLATES)
    names = test.features["label"].names
    accuracy = zero_shot_accuracy(model, AutoTokenizer.from_pretrained(checkpoint), test, names, templates, transform)
    return {"zero_shot_top1": accuracy, "templates": templates}


def _embeds_text(path: str) -> bool:
    """Whether ``path`` holds an hf_ssl checkpoint whose method embeds text (has ``embed_text``)."""
    method = (getattr(AutoConfig.from_pretrained(path), "ssl_config", None) or {}).get("method")
    return method in METHOD_REGISTRY and hasattr(METHOD_REGISTRY[method], "embed_text")


def _normalisation(checkpoint: str) -> tuple[list[float], list[float]]:
    """The mean/std the run trained with (from its run record), else ImageNet's."""
    return recorded_normalisation(checkpoint) or (list(IMAGENET_DEFAULT_MEAN), list(IMAGENET_DEFAULT_STD))


register_evaluation_task(
    "probe", "frozen-feature kNN, linear-probe and few-shot accuracy and OOD detection on a labelled image dataset",
    (ImageDataArguments, ProbeArguments, FewShotArguments, OODArguments), _run_probes,
)
register_evaluation_task(
    "sts", "Spearman of cosine similarity on STS-benchmark (sentence embeddings)", (STSArguments,), _run_sts
)
register_evaluation_task(
    "zero-shot", "zero-shot top-1 of an image-text checkpoint on a labelled image dataset (--dataset, --test_split)",
    (ImageDataArguments, ZeroShotArguments), _run_zero_shot,
)

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
