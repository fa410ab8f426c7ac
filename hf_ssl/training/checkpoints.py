"""Atomic checkpoints: a ``checkpoint-N/`` folder exists only once everything in it is written.

``transformers.Trainer`` writes ``checkpoint-N/`` file by file (weights, optimizer, scheduler, RNG states, trainer
state) and then deletes the oldest checkpoints beyond ``save_total_limit``. A run killed in between (``kill -9``, the
out-of-memory killer, a pre-empted node) leaves a half-written ``checkpoint-N/`` that
:func:`transformers.trainer_utils.get_last_checkpoint` -- and so ``--resume_from_checkpoint true`` -- picks as the
newest, and resuming fails. :class:`hf_ssl.training.trainer.SSLTrainer` therefore writes each checkpoint into
``_tmp-checkpoint-N/`` (:func:`staging_folder`), syncs it to disk, renames it to ``checkpoint-N/``
(:func:`commit_checkpoint`, one ``os.replace``) and only then rotates old checkpoints out (renaming each to
``_tmp-deleted-checkpoint-M`` before deleting it, :func:`rotate_checkpoints`). A killed save leaves complete
checkpoints only, plus a ``_tmp-...`` folder that nothing reads: transformers' checkpoint
lookups match ``checkpoint-N`` only, Hub uploads skip ``_*`` paths (Trainer's pushes and
:data:`hf_ssl.publishing.hub.IGNORED_IN_UPLOADS`), and the next save deletes it (:func:`discard_staged_checkpoints`).

A ``checkpoint-N/`` folder written otherwise (by an older version, or a plain ``Trainer`` killed mid-save) may still be
incomplete: :func:`last_complete_checkpoint` is the last one whose ``trainer_state.json`` -- written last -- parses.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, sort_checkpoints
from transformers.utils import logging

logger = logging.get_logger(__name__)

#: Prefix of a checkpoint being written, ``_tmp-checkpoint-N``: the leading underscore keeps it out of Hub uploads.
STAGING_PREFIX = "_tmp-"
#: The file a checkpoint's writer saves last (``Trainer``'s ``TRAINER_STATE_NAME``): its presence marks a complete one.
TRAINER_STATE_NAME = "trainer_state.json"
#: A checkpoint folder's name, as :func:`transformers.trainer_utils.get_last_checkpoint` matches it.
_CHECKPOINT_NAME = re.compile(rf"{PREFIX_CHECKPOINT_DIR}-(\d+)")


def checkpoint_folder(run_dir: str | os.PathLike, step: int) -> Path:
    """``run_dir/checkpoint-<step>``, the folder ``Trainer`` resumes from."""
    return Path(run_dir) / f"{PREFIX_CHECKPOINT_DIR}-{step}"


def staging_folder(checkpoint: str | os.PathLike) -> Path:
    """Where ``checkpoint`` is written before :func:`commit_checkpoint` renames it: ``_tmp-checkpoint-N`` beside it."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(STAGING_PREFIX + checkpoint.name)


def staged_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """The ``_tmp-*checkpoint-*`` folders in ``run_dir``: saves (or deletions, :func:`rotate_checkpoints`) in
    progress, or left by a killed one."""
    folder = Path(run_dir)
    return sorted(folder.glob(f"{STAGING_PREFIX}*{PREFIX_CHECKPOINT_DIR}-*")) if folder.is_dir() else []


def discard_staged_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Delete what killed saves left in ``run_dir`` (:func:`staged_checkpoints`) and return it. Call it only where no
    save is in progress (``SSLTrainer`` does at the start of each save)."""
    leftovers = staged_checkpoints(run_dir)
    for path in leftovers:
        shutil.rmtree(path, ignore_errors=True)
        logger.info("deleted %s, left by a save that did not finish", path)
    return leftovers


def commit_checkpoint(staging: str | os.PathLike, checkpoint: str | os.PathLike) -> Path:
    """Make the fully written folder ``staging`` the checkpoint ``checkpoint``: sync its files to disk, rename it (an
    atomic ``os.replace`` on one file system), then sync the parent folder so the rename survives a crash too.

    A folder already at ``checkpoint`` (the same step saved twice) is renamed aside first and deleted after; if the
    process dies between the two renames, the older checkpoints are still there and complete."""
    staging, checkpoint = Path(staging), Path(checkpoint)
    for path in staging.rglob("*"):
        if path.is_file():
            _fsync(path)
    replaced = None
    if checkpoint.exists():
        replaced = staging.with_name(f"{STAGING_PREFIX}replaced-{checkpoint.name}")
        shutil.rmtree(replaced, ignore_errors=True)
        os.replace(checkpoint, replaced)
    os.replace(staging, checkpoint)
    _fsync(checkpoint.parent)
    if replaced is not None:
        shutil.rmtree(replaced, ignore_errors=True)
    return checkpoint


def rotate_checkpoints(run_dir: str | os.PathLike, save_total_limit: int | None,
                       best_model_checkpoint: str | None = None) -> list[Path]:
    """Delete the oldest checkpoints beyond ``save_total_limit``, keeping the newest and the best, as
    :func:`transformers.trainer_utils.rotate_checkpoints` (whose order, :func:`~transformers.trainer_utils.
    sort_checkpoints` by modification time, it uses), except that each is first renamed to ``_tmp-deleted-...``: a
    run killed while deleting leaves no half-deleted ``checkpoint-N``. Returns the deleted folders."""
    if not save_total_limit or save_total_limit <= 0:
        return []
    checkpoints = [Path(path) for path in sort_checkpoints(str(run_dir), use_mtime=True)]
    protected = {checkpoints[-1]} if checkpoints else set()
    if best_model_checkpoint is not None:
        protected.add(Path(best_model_checkpoint))
    surplus = len(checkpoints) - max(save_total_limit, len(protected))
    deleted = [path for path in checkpoints if path not in protected][:max(surplus, 0)]
    for path in deleted:
        doomed = path.with_name(f"{STAGING_PREFIX}deleted-{path.name}")
        shutil.rmtree(doomed, ignore_errors=True)
        os.replace(path, doomed)
        shutil.rmtree(doomed, ignore_errors=True)
    return deleted


def is_complete_checkpoint(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds a checkpoint whose writer finished: its ``trainer_state.json`` exists and parses."""
    try:
        return isinstance(json.loads((Path(folder) / TRAINER_STATE_NAME).read_text()), dict)
    except (OSError, ValueError):
        return False


def last_complete_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The last ``checkpoint-N`` of ``output_dir`` that :func:`is_complete_checkpoint` (``None`` when there is none):
    what :func:`transformers.trainer_utils.get_last_checkpoint` picks, except that incomplete folders are skipped
    with a warning naming them."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return None
    steps = sorted((int(match.group(1)) for match in map(_CHECKPOINT_NAME.fullmatch, os.listdir(folder))
                    if match is not None and checkpoint_folder(folder, int(match.group(1))).is_dir()), reverse=True)
    skipped = []
    for step in steps:
        candidate = checkpoint_folder(folder, step)
        if is_complete_checkpoint(candidate):
            break
        skipped.append(candidate.name)
    else:
        candidate = None
    if skipped:
        logger.warning("%s: skipped incomplete checkpoint folders (no readable %s): %s", folder, TRAINER_STATE_NAME,
                       ", ".join(skipped))
    return None if candidate is None else str(candidate)


def _fsync(path: Path) -> None:
    """Flush ``path`` (a file, or a folder's entries) to disk; file systems that cannot sync a folder are skipped."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
