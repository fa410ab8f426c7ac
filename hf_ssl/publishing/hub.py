"""Publishing to the Hugging Face Hub with hf_ssl's generated model card (never the stock Trainer draft).

Four ways in, one result (a repository that vanilla transformers loads as the encoder, ``hf_ssl.AutoSSLModel`` loads
as the whole pretraining model, and whose README.md is the card of :mod:`hf_ssl.publishing.model_card`):

- ``hf-ssl pretrain ... --push_to_hub --hub_model_id org/name``: :func:`hf_ssl.jobs.runner.run` writes the card after
  the final evaluation and calls :func:`push_run_directory`;
- ``hf-ssl push RUN_DIR --hub_model_id org/name`` / :func:`push_run_directory`: (re)generate the card, upload the run;
- ``trainer.push_to_hub()`` (``SSLTrainer.create_model_card`` calls :func:`write_trainer_model_card`);
- ``push_model(model, repo_id)``: a model in memory, with the card written from the model (and ``run_directory=``).
  Models never publish themselves: ``model.push_to_hub`` is transformers' own, with its placeholder card.

What is uploaded: the model (config, weights), the run record and evaluation, ``trainer_state.json``, the card and its
figures, and whatever the job saved beside the weights (tokenizer, processor, sentence-transformers modules).
Not uploaded: ``checkpoint-*`` folders (resume state), names starting with ``_``, and ``training_args.bin`` (a pickle
of ``TrainingArguments``: not loadable without unpickling code, and every setting is in ``hf_ssl_run.json`` anyway).
A recipe run with ``--push_to_hub`` also pushes while it trains (Trainer's ``hub_strategy``, default ``every_save``),
and those pushes carry Trainer's ``training_args.bin``: :func:`push_run_directory` deletes it from the repository root
in its commit, so the repository ends as listed above. ``hub_strategy="checkpoint"`` / ``"all_checkpoints"`` still
push ``last-checkpoint/`` / ``checkpoint-*/`` (with their ``training_args.bin``), as asked. ``trainer.push_to_hub()``
is Trainer's own upload of ``output_dir``, ``training_args.bin`` included.

A push records its repository (and a licence given with ``license=``) in the run's ``hf_ssl_run.json`` (under
``publication``), so later cards, and the cards of runs that start from this one, name the repository as their
``base_model``.

Authentication is huggingface_hub's (``HF_TOKEN``, ``hf auth login``, or ``token=``); tokens are passed through, never
written or logged. The endpoint is ``HF_ENDPOINT`` (read by huggingface_hub at import).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from huggingface_hub import CommitInfo, HfApi

from .model_card import write_model_card
from .run_record import RunDirectory, record_publication

#: Never uploaded from a run directory (see the module docstring).
IGNORED_IN_UPLOADS = ["checkpoint-*", "_*", "training_args.bin", ".ipynb_checkpoints*"]
#: Deleted from the repository root by :func:`push_run_directory`: what Trainer's pushes during training left there
#: that the run's upload does not carry (patterns match whole repository paths, so ``last-checkpoint/...`` stays).
DELETED_IN_UPLOADS = ["training_args.bin"]
#: Files of a run directory that a pushed model carries along when ``run_directory=`` is given.
RUN_FILES = ("hf_ssl_run.json", "eval_results.json", "trainer_state.json")


def push_run_directory(
    run_dir: str | Path,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | bool | None = None,
    revision: str | None = None,
    commit_message: str = "Upload hf_ssl pretraining run",
    create_pr: bool = False,
    refresh_card: bool = True,
    card_data: dict[str, Any] | None = None,
) -> CommitInfo:
    """Create ``repo_id`` if needed, (re)write the card of ``run_dir`` as its README.md, and upload the run: one
    commit that adds the files of the module docstring's list and deletes :data:`DELETED_IN_UPLOADS` from the
    repository root. Then the repository (and ``card_data["license"]``, if given) is recorded in ``run_dir``'s
    ``hf_ssl_run.json`` (:func:`hf_ssl.publishing.run_record.record_publication`).

    Args:
        run_dir: an hf_ssl output folder (``config.json`` with ``ssl_config``, weights, ``hf_ssl_run.json``, ...).
        repo_id: ``org/name`` (or ``name``: the token's user namespace).
        refresh_card: regenerate README.md and figures from the run first (False: upload the folder's README as is).
        card_data: extra ``ModelCardData`` fields for the card (``license``, ``language``, ``tags``).
    """
    run_dir = Path(run_dir)
    RunDirectory.load(run_dir)  # refuse a folder that is not a run before creating anything remotely
    api = HfApi()
    repo_id = api.create_repo(repo_id, private=private, token=token, exist_ok=True).repo_id
    if refresh_card or not (run_dir / "README.md").is_file():
        write_model_card(run_dir, repo_id=repo_id, **(card_data or {}))
    commit = api.upload_folder(
        repo_id=repo_id, folder_path=run_dir, commit_message=commit_message, token=token, revision=revision,
        create_pr=create_pr, ignore_patterns=IGNORED_IN_UPLOADS, delete_patterns=DELETED_IN_UPLOADS,
    )
    if not create_pr:
        record_publication(run_dir, repo_id, license=(card_data or {}).get("license"))
    return commit


def write_trainer_model_card(trainer, language=None, license=None, tags=None, model_name=None, **unused) -> Path:
    """The card for ``Trainer.push_to_hub``: written into ``trainer.args.output_dir`` after Trainer saved the model
    there, with the live ``log_history`` (saved as ``trainer_state.json``) for the training curves."""
    output_dir = Path(trainer.args.output_dir)
    trainer.state.save_to_json(str(output_dir / "trainer_state.json"))
    repo_id = getattr(trainer, "hub_model_id", None) or trainer.args.hub_model_id
    overrides = {key: value for key, value in (("language", language), ("license", license), ("tags", _as_list(tags)))
                 if value}
    return write_model_card(output_dir, repo_id=repo_id or model_name, **overrides)


def _as_list(tags) -> list[str] | None:
    if tags is None:
        return None
    return [tags] if isinstance(tags, str) else list(tags)


def push_model(
    model,
    repo_id: str,
    *,
    commit_message: str | None = None,
    commit_description: str | None = None,
    private: bool | None = None,
    token: bool | str | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    max_shard_size: int | str | None = "50GB",
    tags: list[str] | None = None,
    run_directory: str | Path | None = None,
) -> CommitInfo:
    """Push an hf_ssl pretraining model with the generated card (not transformers' placeholder card).

    The model is saved into a temporary folder, the card is written from the model alone (method, paper, backbone,
    sizes, settings, loading code) and, with ``run_directory=``, from the run's record, evaluation and training curves
    too; then the folder is uploaded. The arguments are ``PreTrainedModel.push_to_hub``'s, plus ``run_directory``.
    """
    api = HfApi()
    repo_id = api.create_repo(repo_id, private=private, token=token, exist_ok=True).repo_id
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder, max_shard_size=max_shard_size)
        if run_directory is not None:  # the run's record, evaluation, log history and figures
            source = Path(run_directory)
            for name in RUN_FILES:
                if (source / name).is_file():
                    shutil.copy2(source / name, Path(folder) / name)
            for figure in RunDirectory.load(source).figures():
                shutil.copy2(figure, Path(folder) / figure.name)
        card_tags = list(dict.fromkeys([*(getattr(model, "model_tags", None) or []), *(tags or [])]))
        write_model_card(folder, repo_id=repo_id, **({"tags": card_tags} if card_tags else {}))
        return api.upload_folder(
            repo_id=repo_id, folder_path=folder, commit_message=commit_message or f"Upload {type(model).__name__}",
            commit_description=commit_description, token=token, revision=revision, create_pr=create_pr,
            ignore_patterns=IGNORED_IN_UPLOADS,
        )
