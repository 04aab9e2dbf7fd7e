"""Errors raised by the library. The CLI turns each into a one-line message and exit code 1.

Library code raises these (never ``click`` exceptions, never ``assert`` on user input) so
that a message says what is wrong, shows the values involved and, where there is one,
the fix.
"""


class GeotilerError(Exception):
    """Base class of every error a user can act on."""


class InputError(GeotilerError):
    """An input file is missing, unreadable, or not what the command needs."""


class ConfigError(GeotilerError):
    """A setting is out of range or inconsistent with the data."""


class OutputError(GeotilerError):
    """An output location cannot be used (exists, is not ours, is not writable)."""


class DatasetError(GeotilerError):
    """A tile dataset is missing, incomplete, corrupt or of an unsupported version."""


class ModelFileError(GeotilerError):
    """A model file is corrupt, not a geotiler model, or incompatible with the input."""
