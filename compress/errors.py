"""Errors a user can act on. The CLI prints their message, never a traceback.

Exit codes follow the CLI contract: 1 when a run or a check failed, 2 for invalid input.
"""


class CompressError(Exception):
    """Base of every error the CLI reports as a one-line message."""

    exit_code = 1


class InputError(CompressError):
    """Invalid input: a recipe, a suite, an argument, a missing file (exit code 2)."""

    exit_code = 2


class RecipeError(InputError):
    """A recipe or suite that does not validate; the message names file, line, field and value."""


class StageError(CompressError):
    """A stage failed while building an artifact."""


class MeasureError(CompressError):
    """A measurement failed for one candidate."""
