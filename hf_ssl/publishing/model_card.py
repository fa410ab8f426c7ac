"""Model cards generated from a run directory, for every method and job.

A run directory is what :func:`hf_ssl.jobs.runner.run` leaves in ``output_dir``: the model (``config.json`` with
``ssl_config``, weights), ``hf_ssl_run.json`` (the run record: job, the job's argument sections, the method config,
training arguments, world size, hardware, wall time, argv), ``eval_results.json`` (the final evaluation:
``huggingface_hub.EvalResult`` dicts and the baselines in ``probes``), ``trainer_state.json`` (``log_history``; or the
last ``checkpoint-N/``'s) and any figures the job saved (``*.png``: MAE reconstructions, attention maps).

:func:`build_model_card` reads all of it and renders ``hf_ssl/publishing/templates/model_card.md`` (Jinja, through
``huggingface_hub.ModelCard.from_template``): the YAML header carries ``model-index`` built from the run's
``EvalResult`` list (so the Hub shows the numbers), the text carries the method and its paper, backbone and size, data
and licence, every setting of the run, the baselines, a training-curve figure, how to load the encoder with plain
transformers, intended use and limits, and the command that reproduces the run. Nothing here is method-specific:
settings are rendered from whatever sections the record holds, so a new method or job gets a full card for free.

Only the run record is trusted for settings; the card never reads environment variables, and tokens never reach it
(the run record drops them; :func:`reproduce_command` drops ``--hub_token`` and push flags).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..data.sources import (
    EMBEDDED,
    bare_name,
    hub_id_for,
    local_only_name,
    looks_like_path,
    split_source_options,
)
from ..methods.published_layout import SSL_STATE_NAME
from .checkpoints import CHECKPOINT_ALIASES, StartingPoint, starting_point, starting_points
from .datasets import DatasetFacts, facts_for, model_index_dataset, public_name
from .figures import figure_caption, plot_training_curves
from .licences import Licence, model_licence
from .run_record import (
    DATASET_KEYS,
    RECORD_META_KEYS,
    TRAINING_CURVES,
    RunDirectory,
    settings_to_argv,
)

#: The card templates, shipped as package data (a wheel install writes cards too); ``template_path=`` picks another.
TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
DEFAULT_TEMPLATE = TEMPLATES_DIR / "model_card.md"
#: Training arguments that shape the result (the rest are I/O and logging).
TRAINING_KEYS = (
    "per_device_train_batch_size", "gradient_accumulation_steps", "max_steps", "num_train_epochs", "learning_rate",
    "lr_scheduler_type", "lr_scheduler_kwargs", "warmup_steps", "optim", "weight_decay", "adam_beta1", "adam_beta2",
    "adam_epsilon", "max_grad_norm", "bf16", "fp16", "tf32", "seed", "data_seed", "dataloader_drop_last",
)
#: Flags never written into the reproduction command (they publish, or they are secrets).
_UNREPRODUCED_FLAGS = ("--push_to_hub", "--hub_model_id", "--hub_token", "--hub_private_repo", "--hub_strategy",
                       "--hub_revision", "--hub_always_push", "--resume_from_checkpoint", "--overwrite",
                       "--overwrite_output_dir")


# --------------------------------------------------------------------------------------------------------------------
def build_model_card(
    run_dir: str | Path,
    repo_id: str | None = None,
    template_path: str | Path | None = None,
    figures_dir: str | Path | None = None,
    **card_data_overrides,
) -> ModelCard:
    """The card of the run in ``run_dir``.

    Args:
        repo_id: the Hub repository the card is for (used in the loading code and as ``model_name``); default: the
            run's ``output_dir`` as the record names it, so the snippet works after re-running the command.
        template_path: a Jinja markdown template; default ``hf_ssl/publishing/templates/model_card.md``.
        figures_dir: where the card's figures are written (the training curves) or copied (the job's figures), so the
            relative links resolve; default ``run_dir``.
        card_data_overrides: extra ``ModelCardData`` fields (``language``; ``tags`` are merged; ``license`` states the
            model's licence, else it is inherited from the data and the starting checkpoints where they agree:
            :mod:`hf_ssl.publishing.licences`).

    ``base_model`` is the Hub id of each checkpoint the run started from (:mod:`hf_ssl.publishing.checkpoints`).
    """
    run = RunDirectory.load(run_dir)
    figures_dir = Path(figures_dir) if figures_dir is not None else run.path
    licence = model_licence(run, stated=card_data_overrides.pop("license", None))
    context = card_context(run, repo_id=repo_id, figures_dir=figures_dir, licence=licence)
    tags = list(dict.fromkeys(context["tags"] + list(card_data_overrides.pop("tags", None) or [])))
    base_models = [start["hub_id"] for start in context["starts"] if start["hub_id"]]
    data = ModelCardData(
        library_name="transformers", tags=tags, pipeline_tag=context["pipeline_tag"], license=licence.hub_id,
        base_model=(base_models[0] if len(base_models) == 1 else base_models) or None,
        datasets=context["data"].get("hub_ids") or None,
        eval_results=card_eval_results(run) or None, model_name=context["model_name"] if run.eval_results else None,
        **card_data_overrides,
    )
    template = Path(template_path) if template_path is not None else DEFAULT_TEMPLATE
    if not template.is_file():
        raise FileNotFoundError(
            f"model card template {template} not found; pass template_path= (hf-ssl card --template PATH), or "
            "reinstall hf_ssl (its default template is package data)"
        )
    return ModelCard.from_template(data, template_path=str(template), **context)


def write_model_card(run_dir: str | Path, output: str | Path | None = None, repo_id: str | None = None,
                     template_path: str | Path | None = None, **card_data_overrides) -> Path:
    """Render the card of ``run_dir`` into ``output`` (default ``run_dir/README.md``), with its figures beside it."""
    output = Path(output) if output is not None else Path(run_dir) / "README.md"
    output.parent.mkdir(parents=True, exist_ok=True)
    card = build_model_card(run_dir, repo_id=repo_id, template_path=template_path, figures_dir=output.parent,
                            **card_data_overrides)
    card.save(output)
    return output


def card_context(run: RunDirectory, repo_id: str | None, figures_dir: Path,
                 licence: Licence | None = None) -> dict[str, Any]:
    """The template's variables (all plain strings, numbers, lists and dicts)."""

    method_class = run.method_class
    licence = licence or model_licence(run)
    starts = starting_points(run)
    record = run.record
    commands = reproduce_commands(run, starts) if record else []
    output_dir = str(record.get("training", {}).get("output_dir") or "")
    location = repo_id or (_portable_output(output_dir) if output_dir else run.path.name)
    model_name = (repo_id or location).rstrip("/").split("/")[-1]
    data = dataset_description(run)
    figures = _place_figures(run, figures_dir, model_name)
    paper = getattr(method_class, "paper", "") or ""
    probes = run.evaluation.get("probes", {})
    return {
        "model_name": model_name,
        "repo_id": location,
        "method": run.method,
        "method_class": method_class.__name__ if method_class else "(method not registered in this hf_ssl)",
        "paper": paper,
        "paper_url": _arxiv_url(paper),
        "job": record.get("job", getattr(method_class, "pretraining_job", "")),
        "backbone": backbone_description(run),
        "parameters": parameter_counts(run),
        "data": data,
        "method_settings": _setting_rows(run.method_settings, skip=("method",)),
        "semi_supervised": run.semi_supervised,
        "labelled": run.argument_sections.get("data", {}).get("num_labelled_examples"),
        "unlabelled": run.argument_sections.get("data", {}).get("num_unlabelled_examples"),
        "sections": {name: _setting_rows(_portable_settings(values, output_dir))
                     for name, values in run.argument_sections.items()},
        "training": training_rows(run),
        "hardware": record.get("hardware", "not recorded"),
        "world_size": record.get("world_size"),
        "wall_time": _duration(record.get("wall_time_seconds")),
        "steps": run.steps,
        "epochs": None if run.epochs is None else f"{run.epochs:.3g}",
        "eval_results": [_result_row(result) for result in card_eval_results(run)],
        "probe_table": probe_table(probes) if len(probes) > 1 else None,  # baselines beside the trained model
        "protocol_tables": protocol_tables(run.evaluation),
        "figures": figures,
        "usage_code": usage_code(run, location),
        "starts": [{"hub_id": start.hub_id, "markdown": start.markdown(), "flag": start.flag} for start in starts],
        "origin": origin_phrase(run, starts),
        "licence": {"hub_id": licence.hub_id, "text": licence.text},
        "limitations": limitations(run, data, licence),
        "reproduce": "\n".join(commands) if commands else None,
        "reproduce_steps": len(commands),
        "has_record": bool(record),
        "tags": ["hf_ssl", "semi-supervised-learning" if run.semi_supervised else "self-supervised-learning",
                 run.method, run.config.get("model_type", "")],
        "pipeline_tag": pipeline_tag(run),
    }


