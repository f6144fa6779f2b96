"""Errors the engine raises. Each carries a message a user can act on.

The service maps them onto problem+json responses (422 for bad input), so keep them
free of framework types.
"""

from __future__ import annotations


class UnlearningError(Exception):
    """Base class for every error the engine raises on purpose."""


class InvalidInputError(UnlearningError, ValueError):
    """Something the caller gave is wrong (bad shape, unknown key, bad value)."""


class ArchitectureError(InvalidInputError):
    """Unknown architecture or a config it cannot be built from."""


class CheckpointError(InvalidInputError):
    """A checkpoint is not safetensors, is truncated, or does not fit the architecture."""


class DataError(InvalidInputError):
    """A data set is malformed or does not fit the model."""


class ParamsError(InvalidInputError):
    """Unknown method, unknown parameter, or a parameter out of range."""


class DivergedError(UnlearningError):
    """The update produced NaN or Inf; the input model is left untouched."""


class CancelledError(UnlearningError):
    """The caller asked to stop (should_cancel returned True)."""
