"""User-facing errors.

Anything a user can cause (a bad recipe, a missing file, a malformed row) raises a
``ClinituneError`` subclass with a one-line message naming the file / row / key. The CLI turns
these into exit code 2 without a traceback. Bugs stay ordinary exceptions with tracebacks.
Messages must never contain note text (PHI).
"""

from __future__ import annotations


class ClinituneError(Exception):
    """Base class for errors caused by user input."""


class RecipeError(ClinituneError):
    """The recipe is invalid: unknown key, wrong type, missing file."""


class DataError(ClinituneError):
    """Input data is malformed (names file, row and field; never the text)."""


class ModelNotAvailableError(ClinituneError):
    """A model id cannot be resolved to local weights."""


class StageError(ClinituneError):
    """A stage cannot run: its inputs are missing or inconsistent."""
