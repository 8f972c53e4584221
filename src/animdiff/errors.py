"""Errors a user can act on.

Every failure that comes from the user's input or files is an `AnimdiffError` subclass whose
message names the offending setting or file. The CLI prints the message without a traceback and
the HTTP API maps `http_status` onto the response, so the message is the whole user interface of
a failure: write it for the person who has to fix their input.
"""

from __future__ import annotations


class AnimdiffError(Exception):
    """Base class: a problem with the user's input, files or environment, not a bug."""

    http_status: int = 400


class ParamsError(AnimdiffError):
    """A setting is out of range or contradicts another setting."""

    http_status = 422


class NotSupportedYetError(AnimdiffError):
    """A valid setting whose behaviour animdiff does not implement yet (never silently ignored)."""

    http_status = 501


class ModelNotFoundError(AnimdiffError):
    """A named checkpoint, motion module, LoRA or other model file does not exist."""

    http_status = 404


class ModelFileError(AnimdiffError):
    """A model file exists but cannot be read: damaged, truncated, unsafe or incomplete."""


class ModelTypeError(AnimdiffError):
    """A model file is the wrong kind for where it was given, or two models do not fit together."""


class OfflineError(AnimdiffError):
    """Something would have to be downloaded, and the network or the hub cannot be reached."""

    http_status = 503


class PromptError(AnimdiffError):
    """A prompt (attention syntax, prompt travel, LoRA tags) cannot be parsed."""

    http_status = 422


class LoraError(AnimdiffError):
    """A LoRA or motion LoRA cannot be found or does not fit the model."""


class InterpolationError(AnimdiffError):
    """Frame interpolation cannot run (model file missing or unusable)."""


class OutputError(AnimdiffError):
    """An output file could not be written."""

    http_status = 500


class CancelledError(AnimdiffError):
    """The job was cancelled by the user; nothing was written."""

    http_status = 409
