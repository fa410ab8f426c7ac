"""The licence a card states for a model: the one its publisher stated, else the one its sources share.

A model's sources are its training data and the checkpoints it started from (:mod:`hf_ssl.publishing.checkpoints`).
The licence of each, as a Hub licence identifier (https://huggingface.co/docs/hub/repositories-licenses), comes from
what hf_ssl knows: :data:`hf_ssl.publishing.datasets.KNOWN_DATASETS` for data, :data:`hf_ssl.publishing.checkpoints.
KNOWN_CHECKPOINTS` for published checkpoints, the ``license`` of a local checkpoint's (or a cached Hub checkpoint's)
README.md, and for a local hf_ssl output the licence of that run, worked out the same way.

The card inherits a licence only when every source's licence is known and they all agree (public-domain data imposes
none). Otherwise it states none and says why: hf_ssl does not guess which terms bind a model trained on differently
licensed sources. ``hf-ssl card --license`` / ``hf-ssl push --license`` (or ``license=`` in Python) state one; a push
records it in the run record, so later cards keep it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import try_to_load_from_cache
from huggingface_hub.repocard import metadata_load

from ..data.sources import bare_name, readable_name
from .checkpoints import KNOWN_CHECKPOINTS, StartingPoint, starting_points
from .datasets import PUBLIC_DOMAIN, facts_for, public_name
from .run_record import PUBLICATION, RunDirectory

#: How deep a chain of local hf_ssl runs (each started from the previous) is followed for licences.
MAX_CHAIN = 8
#: How a card asks for a licence it cannot inherit.
STATE_ONE = "state one with `hf-ssl push --license ...` (or `hf-ssl card --license ...`)"


@dataclass(frozen=True)
class Licence:
    """``hub_id``: the card's ``license`` metadata (``None``: left out); ``text``: the card's sentence about it."""

    hub_id: str | None
    text: str


@dataclass(frozen=True)
class Source:
    """One source of a model, with its licence identifier (``None``: not known to hf_ssl)."""

    name: str
    hub_licence: str | None


def model_licence(run: RunDirectory, stated: str | None = None, _depth: int = 0) -> Licence:
    """The licence of the model in ``run``: ``stated``, else the one its record's publication states, else the one
    inherited from its sources (see the module docstring)."""
    stated = stated or (run.record.get(PUBLICATION) or {}).get("license")
    if stated:
        return Licence(stated, f"{stated} (stated by the publisher)")
    sources = [*data_sources(run), *(checkpoint_source(start, _depth) for start in starting_points(run))]
    listing = ", ".join(f"{source.name} ({source.hub_licence or 'unknown'})" for source in sources)
    unknown = [source.name for source in sources if source.hub_licence is None]
    terms = sorted({source.hub_licence for source in sources} - {None, PUBLIC_DOMAIN})
    if len(terms) == 1 and not unknown:
        return Licence(terms[0], f"{terms[0]}, inherited from its sources: {listing}")
    if unknown:
        reason = f"hf_ssl does not know the licence of every source: {listing}"
    elif terms:
        reason = f"its sources carry different licences: {listing}"
    else:
        reason = f"its sources impose none: {listing}"
    return Licence(None, f"not stated: {reason}; {STATE_ONE}")


def data_sources(run: RunDirectory) -> list[Source]:
    """The training data of ``run``, each with its licence (one entry per corpus of a multi-corpus run)."""
    values = run.training_data()
    if not values:
        return [Source("the training data (not recorded)", None)]
    sources = []
    for item in values:
        facts = facts_for(item)
        sources.append(Source(readable_name(item) or f"`{public_name(bare_name(item))}`",
                              facts.hub_licence if facts else None))
    return sources


def checkpoint_source(start: StartingPoint, depth: int = 0) -> Source:
    """A starting checkpoint with its licence: known, from its README.md (local or cached), or its run's."""
    if start.hub_id in KNOWN_CHECKPOINTS:
        return Source(start.name, KNOWN_CHECKPOINTS[start.hub_id].hub_licence)
    if start.run is not None and depth < MAX_CHAIN:
        return Source(start.name, model_licence(start.run, _depth=depth + 1).hub_id)
    readme = start.local_folder / "README.md" if start.local_folder is not None else None
    if (readme is None or not readme.is_file()) and start.hub_id:
        cached = try_to_load_from_cache(start.hub_id, "README.md")
        readme = Path(cached) if isinstance(cached, str) else None
    licence = (metadata_load(readme) or {}).get("license") if readme is not None and readme.is_file() else None
    return Source(start.name, licence if isinstance(licence, str) else None)
