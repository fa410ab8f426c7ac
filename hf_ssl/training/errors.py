"""How hf_ssl tells a user what to fix: :class:`UsageError` and argument parsers that raise it.

:class:`UsageError` is a command line (or config file) that cannot run as given: an unknown or malformed flag,
flags that contradict each other, an output folder that already holds a run. Its message is one sentence that names
the problem and the fix. It subclasses ``ValueError``, so code that catches ``ValueError`` keeps working;
``hf-ssl`` prints it on one line and exits with status 2 (see :mod:`hf_ssl.cli` for the other exit codes).

:class:`ArgumentParser` and :class:`DataclassArgumentParser` are ``argparse.ArgumentParser`` and
``transformers.HfArgumentParser`` whose errors (``invalid int value``, ``expected one argument``, ...) raise
:class:`UsageError` instead of printing the whole usage and exiting; ``--help`` still prints and exits as usual.
The dataclass parser also names unknown flags, matching them exactly (no abbreviations).
"""

from __future__ import annotations

import argparse
from typing import NoReturn

from transformers import HfArgumentParser


class UsageError(ValueError):
    """A command line that cannot run as given; the message names the problem and the fix in one sentence."""


class _RaisesUsageError:
    """``argparse.ArgumentParser.error`` raising :class:`UsageError` (with a pointer to ``--help``)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message}; `{self.prog} --help` lists the arguments")


class ArgumentParser(_RaisesUsageError, argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors raise :class:`UsageError`."""


class DataclassArgumentParser(_RaisesUsageError, HfArgumentParser):
    """``transformers.HfArgumentParser`` whose errors raise :class:`UsageError`, unknown flags included.

    Flags are matched exactly (``allow_abbrev=False``): with hundreds of flags, a typo such as ``--temperatur``
    should be named, not taken for ``--temperature``, and a recorded command must keep its meaning when flags are
    added.
    """

    def __init__(self, dataclass_types, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(dataclass_types, **kwargs)

    def parse_args_into_dataclasses(self, args=None, return_remaining_strings=False, **kwargs):
        *parsed, remaining = super().parse_args_into_dataclasses(args=args, return_remaining_strings=True, **kwargs)
        if return_remaining_strings:
            return (*parsed, remaining)
        if remaining:
            self.error(f"unknown argument(s) {' '.join(unknown_flags(remaining))}")
        return tuple(parsed)


def unknown_flags(remaining: list[str]) -> list[str]:
    """The flags among arguments a parser did not use (``["--nope", "3"] -> ["--nope"]``), or all of them when none
    is a flag (a stray positional argument)."""
    flags = [item.split("=", 1)[0] for item in remaining if item.startswith("-")]
    return flags or list(remaining)
