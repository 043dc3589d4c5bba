"""The exceptions the library raises; `rft_cli.cli` turns them into messages and exit codes.

Exit codes (documented in README):
    0  success (warnings allowed)
    1  the data is invalid, a quality gate failed, or a run failed (NaN, full disk, grader errors)
    2  usage or configuration error (bad flag, missing file, bad config or grader file)
    130 interrupted (Ctrl-C); a checkpoint was saved where one could be
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class RftError(Exception):
    """Base class: a one-sentence message that names the file, the place and a fix."""

    exit_code = EXIT_INVALID


class DataError(RftError):
    """A dataset file breaks the contract (bad JSON, missing messages, ...)."""

    exit_code = EXIT_INVALID


class ConfigError(RftError):
    """A config, recipe or command-line value is wrong; names the key path."""

    exit_code = EXIT_USAGE


class GraderError(ConfigError):
    """A grader file cannot be built (unknown type, missing field, bad formula)."""


class TrainingError(RftError):
    """A run failed while training (numerical fault, too many grader errors, I/O error)."""

    exit_code = EXIT_INVALID


class RftWarning(UserWarning):
    """Something the user should know that does not stop the command (the CLI prints
    `Warning: <message>` on stderr, once)."""
