"""Errors a user can cause. Entry points print their message alone, without a traceback."""


class CsftError(Exception):
    """Base class: the message names the file, row or config key at fault."""


class DataError(CsftError, ValueError):
    """A data file is missing or holds something csft cannot use."""


class ConfigError(CsftError, ValueError):
    """A config asks for something impossible (e.g. more layers than the model has)."""


class ModelNotAvailableError(CsftError, OSError):
    """A pretrained model cannot be loaded offline."""
