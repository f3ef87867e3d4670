"""Errors that the CLI turns into one clear paragraph and an exit code (no traceback)."""
from __future__ import annotations


class PyrawanError(Exception):
    """A failure the user can fix. ``exit_code`` 2 = bad usage or invalid input, 1 = failure while running."""

    exit_code = 1

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class InputError(PyrawanError):
    """Invalid input: a bad recipe, argument, shape or file (exit code 2)."""

    exit_code = 2


class RunError(PyrawanError):
    """A failure while running, e.g. an artifact that does not verify (exit code 1)."""

    exit_code = 1
