"""The pretraining "view" of a tokenized sequence for masked-LM: the sequence as it is, plus the seed of its masks."""

from __future__ import annotations

from ..data.collators import VIEW_SEED
from .seeding import INDEX_COLUMN, example_seed


class MaskingSeeds:
    """A ``datasets`` transform that passes every column through and adds ``view_seed``, each example's seed from
    ``(seed, epoch, ssl_index)``; :class:`hf_ssl.data.collators.MaskedLMCollator` seeds a batch's masks from them.

    Used with :func:`hf_ssl.views.apply_views` (which adds ``ssl_index``); ``SSLTrainer`` sets :attr:`seed` to the
    run's seed and calls :meth:`set_epoch`, so every epoch masks anew (dynamic masking) while the masks of a step do
    not depend on dataloader workers, prefetching or a resume from a checkpoint.
    """

    def __init__(self, seed: int = 0):
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        if INDEX_COLUMN not in batch:
            raise ValueError(
                f"the dataset has no {INDEX_COLUMN!r} column (columns: {sorted(batch)}); attach this transform with "
                "hf_ssl.views.apply_views, which adds it"
            )
        return {**batch, VIEW_SEED: [example_seed(self.seed, self.epoch, int(index)) for index in batch[INDEX_COLUMN]]}
