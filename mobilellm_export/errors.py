"""User-facing errors.

Every failure a user can cause (bad checkpoint, wrong config, unsupported option, prompt too long)
raises a subclass of `MobileLLMError`. The CLI prints its message as one line and exits non-zero;
anything else is a bug and keeps its traceback.
"""


class MobileLLMError(Exception):
    """An error whose message is complete enough to show the user as one line."""

    exit_code = 2


class ConfigError(MobileLLMError):
    """An architecture config that is invalid, unknown or incomplete."""


class CheckpointError(MobileLLMError):
    """A checkpoint that cannot be loaded: missing, corrupt, incomplete or of another architecture."""


class TokenizerError(MobileLLMError):
    """A tokenizer file that is missing or cannot be read."""


class GenerationError(MobileLLMError):
    """A generation request the model cannot serve, e.g. a prompt longer than the context."""


class UnsupportedError(MobileLLMError):
    """An option or combination of options this tool does not support."""


class MissingDependencyError(MobileLLMError):
    """An optional package a chosen backend needs is not installed."""
