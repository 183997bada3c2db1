"""Exceptions raised by cellw1.

Every error names the problem and the fix. They derive from ``ValueError`` (or
``OSError`` for files) so code that catches the built-in types keeps working.
"""

from __future__ import annotations


class CellW1Error(Exception):
    """Base class of every error cellw1 raises on purpose."""


class InputError(CellW1Error, ValueError):
    """The data handed to cellw1 cannot be used as given (shape, NaN, too few cells...)."""


class ConfigError(CellW1Error, ValueError):
    """A configuration value is invalid (unknown name, group size that does not divide...)."""


class ModelFileError(CellW1Error, OSError):
    """A saved model is missing, truncated, corrupted or from an incompatible version."""


class OutputError(CellW1Error, OSError):
    """An output cannot be written (read-only folder, full disk, would overwrite the input...)."""


class MissingDependencyError(CellW1Error, ImportError):
    """An optional package that a chosen feature needs is not installed; the message names the pip extra."""
