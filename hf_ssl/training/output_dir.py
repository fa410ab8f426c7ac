"""The output folder of a run: one run per folder, resumed, replaced or refused, never mixed.

A run writes its model (weights, config, processor or tokenizer), ``checkpoint-N/`` folders, its record
(``hf_ssl_run.json``), evaluation, model card and figures into ``output_dir``. Training into a folder that already holds
a run would overwrite its model and card while checkpoint rotation deletes some of the old run's checkpoints and keeps
others beside the new ones. :func:`prepare_output_dir` therefore refuses such a folder before anything loads, unless
the run

- resumes it: ``--resume_from_checkpoint <output_dir>/checkpoint-N``, or ``true`` for the last checkpoint
  (transformers' meaning of ``resume_from_checkpoint=True``, skipping incomplete ones);
- replaces it: ``--overwrite`` (``overwrite_output_dir``, the flag of transformers 4's example scripts) deletes the
  old run's files first (:func:`clear_run`: only what a run writes, see :data:`RUN_FILE_PATTERNS`; other files stay);
- or goes to a new ``--output_dir``.

A checkpoint records the method and job that wrote it (:class:`hf_ssl.training.callbacks.RunMethodRecord` in its
``trainer_state.json``; a pretraining checkpoint also names its class in ``config.json``), so resuming it with another
method is refused before its weights are read (:func:`check_checkpoint_method`).
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
from pathlib import Path

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..methods.base import METHOD_REGISTRY
from ..methods.published_layout import SSL_STATE_NAME
from ..publishing.run_record import EVAL_RESULTS, FIGURE_SUFFIXES, RUN_RECORD
from .callbacks import RunMethodRecord
from .checkpoints import last_complete_checkpoint
from .errors import UsageError

#: Weight files of a saved model (``save_pretrained``, sharded or not, safetensors or pickle; hf_ssl's method state).
WEIGHT_PATTERNS = ("model.safetensors", "model-*-of-*.safetensors", "model.safetensors.index.json",
                   "pytorch_model.bin", "pytorch_model-*-of-*.bin", "pytorch_model.bin.index.json", SSL_STATE_NAME)
#: Files a run writes at the top of ``output_dir``, besides its figures: the model and its processor / tokenizer /
#: feature extractor (``save_pretrained``), the sentence-transformers files of a Sentence-BERT run, the run record,
#: evaluation, trainer state and card. :func:`clear_run` deletes these, the folders below and nothing else.
RUN_FILE_PATTERNS = (
    *WEIGHT_PATTERNS, "config.json", "generation_config.json",
    "preprocessor_config.json", "processor_config.json", "feature_extractor_config.json", "tokenizer.json",
    "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.txt", "vocab.json", "merges.txt",
    "spiece.model", "sentencepiece.bpe.model", "chat_template.jinja", "chat_template.json",
    "modules.json", "config_sentence_transformers.json", "sentence_bert_config.json",
    RUN_RECORD, EVAL_RESULTS, "trainer_state.json", "training_args.bin", "all_results.json", "train_results.json",
    "README.md",
)
#: Folders a run writes at the top of ``output_dir`` besides ``checkpoint-N/``: sentence-transformers modules
#: (``1_Pooling``, ``2_Normalize``), TensorBoard's ``runs/`` and the leftovers of an interrupted save or rotation
#: (``_tmp-checkpoint-N``, ``_tmp-deleted-...``, :mod:`hf_ssl.training.checkpoints`).
RUN_FOLDER_PATTERNS = ("[0-9]_*", "runs", "_tmp-*")
#: ``--resume_from_checkpoint`` values meaning "the last checkpoint in output_dir" / "do not resume".
RESUME_LAST = ("true",)
RESUME_NONE = ("false", "")


def checkpoint_folders(output_dir: str | os.PathLike) -> list[Path]:
    """The ``checkpoint-N/`` folders of ``output_dir``, by step."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    found = [path for path in folder.glob(f"{PREFIX_CHECKPOINT_DIR}-*")
             if path.is_dir() and path.name.split("-", 1)[1].isdigit()]
    return sorted(found, key=lambda path: int(path.name.split("-", 1)[1]))


def run_contents(output_dir: str | os.PathLike) -> list[str]:
    """What marks ``output_dir`` as holding a run: its saved model, checkpoints and run record (empty: no run)."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    names = sorted(path.name for path in folder.iterdir())
    contents = ["the model"] if any(fnmatch.fnmatch(name, pattern) for name in names for pattern in WEIGHT_PATTERNS) \
        else []
    checkpoints = checkpoint_folders(folder)
    if checkpoints:
        contents.append(", ".join(path.name for path in checkpoints))
    if RUN_RECORD in names:
        contents.append(RUN_RECORD)
    return contents


def run_files(output_dir: str | os.PathLike) -> list[Path]:
    """The files and folders of ``output_dir`` that a run wrote: ``checkpoint-N/``, :data:`RUN_FILE_PATTERNS`,
    :data:`RUN_FOLDER_PATTERNS` and the figures (``*.png``, ...) that its model card shows. Others are not listed."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    checkpoints = set(checkpoint_folders(folder))

    def written_by_a_run(path: Path) -> bool:
        if path.is_dir():
            return path in checkpoints or any(fnmatch.fnmatch(path.name, pattern) for pattern in RUN_FOLDER_PATTERNS)
        return (any(fnmatch.fnmatch(path.name, pattern) for pattern in RUN_FILE_PATTERNS)
                or path.suffix.lower() in FIGURE_SUFFIXES)

    return sorted(path for path in folder.iterdir() if written_by_a_run(path))


