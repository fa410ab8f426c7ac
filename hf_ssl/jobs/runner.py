"""The pretraining job behind ``recipes/pretrain.py`` and ``hf-ssl pretrain``, for every method and modality.

Arguments come from a YAML file and/or command-line flags (flags after the file override it), parsed by
``transformers.HfArgumentParser`` into the job's argument dataclasses (for images: encoder, data, views; see
:mod:`hf_ssl.jobs`), the method's config (e.g. :class:`hf_ssl.DINOConfig`) and
:class:`hf_ssl.training.arguments.SSLTrainingArguments`. The method picks the job
(``SSLPreTrainedModel.pretraining_job``).
With no config file it runs the embedded default: a short DINO run on the Fashion-MNIST subset shipped inside the
package (flags without a config file override that default). The other image methods start from the same data,
encoder and budget with their own settings and two views; every other job's argument defaults are a run of its own
(a public dataset, reached online or through ``HF_SSL_DATA_DIR``; without it the error names ``--dataset``).

Bad command lines raise :class:`hf_ssl.training.errors.UsageError` (unknown flags, malformed values, an output
folder that already holds a run: see :mod:`hf_ssl.training.output_dir`) before any data or weights load.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import yaml
from transformers import set_seed
from transformers.utils import logging

from ..methods.base import METHOD_REGISTRY
from ..publishing.hub import push_run_directory
from ..publishing.model_card import write_model_card
from ..publishing.run_record import settings_to_argv, write_run_record
from ..semi.base import SEMI_METHOD_REGISTRY
from ..training.arguments import SSLTrainingArguments, global_batch_size
from ..training.callbacks import RunMethodRecord
from ..training.errors import DataclassArgumentParser, UsageError, unknown_flags
from ..training.interruption import TrainingInterrupted, TrainingTerminated
from ..training.output_dir import prepare_output_dir
from ..training.trainer import SSLTrainer
from .base import JOB_REGISTRY, PretrainingJob
from .image import EMBEDDED_DEFAULTS, DataArguments

logger = logging.get_logger(__name__)


def job_class_for(method: str, modality: str | None = None) -> type[PretrainingJob]:
    """The job of a self-supervised method (its ``pretraining_job``) or of a semi-supervised one
    (``semi_<modality>``, image by default)."""
    if method in SEMI_METHOD_REGISTRY:
        job_name = f"semi_{modality or 'image'}"
        if job_name not in JOB_REGISTRY:
            raise UsageError(f"unknown modality {modality!r} for {method}; choose --modality image, text or audio")
        return JOB_REGISTRY[job_name]
    if method not in METHOD_REGISTRY:
        known = sorted(METHOD_REGISTRY) + sorted(SEMI_METHOD_REGISTRY)
        raise UsageError(f"unknown method {method!r}; choose --method among {', '.join(known)} (`hf-ssl list` "
                         "describes them)")
    job_name = METHOD_REGISTRY[method].pretraining_job
    if job_name not in JOB_REGISTRY:
        raise ValueError(f"method {method!r} names the job {job_name!r}, which is not registered in hf_ssl.jobs")
    return JOB_REGISTRY[job_name]


def parse_arguments(argv: list[str], prog: str | None = None) -> tuple:
    """``[config.yaml] [--flag value ...]`` -> (*job arguments, method_config, training_args).

    Without a config file, flags override :func:`defaults_without_config` (for DINO, or no ``--method``: the embedded
    default, a short DINO run). ``prog`` names the command in error messages (``hf-ssl pretrain``; default: the
    script's name). Unknown flags or config keys and malformed values raise :class:`~hf_ssl.training.errors.UsageError`.

    The first job argument is always the :class:`~hf_ssl.jobs.arguments.ModelArguments` (its ``encoder`` filled with
    the job's default when not given). For the image methods: ``(encoder_args, data_args, views, method_config,
    training_args)``.
    """
    config_values: dict = {}
    config_path = None
    if argv and argv[0].endswith((".yaml", ".yml")):
        config_path = Path(argv[0])
        if not config_path.is_file():
            raise FileNotFoundError(f"config file {config_path} does not exist (configs live in recipes/configs/)")
        config_values = yaml.safe_load(config_path.read_text()) or {}
        argv = argv[1:]
    method = _last_value(argv, "--method") or config_values.get("method", EMBEDDED_DEFAULTS["method"])
    job_class = job_class_for(method, _last_value(argv, "--modality") or config_values.get("modality"))
    method_config_class = (SEMI_METHOD_REGISTRY[method].config_class if method in SEMI_METHOD_REGISTRY
                           else METHOD_REGISTRY[method].method_config_class)
    argument_classes = (*job_class.argument_classes, method_config_class, SSLTrainingArguments)
    if config_path is None:
        config_values = defaults_without_config(method, argument_classes, job_class.name)
    config_values.setdefault("output_dir", f"outputs/{method}")
    prog = f"{prog or os.path.basename(sys.argv[0]) or 'pretrain'} --method {method}"
    parser = DataclassArgumentParser(argument_classes, prog=prog)
    *parsed, remaining = parser.parse_args_into_dataclasses(
        args=settings_to_argv(config_values) + list(argv), return_remaining_strings=True
    )
    if remaining:
        unknown = unknown_flags(remaining)
        from_config = [flag for flag in unknown if flag.lstrip("-") in config_values and flag not in argv]
        where = f" (keys of {config_path})" if config_path is not None and from_config == unknown else ""
        raise UsageError(f"unknown argument(s) {' '.join(unknown)}{where} for {method} ({job_class.name} job); "
                         f"`{prog} --help` lists the arguments")
    model_arguments = parsed[0]
    if model_arguments.encoder is None:
        model_arguments.encoder = job_class.default_encoder
    return tuple(parsed)


#: Settings of jobs whose argument defaults alone do not fit their default data, for runs without a config file: the
#: semi-supervised image job's views default to 224 px (ImageNet), its dataset to CIFAR-10 (32 px images).
JOB_DEFAULTS_WITHOUT_CONFIG: dict[str, dict] = {"semi_image": {"image_size": 32, "patch_size": 4}}


def defaults_without_config(method: str, argument_classes: tuple[type, ...], job_name: str = "") -> dict:
    """The settings a run without a config file starts from (command-line flags override them).

    DINO: :data:`~hf_ssl.jobs.image.EMBEDDED_DEFAULTS`, a short run on the Fashion-MNIST subset shipped inside the
    package. The other methods of the image jobs (SimCLR, BYOL, MoCo, SimSiam, MAE): the same data, encoder, crop
    sizes and budget with their own method settings (DINO's are left out) and two views (multi-crop is DINO's);
    without them the 224 px crop defaults would not fit the 28 px embedded images. Every other job: its argument
    defaults, a run of their own, with :data:`JOB_DEFAULTS_WITHOUT_CONFIG` where they do not fit that job's data.
    """
    if method == EMBEDDED_DEFAULTS["method"]:
        return dict(EMBEDDED_DEFAULTS)
    if DataArguments not in argument_classes:
        return dict(JOB_DEFAULTS_WITHOUT_CONFIG.get(job_name, {}))
    names = {field.name for cls in argument_classes for field in dataclasses.fields(cls)}
    dino_settings = {field.name for field in
                     dataclasses.fields(METHOD_REGISTRY[EMBEDDED_DEFAULTS["method"]].method_config_class)}
    values = {key: value for key, value in EMBEDDED_DEFAULTS.items()
              if key in names and key not in dino_settings and key != "method"}
    if "num_local_crops" in names:
        values["num_local_crops"] = 0
    values["output_dir"] = f"outputs/{method}-{EMBEDDED_DEFAULTS['encoder']}-{EMBEDDED_DEFAULTS['dataset']}"
    return values


def _last_value(argv: list[str], flag: str) -> str | None:
    value = None
    for position, item in enumerate(argv):
        if item == flag and position + 1 < len(argv):
            value = argv[position + 1]
        elif item.startswith(flag + "="):
            value = item.split("=", 1)[1]
    return value


def run(argv: list[str] | None = None, callbacks: list | None = None, prog: str | None = None) -> dict:
    """Parse arguments, pretrain, save the final model at the root of ``output_dir``, and evaluate it.

    ``callbacks``: extra ``TrainerCallback``s (benchmarks use one that stops at a wall-clock budget).
    ``prog``: the command named in error messages (``hf-ssl pretrain``; default: the script's name).
    Before any data or weights load, ``output_dir`` is checked (:func:`hf_ssl.training.output_dir.prepare_output_dir`:
    a folder holding a run is refused unless resumed or ``--overwrite``; ``--resume_from_checkpoint true`` means its
    last checkpoint; a checkpoint of another method is refused).
    Returns the final evaluation's ``probes`` (empty when there is none).
    """
    argv = sys.argv[1:] if argv is None else argv
    *job_arguments, method_config, training_args = parse_arguments(argv, prog=prog)
    method = job_arguments[0].method
    job_class = job_class_for(method, getattr(job_arguments[1], "modality", None))
    checkpoint = prepare_output_dir(training_args, method, job_class.name)
    set_seed(training_args.seed)
    started = time.time()
    job = job_class(job_arguments, method_config, training_args)
    parts = job.prepare()
    trainer_kwargs = {"data_collator": parts.data_collator} if parts.data_collator is not None else {}
    trainer = (parts.trainer_class or SSLTrainer)(
        model=parts.model, args=training_args, train_dataset=parts.train_dataset, eval_dataset=parts.eval_dataset,
        evaluators=parts.evaluators,
        callbacks=[*(callbacks or []), *parts.callbacks, RunMethodRecord(method, job_class.name)],
        train_sampler=parts.train_sampler, **trainer_kwargs, **parts.trainer_kwargs,
    )
    try:
        trainer.train(resume_from_checkpoint=checkpoint)
    except (TrainingInterrupted, TrainingTerminated):
        trainer.leave_process_group()  # a signal ends the run on every process, each having saved its part
        raise
    # Saved without pushing: the run is published once, complete (record, evaluation, card), below.
    trainer.save_published_model(training_args.output_dir)
    published = trainer.published_model()
    if trainer.is_world_process_zero():
        job.save_extras(training_args.output_dir, published)
    write_run_record(
        training_args.output_dir, job_name=job.name, sections=job.run_record(), method_config=method_config,
        training_args=training_args, global_batch_size=global_batch_size(training_args),
        seconds=time.time() - started, argv=argv,
    )

    if not trainer.is_world_process_zero():
        # Done here; rank 0 needs no collective from now on. Leave the process group before exiting: a process that
        # exits holding it while rank 0 still works aborts ("terminate called without an active exception").
        trainer.leave_process_group()
        return {}
    evaluation = job.final_evaluation(published)
    if evaluation is not None:
        steps = trainer.state.global_step
        print(f"\nAfter {steps} training steps. {evaluation.table}", flush=True)
        with open(os.path.join(training_args.output_dir, "eval_results.json"), "w") as handle:
            json.dump(evaluation.to_json(steps), handle, indent=2)
    _publish(trainer, training_args)
    print(f"Saved the model, its run record (hf_ssl_run.json), evaluation and model card (README.md) to "
          f"{os.path.abspath(training_args.output_dir)}; load the {job.published_as[1]} with "
          f"transformers.{job.published_as[0]}.from_pretrained({training_args.output_dir!r}).", flush=True)
    return evaluation.probes if evaluation is not None else {}


def _publish(trainer: SSLTrainer, training_args) -> None:
    """Write the model card (README.md + figures) into output_dir; push the run when ``--push_to_hub`` is set."""

    output_dir = training_args.output_dir
    trainer.state.save_to_json(os.path.join(output_dir, "trainer_state.json"))  # log_history for the curves
    if not training_args.push_to_hub:
        try:
            write_model_card(output_dir)
        except Exception as error:  # the card is a by-product here: a fault in it must not fail a finished run
            logger.warning("The model card could not be written (%s: %s); the model and results are saved. Retry "
                           "with `hf-ssl card %s`.", type(error).__name__, error, output_dir)
        return
    trainer._finish_current_push()  # checkpoint pushes still in flight (hub_strategy every_save) land first
    repo_id = trainer.hub_model_id or training_args.hub_model_id or os.path.basename(os.path.abspath(output_dir))
    commit = push_run_directory(output_dir, repo_id, private=training_args.hub_private_repo,
                                token=training_args.hub_token, revision=training_args.hub_revision,
                                commit_message="End of training")
    print(f"Pushed the model and its card to {commit.repo_url}", flush=True)