# --------------------------------------------------------------------------------------------------------------------
# Pieces of the card
def backbone_description(run: RunDirectory) -> str:
    from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

    config = run.config
    model_type = config.get("model_type", "?")
    name = MODEL_MAPPING_NAMES.get(model_type, model_type)
    fields = ("architecture", "num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size",
              "hidden_sizes", "depths", "image_size", "patch_size", "num_channels", "vocab_size",
              "max_position_embeddings")
    shape = ", ".join(f"{key} {config[key]}" for key in fields if config.get(key) is not None)
    return f"{name} (`model_type: {model_type}`{', ' + shape if shape else ''})"


def parameter_counts(run: RunDirectory) -> dict[str, str]:
    """``{"encoder": ..., "checkpoint": ...}``: the encoder vanilla ``AutoModel`` builds, and every saved tensor."""
    counts: dict[str, str] = {}
    try:
        import torch
        from transformers import AutoConfig, AutoModel

        config = AutoConfig.from_pretrained(run.path)
        with torch.device("meta"):  # shapes only, no memory
            encoder = AutoModel.from_config(config)
        counts["encoder"] = _count(encoder.num_parameters())
    except Exception as error:  # a card must still be written for an encoder AutoModel cannot build
        counts["encoder"] = f"unknown ({type(error).__name__}: AutoModel cannot build this config)"
    total = _checkpoint_numel(run.path)
    if total is not None:
        counts["checkpoint"] = _count(total)
    return counts