def clear_run(output_dir: str | os.PathLike) -> list[Path]:
    """Delete the files and folders a run wrote into ``output_dir`` (:func:`run_files`) and return them; the user's
    other files stay."""
    removed = run_files(output_dir)
    for path in removed:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    return removed


def resolve_checkpoint(value: str | bool | None, output_dir: str | os.PathLike) -> str | None:
    """``--resume_from_checkpoint`` as a checkpoint folder: ``true`` -> the last complete ``checkpoint-N`` of
    ``output_dir`` (:func:`~hf_ssl.training.checkpoints.last_complete_checkpoint`), ``false`` / empty / ``None`` ->
    ``None``, a path -> itself once it is a folder."""
    if value is None or value is False or (isinstance(value, str) and value.strip().lower() in RESUME_NONE):
        return None
    if value is True or str(value).strip().lower() in RESUME_LAST:
        last = last_complete_checkpoint(output_dir)
        if last is None:
            raise UsageError(
                f"--resume_from_checkpoint true found no {PREFIX_CHECKPOINT_DIR}-N folder in {output_dir} to resume; "
                "name a checkpoint folder, or drop the flag to start a new run"
            )
        return last
    if not Path(value).is_dir():
        raise UsageError(
            f"--resume_from_checkpoint {value}: no such checkpoint folder; name an existing <output_dir>/"
            f"{PREFIX_CHECKPOINT_DIR}-N, or pass true for the last checkpoint of --output_dir"
        )
    return str(value)


def checkpoint_method(checkpoint: str | os.PathLike) -> tuple[str, str | None] | None:
    """``(method, job)`` that trained ``checkpoint``: from the :class:`RunMethodRecord` in its ``trainer_state.json``,
    else (a pretraining checkpoint of an earlier version) from its ``config.json`` (``ssl_config.method``, or the
    pretraining class it names), with the job unknown. ``None`` when none tells."""
    folder = Path(checkpoint)
    state = _read_json(folder / "trainer_state.json")
    record = (state.get("stateful_callbacks") or {}).get(RunMethodRecord.__name__)
    if isinstance(record, list):
        record = record[0] if record else None
    if isinstance(record, dict) and (record.get("args") or {}).get("method"):
        return record["args"]["method"], record["args"].get("job")
    config = _read_json(folder / "config.json")
    method = (config.get("ssl_config") or {}).get("method") if isinstance(config.get("ssl_config"), dict) else None
    if method:
        return method, None
    classes = {model_class.__name__: name for name, model_class in METHOD_REGISTRY.items()}
    for architecture in config.get("architectures") or []:
        if architecture in classes:
            return classes[architecture], None
    return None


def check_checkpoint_method(checkpoint: str | os.PathLike, method: str, job: str | None = None) -> None:
    """Refuse to resume ``checkpoint`` with another ``method``, or with the same method on another job (another kind
    of data), naming both; nothing is loaded. A checkpoint that does not say what trained it passes."""
    trained = checkpoint_method(checkpoint)
    if trained is None:
        return
    trained_method, trained_job = trained
    if trained_method != method:
        raise UsageError(
            f"{checkpoint} was trained with {trained_method}, not {method}: resume it with --method {trained_method}, "
            f"or start a new {method} run without --resume_from_checkpoint"
        )
    if job is not None and trained_job is not None and trained_job != job:
        raise UsageError(
            f"{checkpoint} was trained by {method}'s {trained_job} job, not its {job} job: resume it with the "
            "--modality it was trained with, or start a new run without --resume_from_checkpoint"
        )


def prepare_output_dir(training_args, method: str, job: str | None = None) -> str | None:
    """Apply the one-run-per-folder rule (module docstring) before training; return the checkpoint to resume.

    ``training_args``: :class:`~hf_ssl.training.arguments.SSLTrainingArguments`; its ``resume_from_checkpoint`` is
    resolved in place (``true`` -> the last checkpoint's path). With ``overwrite_output_dir``, the old run's files are
    deleted by the main process while the others wait. Raises :class:`~hf_ssl.training.errors.UsageError` for a
    folder that holds a run, a checkpoint that does not exist or was trained by another method, and contradicting
    flags.
    """
    output_dir = training_args.output_dir
    overwrite = getattr(training_args, "overwrite_output_dir", False)
    checkpoint = resolve_checkpoint(training_args.resume_from_checkpoint, output_dir)
    contents = run_contents(output_dir)
    if checkpoint is not None:
        inside = Path(checkpoint).resolve().parent == Path(output_dir).resolve()
        if overwrite and inside:
            raise UsageError(f"--overwrite would delete {checkpoint}, which --resume_from_checkpoint resumes: "
                             "drop one of the two flags")
        if contents and not inside and not overwrite:
            raise UsageError(
                f"--output_dir {output_dir} already holds another run ({'; '.join(contents)}) than {checkpoint}'s: "
                "resume into the checkpoint's own folder, add --overwrite to replace that run, or pick a new "
                "--output_dir"
            )
        check_checkpoint_method(checkpoint, method, job)
        training_args.resume_from_checkpoint = checkpoint
    elif contents and not overwrite:
        raise UsageError(
            f"--output_dir {output_dir} already holds a run ({'; '.join(contents)}): resume it with "
            "--resume_from_checkpoint true (its last checkpoint), replace it with --overwrite (deletes the old run's "
            "files first), or pick a new --output_dir"
        )
    if overwrite and (checkpoint is None or not inside):
        with training_args.main_process_first(local=training_args.save_on_each_node, desc="clearing output_dir"):
            if training_args.should_save and run_files(output_dir):
                removed = clear_run(output_dir)
                print(f"--overwrite: deleted the previous run in {output_dir} ({len(removed)} files and folders)",
                      flush=True)
    return checkpoint


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}
