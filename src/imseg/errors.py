"""Errors a user can cause; the CLI prints their message without a traceback."""


class ImsegError(Exception):
    """Base of all errors that carry a message meant for the user."""


class DataError(ImsegError):
    """Bad input data: missing folder, image without mask, wrong size or values."""


class ConfigError(ImsegError):
    """An invalid configuration file or override."""


class StorageError(ImsegError):
    """Output that cannot be written: full disk, read-only or unwritable folder."""