def _checkpoint_numel(path: Path) -> int | None:
    from safetensors import safe_open

    index = path / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() else (
        ["model.safetensors"] if (path / "model.safetensors").is_file() else [])
    if files and (path / SSL_STATE_NAME).is_file():  # the pretraining-only weights, beside the published ones
        files.append(SSL_STATE_NAME)
    if not files:
        return None
    total = 0
    for name in files:
        with safe_open(str(path / name), framework="pt") as handle:
            for key in handle.keys():
                numel = 1
                for size in handle.get_slice(key).get_shape():
                    numel *= size
                total += numel
    return total


def _count(number: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if number >= scale:
            return f"{number / scale:.2f} {unit} ({number:,})"
    return f"{number:,}"


def dataset_description(run: RunDirectory) -> dict[str, Any]:
    """Name, licence, citation and sizes of the training data; several corpora (a list ``--dataset``) are joined,
    each with its own licence."""
    section = run.data_section()
    source = next((section[key] for key in DATASET_KEYS if section.get(key)), None)
    if isinstance(source, list) and len(source) > 1:
        return _several_datasets(source, section)
    source = source[0] if isinstance(source, list) and source else source
    facts = _known_dataset(source)
    hub_id = facts.hub_id if facts else (hub_id_for(source) or _unknown_hub_id(source) if source else None)
    train_split = section.get("train_split", "train")
    size = facts.split_sizes.get(train_split) if facts else None
    limit = section.get("max_train_examples")
    if size is not None and limit:
        size = min(size, int(limit))
    return {
        "source": public_name(source) if source else "not recorded",
        "name": facts.title if facts else (public_name(source) if source else "not recorded"),
        "licence": facts.licence if facts else UNKNOWN_LICENCE,
        "citation": facts.citation if facts else None,
        "hub_id": hub_id,
        "hub_ids": [hub_id] if hub_id else [],
        "train_split": train_split,
        "eval_split": section.get("eval_split"),
        "train_size": f"{size:,}" if size is not None else (f"at most {int(limit):,}" if limit else "all"),
        "eval_size": _eval_size(facts, section),
    }


UNKNOWN_LICENCE = "unknown: check the data set's own terms before publishing"


def _several_datasets(sources: list, section: dict[str, Any]) -> dict[str, Any]:
    parts = [(public_name(source), _known_dataset(source)) for source in sources]
    names = [_part_name(str(source), shown, facts) for source, (shown, facts) in zip(sources, parts)]
    licences = [f"{facts.name}: {facts.licence}" if facts else f"`{source}`: {UNKNOWN_LICENCE}"
                for source, facts in parts]
    citations = [facts.citation for _, facts in parts if facts and facts.citation]
    return {
        "source": ", ".join(source for source, _ in parts),
        "name": " + ".join(names),
        # any unknown licence keeps the card's warning (limitations() looks for the "unknown" prefix)
        "licence": ("unknown for some sources: " if any(facts is None for _, facts in parts) else "")
        + "; ".join(licences),
        "citation": "; ".join(dict.fromkeys(citations)) or None,
        "hub_id": None,
        "hub_ids": list(dict.fromkeys(facts.hub_id for _, facts in parts if facts and facts.hub_id)),
        "train_split": section.get("train_split", "train"),
        "eval_split": section.get("eval_split"),
        "train_size": "all" if not section.get("max_train_examples") else f"at most {int(section['max_train_examples']):,}",
        "eval_size": None,
    }


def _unknown_hub_id(source) -> str | None:
    """A recorded ``--dataset`` that reads as a Hub id hf_ssl does not know (``owner/name``, not a local path)."""
    name = bare_name(source)
    if looks_like_path(name) or Path(name).expanduser().exists():
        return None
    return name if re.fullmatch(r"[\w.-]+/[\w.-]+", name) else None


def _known_dataset(source) -> DatasetFacts | None:
    """The facts of ``--dataset`` given as a Hub id, a name (``embedded``, ``emoji_captions``) or a path to a local
    copy of a known dataset (its folder or a file in it)."""
    return facts_for(source)


def _part_name(source: str, shown: str, facts: DatasetFacts | None) -> str:
    """One corpus of several: its name, and the part of it that was read (a file inside a local copy, such as
    ``snli_validation.tsv``, is only that file; ``?split=validation`` only that split)."""
    if facts is None:
        return f"`{shown}`"
    try:
        name, options = split_source_options(source)
    except ValueError:
        name, options = bare_name(source), {}
    if Path(name).suffix and Path(name).name != name:
        return f"{facts.name}, only `{Path(name).name}`"
    if options.get("split"):
        return f"{facts.name}, only its `{options['split']}` split (`{shown}`)"
    return f"{facts.name} (`{shown}`)"


def card_eval_results(run: RunDirectory) -> list[EvalResult]:
    """The run's ``EvalResult`` list with each ``dataset_type`` the Hub id and ``dataset_name`` a readable name
    (records that name a local copy, ``embedded`` or a ``?split=`` option are mapped; unknown datasets kept). A result
    on the run's own training data is named as the run read it: the embedded subset of Fashion-MNIST says so."""
    own_data = {hub_id_for(source): source for source in run.training_data() if hub_id_for(source)}
    results = []
    for result in run.eval_results:
        recorded_type, recorded_name = str(result.dataset_type or ""), str(result.dataset_name or "")
        if recorded_type:
            reference = model_index_dataset(own_data.get(recorded_type) or recorded_type)
            known = any(hub_id_for(part) or local_only_name(part) for part in recorded_type.split(","))
            result.dataset_type = reference["dataset_type"]
            if (known or recorded_name in ("", EMBEDDED, recorded_type) or looks_like_path(recorded_name)
                    or Path(recorded_name).expanduser().exists()):
                result.dataset_name = reference["dataset_name"]
        results.append(result)
    return results


def _eval_size(facts: DatasetFacts | None, section: dict[str, Any]) -> str | None:
    split = section.get("eval_split")
    if not split:
        return None
    size = facts.split_sizes.get(split) if facts else None
    limit = section.get("max_eval_examples")
    if size is not None and limit:
        size = min(size, int(limit))
    return f"{size:,}" if size is not None else (f"at most {int(limit):,}" if limit else "all")


def training_rows(run: RunDirectory) -> list[tuple[str, str]]:
    training = run.record.get("training", {})
    rows = [(key, _format(training[key])) for key in TRAINING_KEYS if key in training]
    if "global_batch_size" in run.record:
        factors = (training.get("per_device_train_batch_size"), run.record.get("world_size"),
                   training.get("gradient_accumulation_steps"))
        rows.insert(0, ("global batch (per device x processes x accumulation)",
                        f"{run.record['global_batch_size']} = " + " x ".join(str(factor) for factor in factors)))
    return rows


def probe_table(probes: dict[str, Any]) -> str | None:
    """A markdown table for ``{row: {metric: number}}`` probes (pretrained vs baselines); JSON for other shapes."""
    if not probes:
        return None
    if all(isinstance(row, dict) and all(isinstance(v, (int, float)) for v in row.values()) for row in probes.values()):
        metrics = list(dict.fromkeys(metric for row in probes.values() for metric in row))
        lines = ["| encoder | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
        for name, row in probes.items():
            cells = [f"{row[m]:.4f}" if isinstance(row.get(m), float) else str(row.get(m, "")) for m in metrics]
            lines.append(f"| {'**' + name + '**' if name == 'pretrained' else name} | " + " | ".join(cells) + " |")
        return "\n".join(lines)
    return "```json\n" + json.dumps(probes, indent=2) + "\n```"


#: Sections of ``eval_results.json`` that ``hf-ssl evaluate --update_card`` writes beside ``probes`` (each
#: ``{encoder: {metric: value}}``, intervals as ``<metric>_ci95``), with the title of their table in the card.
PROTOCOL_SECTIONS = {
    "few_shot": "Few-shot classification of frozen features (mean query accuracy ± 95% interval over episodes)",
    "ood": "Out-of-distribution detection with frozen features (in-distribution test images as positives; AUROC "
           "higher is better, FPR at 95% TPR lower is better)",
}
#: Suffix of a metric's 95 % confidence-interval half-width in a protocol section.
INTERVAL_SUFFIX = "_ci95"


def comparison_table(rows: dict[str, dict[str, float]]) -> str:
    """A markdown table of ``{encoder: {metric: value}}`` with one row per metric and one column per encoder
    (``pretrained`` in bold); a ``<metric>_ci95`` entry is shown as ``value ± interval`` in its metric's cell."""
    encoders = list(rows)
    metrics = [metric for metric in dict.fromkeys(m for row in rows.values() for m in row)
               if not metric.endswith(INTERVAL_SUFFIX)]

    def cell(row: dict[str, float], metric: str) -> str:
        if not isinstance(row.get(metric), (int, float)):
            return "-"
        interval = row.get(metric + INTERVAL_SUFFIX)
        return f"{row[metric]:.4f}" + (f" ± {interval:.4f}" if isinstance(interval, (int, float)) else "")

    header = "| metric | " + " | ".join(f"**{name}**" if name == "pretrained" else name for name in encoders) + " |"
    lines = [header, "|---|" + "---|" * len(encoders)]
    lines += [f"| `{metric}` | " + " | ".join(cell(rows[name], metric) for name in encoders) + " |"
              for metric in metrics]
    return "\n".join(lines)


def protocol_tables(evaluation: dict[str, Any]) -> list[dict[str, str]]:
    """``[{"title", "table"}]`` for the :data:`PROTOCOL_SECTIONS` an evaluation holds."""
    return [{"title": title, "table": comparison_table(evaluation[key])}
            for key, title in PROTOCOL_SECTIONS.items() if isinstance(evaluation.get(key), dict) and evaluation[key]]


def usage_code(run: RunDirectory, location: str) -> dict[str, str]:
    """``{"vanilla": three lines of plain transformers (or sentence-transformers), "hf_ssl": ...}``."""
    from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

    files = {p.name for p in run.path.iterdir()}
    config = run.config
    model_type = config.get("model_type", "")
    encoder_class = MODEL_MAPPING_NAMES.get(model_type, "the encoder")
    repo = json.dumps(location)
    job = run.job
    if run.semi_supervised:
        task = PIPELINE_TAGS.get(job, "image-classification")
        auto_class = {"semi_image": "AutoModelForImageClassification", "semi_text": "AutoModelForSequenceClassification",
                      "semi_audio": "AutoModelForAudioClassification"}.get(job, "AutoModel")
        example = {"semi_image": "an_image", "semi_text": "\"A sentence.\"", "semi_audio": "a_waveform"}.get(job, "x")
        vanilla = (f"from transformers import pipeline\n"
                   f"classifier = pipeline(\"{task}\", model={repo})  # {encoder_class} with its classification head\n"
                   f"classifier({example})  # [{{'label': ..., 'score': ...}}, ...]; or transformers.{auto_class}")
        return {"vanilla": vanilla, "hf_ssl": ""}
    if job == "sentence_pairs" and "modules.json" in files:
        vanilla = (f"from sentence_transformers import SentenceTransformer\n"
                   f"model = SentenceTransformer({repo})\n"
                   f"embeddings = model.encode([\"A first sentence.\", \"A second one.\"])  # (2, dim)")
    elif job == "image_text":
        vanilla = (f"from transformers import AutoModel, AutoProcessor\n"
                   f"model, processor = AutoModel.from_pretrained({repo}), AutoProcessor.from_pretrained({repo})\n"
                   f"logits = model(**processor(text=captions, images=images, return_tensors=\"pt\", padding=True))"
                   f".logits_per_image  # ({encoder_class}; get_image_features / get_text_features for embeddings)")
        if "preprocessor_config.json" not in files:
            vanilla = vanilla.replace("AutoProcessor.from_pretrained", "None  # no processor saved; ")
    elif job in ("text", "sentence_pairs"):
        vanilla = (f"from transformers import AutoModel, AutoTokenizer\n"
                   f"tokenizer, encoder = AutoTokenizer.from_pretrained({repo}), AutoModel.from_pretrained({repo})\n"
                   f"hidden = encoder(**tokenizer([\"A sentence.\"], return_tensors=\"pt\")).last_hidden_state"
                   f"  # ({encoder_class})")
        if job == "text":  # masked-LM (+ SOP/NSP) checkpoints keep transformers' masked-LM head
            vanilla += (f"\n# the masked-LM head too:\nfrom transformers import pipeline\n"
                        f"fill_mask = pipeline(\"fill-mask\", model={repo})")
    elif job == "audio":
        rate = _feature_extractor(run.path).get("sampling_rate", 16000)
        if "preprocessor_config.json" in files:
            vanilla = (f"from transformers import AutoFeatureExtractor, AutoModel\n"
                       f"extractor, encoder = AutoFeatureExtractor.from_pretrained({repo}), "
                       f"AutoModel.from_pretrained({repo})\n"
                       f"hidden = encoder(**extractor(waveforms, sampling_rate={rate}, return_tensors=\"pt\", "
                       f"padding=True)).last_hidden_state  # ({encoder_class}); waveforms: 1-D arrays at {rate} Hz")
        else:
            vanilla = (f"from transformers import AutoModel\n"
                       f"encoder = AutoModel.from_pretrained({repo})  # {encoder_class}\n"
                       f"hidden = encoder(input_values=waveforms).last_hidden_state  # waveforms: (batch, samples), "
                       f"{rate} Hz")
    else:
        views = run.record.get("views", {})
        size = config.get("image_size") or views.get("global_crop_size") or 224  # the encoder's native resolution
        pooled = ("last_hidden_state[:, 0]  # CLS token"
                  if "num_attention_heads" in config and model_type != "timm_wrapper" else "pooler_output")
        normalise = (f", normalised with mean {views['mean']} / std {views['std']}" if "mean" in views else "")
        vanilla = (f"from transformers import AutoModel, AutoModelForImageClassification\n"
                   f"encoder = AutoModel.from_pretrained({repo})  # {encoder_class}\n"
                   f"features = encoder(pixel_values=images).{pooled}; images: (batch, {config.get('num_channels', 3)}"
                   f", {size}, {size}){normalise}")
        vanilla += (f"\n# to fine-tune: AutoModelForImageClassification.from_pretrained({repo}, num_labels=...)")
    full = (f"import hf_ssl\n"
            f"model = hf_ssl.AutoSSLModel.from_pretrained({repo})  # {run.config.get('architectures', [''])[0]}")
    return {"vanilla": vanilla, "hf_ssl": full}


def _feature_extractor(path: Path) -> dict[str, Any]:
    processor = path / "preprocessor_config.json"
    return json.loads(processor.read_text()) if processor.is_file() else {}


#: The Hub pipeline tag of each job's published model.
PIPELINE_TAGS = {"image": "image-feature-extraction", "masked_image": "image-feature-extraction", "text": "fill-mask",
                 "sentence_pairs": "sentence-similarity", "image_text": "feature-extraction",
                 "audio": "feature-extraction", "semi_image": "image-classification",
                 "semi_text": "text-classification", "semi_audio": "audio-classification"}


def pipeline_tag(run: RunDirectory) -> str:
    """The pipeline tag of the run's job (read from the run record or the method, never guessed from files)."""
    return PIPELINE_TAGS.get(run.job, "feature-extraction")


def limitations(run: RunDirectory, data: dict[str, Any], licence: Licence | None = None) -> list[str]:
    """Run-specific caveats: baselines that beat the pretrained encoder, small budgets, subsets, licences."""
    notes: list[str] = []
    probes = run.evaluation.get("probes", {})
    pretrained = probes.get("pretrained")
    if isinstance(pretrained, dict):
        for baseline, row in probes.items():
            if baseline == "pretrained" or not isinstance(row, dict):
                continue
            for metric, value in row.items():
                mine = pretrained.get(metric)
                if not (isinstance(mine, (int, float)) and isinstance(value, (int, float))):
                    continue
                lower_is_better = lower_is_better_metric(metric)
                if (value <= mine) if lower_is_better else (value >= mine):
                    notes.append(f"`{baseline}` scores {value:.4f} on `{metric}`, as good as or better than the "
                                 f"pretrained encoder ({mine:.4f}{', lower is better' if lower_is_better else ''}): "
                                 "at this budget pretraining has not beaten that baseline.")
    if run.steps is not None and run.steps < 10_000:
        notes.append(f"Trained for {run.steps:,} optimizer steps only, far below the method's paper: expect these "
                     "numbers, not the paper's.")
    section = run.data_section()
    for key in ("max_train_examples", "max_eval_examples", "knn_max_train_examples"):
        if section.get(key):
            notes.append(f"`--{key} {section[key]}`: part of the data only.")
    if not run.evaluation:
        notes.append("No final evaluation was recorded for this run (no eval_results.json).")
    if data["licence"].startswith("unknown"):
        notes.append("The training data's licence is not known to hf_ssl; check it before redistributing.")
    if licence is not None and licence.hub_id is None:
        notes.append(f"The model's licence is {licence.text}.")
    return notes


def origin_phrase(run: RunDirectory, starts: list[StartingPoint]) -> str:
    """How the model came to be, for the card's first sentence (``A ... encoder <this> with **method**``):
    ``pretrained without labels`` (from random init), ``fine-tuned from [org/name](...)``, ``fine-tuned
    semi-supervised from ...``, or, for an image-text model whose text tower started from a checkpoint, ``with its text
    tower fine-tuned from ... and its vision tower from random init, trained``."""
    towers = [start for start in starts if start.flag == "text_encoder"]
    whole = [start for start in starts if start.flag != "text_encoder"]
    if whole:
        names = " and ".join(start.markdown() for start in whole)
        return f"fine-tuned{' semi-supervised' if run.semi_supervised else ''} from {names}"
    if towers:
        return (f"with its text tower fine-tuned from {' and '.join(start.markdown() for start in towers)} and its "
                "vision tower from random init, trained")
    return "trained semi-supervised from random init" if run.semi_supervised else "pretrained without labels"


def lower_is_better_metric(name: str) -> bool:
    """Losses, perplexities and error rates improve downwards; accuracies, correlations and recalls upwards."""
    return any(word in name.lower() for word in ("loss", "perplexity", "error", "distance"))


def reproduce_commands(run: RunDirectory, starts: list[StartingPoint] | None = None,
                       _seen: frozenset[Path] = frozenset()) -> list[str]:
    """The commands that reproduce ``run``: first those of each local hf_ssl run it started from that is not on the
    Hub (from that run's own record, recursively), then :func:`reproduce_command` of ``run``."""
    seen = _seen | {run.path.resolve()}
    commands: list[str] = []
    for start in starting_points(run) if starts is None else starts:
        if start.hub_id is None and start.run is not None and start.run.record and start.run.path.resolve() not in seen:
            commands += [command for command in reproduce_commands(start.run, _seen=seen) if command not in commands]
    return [*commands, reproduce_command(run.record)]


def reproduce_command(record: dict[str, Any]) -> str:
    """``python recipes/pretrain.py ...``: the recorded argv (publishing flags and tokens removed), or, for records
    written before the argv was stored, every recorded setting as flags.

    The command runs on another machine, so it names nothing of the machine that trained: an ``--output_dir`` that is
    absolute or under a temporary folder becomes ``outputs/<its last component>``; a local copy of a known dataset in
    a data flag (``--dataset``, ``--sts_dataset``, ...) its Hub id (:func:`hf_ssl.publishing.datasets.public_name`: a
    file inside the copy keeps its split, ``stanfordnlp/snli?split=validation``), another absolute data path its last
    component; a checkpoint flag (``--encoder``, ``--init_from``, ``--text_encoder``, ``--tokenizer``) the Hub id of
    its checkpoint where one is known (``minilm`` for the packaged MiniLM), else, when absolute or temporary,
    ``outputs/<its last component>`` (the output of the command that reproduces that run); any other absolute or
    temporary path its last component."""
    argv = record.get("argv")
    if argv is None:
        argv = _argv_from_settings(record)
    argv = _without_publishing_flags([_relative_config_path(argv[0])] + list(argv[1:]) if argv else [])
    script = "recipes/finetune.py" if str(record.get("job", "")).startswith("semi_") else "recipes/pretrain.py"
    output_dir = str(record.get("training", {}).get("output_dir") or "")
    return shlex.join(["python", script, *_portable_argv(argv, output_dir)])


#: Flags whose values name datasets (mapped to Hub ids in a reproduction command).
_DATA_FLAGS = frozenset(f"--{key}" for key in (*DATASET_KEYS, "sts_dataset"))
#: Flags whose value names a checkpoint (mapped to its Hub id in a reproduction command); each takes one value.
_CHECKPOINT_FLAGS = frozenset({"--encoder", "--init_from", "--text_encoder", "--tokenizer"})
_SINGLE_VALUE_FLAGS = _CHECKPOINT_FLAGS | {"--output_dir"}


def _portable_argv(argv: list[str], output_dir: str = "") -> list[str]:
    portable: list[str] = []
    flag = None  # the flag whose values follow
    for item in argv:
        if item.startswith("--"):
            name, equals, value = item.partition("=")
            portable.append(f"{name}={_portable_value(name, value, output_dir)}" if equals else item)
            flag = None if equals else name
        else:
            portable.append(_portable_value(flag, item, output_dir))
            flag = None if flag in _SINGLE_VALUE_FLAGS else flag
    return portable


def _portable_value(flag: str | None, value: str, output_dir: str = "") -> str:
    if flag == "--output_dir":
        return _portable_output(value)
    if flag in _DATA_FLAGS:
        return ",".join(_portable_dataset(part) for part in value.split(","))
    if flag in _CHECKPOINT_FLAGS:
        return _portable_checkpoint(flag, value, output_dir)
    return Path(value).name if _is_machine_path(value) and Path(value).name else value


def _portable_output(value: str) -> str:
    """An output folder of this machine (absolute, or temporary) as ``outputs/<its last component>``."""
    path = Path(value)
    return f"outputs/{path.name}" if (path.is_absolute() or _is_temporary(value)) and path.name else value


def _portable_checkpoint(flag: str, value: str, output_dir: str) -> str:
    start = starting_point(flag.lstrip("-"), value, output_dir)
    if start.hub_id is None:
        return _portable_output(value)
    if value in CHECKPOINT_ALIASES or any(part in CHECKPOINT_ALIASES for part in Path(value).parts):
        # the packaged MiniLM by its short name, which works offline too
        return next(alias for alias, hub_id in CHECKPOINT_ALIASES.items() if hub_id == start.hub_id)
    return start.hub_id


def _is_temporary(value: str) -> bool:
    """A path under a temporary folder (``/tmp``, ``%TEMP%``, pytest's ``pytest-of-*``)."""
    parts = [part.lower() for part in Path(value).parts]
    return len(parts) > 1 and any(part in ("tmp", "temp") or part.startswith("pytest-of-") for part in parts)


def _is_machine_path(value: str) -> bool:
    """A path that names a place on the machine that trained: absolute, under the home folder, or temporary."""
    return Path(value).is_absolute() or value.startswith("~") or _is_temporary(value)


def _portable_dataset(value: str) -> str:
    name = bare_name(value)
    local = looks_like_path(name) or Path(name).expanduser().exists()
    return public_name(value) if local and (hub_id_for(name) or _is_machine_path(name)) else value


def _relative_config_path(argument: str) -> str:
    if argument.endswith((".yaml", ".yml")) and "recipes/configs/" in argument:
        return "recipes/configs/" + argument.split("recipes/configs/")[-1]
    return argument


def _without_publishing_flags(argv: list[str]) -> list[str]:
    kept: list[str] = []
    skip_value = False
    for item in argv:
        if skip_value:
            skip_value = False
            if not item.startswith("--"):
                continue
        flag = item.split("=", 1)[0]
        if flag in _UNREPRODUCED_FLAGS:
            skip_value = "=" not in item
            continue
        kept.append(item)
    return kept


def _argv_from_settings(record: dict[str, Any]) -> list[str]:
    values: dict[str, Any] = {}
    for section in (*[v for k, v in record.items() if k not in RECORD_META_KEYS and isinstance(v, dict)],
                    record.get("method", {})):
        values.update(section)
    training = record.get("training", {})
    values.update({key: training[key] for key in ("output_dir", "logging_steps", "save_steps", *TRAINING_KEYS)
                   if key in training and training[key] is not None})
    return settings_to_argv({key: value for key, value in values.items() if key != "init_from" or value})


def _portable_settings(values: dict[str, Any], output_dir: str) -> dict[str, Any]:
    """A record section with every path of the machine that trained mapped as in :func:`reproduce_command`."""
    def portable(key: str, value: Any) -> Any:
        if isinstance(value, str) and value:
            return _portable_value(f"--{key}", value, output_dir)
        if isinstance(value, (list, tuple)):
            return [portable(key, item) for item in value]
        return value

    return {key: portable(key, value) for key, value in values.items()}


def _setting_rows(values: dict[str, Any], skip: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    return [(key, _format(value)) for key, value in values.items() if key not in skip]


def _format(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(_format(item) for item in value) if value else "(none)"
    if isinstance(value, dict):
        return json.dumps(value)
    if value is None:
        return "-"
    return str(value).replace("|", "\\|")


def _result_row(result: EvalResult) -> dict[str, Any]:
    interval = (result.metric_args or {}).get("ci95")
    value = result.metric_value
    if isinstance(interval, (int, float)) and isinstance(value, (int, float)):
        value = f"{value:.4f} ± {interval:.4f}"  # few-shot accuracies: mean ± 95% interval over episodes
    return {"task": result.task_name or result.task_type, "dataset": result.dataset_name,
            "split": result.dataset_split, "metric": result.metric_name or result.metric_type, "value": value}


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "not recorded"
    minutes, rest = divmod(float(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{int(hours)} h {int(minutes)} min {rest:.0f} s" if hours else f"{int(minutes)} min {rest:.0f} s"


def _arxiv_url(paper: str) -> str | None:
    match = re.search(r"arXiv:\s*(\d{4}\.\d{4,5})", paper)
    return f"https://arxiv.org/abs/{match.group(1)}" if match else None


def _place_figures(run: RunDirectory, figures_dir: Path, model_name: str) -> list[dict[str, str]]:
    """Draw the training curves into ``figures_dir`` and copy the job's figures there; return ``[{file, caption}]``."""

    figures_dir.mkdir(parents=True, exist_ok=True)
    figures = []
    curves = plot_training_curves(run.log_history, figures_dir / TRAINING_CURVES, title=f"{model_name}: training")
    if curves is not None:
        figures.append({"file": TRAINING_CURVES, "caption": "Training curves: every scalar logged during the run "
                        "(loss, learning rate, the method's diagnostics and schedules, evaluation metrics) per step."})
    for figure in run.figures():
        if figure.parent.resolve() != figures_dir.resolve():
            shutil.copy2(figure, figures_dir / figure.name)
        figures.append({"file": figure.name, "caption": figure_caption(figure.name)})
    return figures
