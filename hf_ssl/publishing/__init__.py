"""Publishing a run: its record, its model card (template shipped as package data), figures, and the Hub.

Models never publish themselves: the card is built from a run directory (``hf_ssl_run.json``, ``eval_results.json``,
``trainer_state.json``, the saved model), so every way of publishing gives the same card.
"""

from .hub import push_model, push_run_directory
from .model_card import build_model_card, write_model_card

__all__ = ["build_model_card", "push_model", "push_run_directory", "write_model_card"]
