"""One hierarchy of errors: every bad input ends in a subclass of GllmError naming what was wrong."""

from __future__ import annotations


class GllmError(Exception):
    """Base of every error gllm raises on purpose."""


class ModelNotFoundError(GllmError):
    """A model name that resolves to nothing: no local path, alias, store entry or hub repository."""


class OfflineError(ModelNotFoundError):
    """Offline mode is on and the model is not in the store."""


class InvalidModelNameError(GllmError):
    """A model or store name that is malformed or tries to escape the model store."""


class UnsupportedArchitectureError(GllmError):
    """No installed plugin serves the model's architecture."""


class UnsupportedFormatError(GllmError):
    """No installed weight format or tokenizer loader recognises the files."""


class CorruptFileError(GllmError):
    """A model file is truncated, malformed or unsafe to read."""


class UnsafeTemplateError(CorruptFileError):
    """A model's chat template tried to reach Python internals; the sandbox refused it."""


class BackendUnavailableError(GllmError):
    """The requested backend is not installed or cannot run on this machine."""


class BadRequestError(GllmError, ValueError):
    """A request argument is invalid (wrong type, out of range, missing)."""


class PluginError(GllmError):
    """A plugin registered something invalid."""


class DownloadError(GllmError):
    """A hub download failed."""
