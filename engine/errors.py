"""The FacecastError family: every message says what was wrong and what to do about it."""


class FacecastError(Exception):
    """Base class; the CLI prints the message and exits with ``exit_code``."""

    exit_code = 1


class InputError(FacecastError):
    """A file the user gave cannot be used (unreadable, empty, wrong kind)."""

    exit_code = 2


class AudioError(InputError):
    """Audio is unreadable, empty, silent or in a shape we cannot use."""


class FaceError(InputError):
    """No usable face: none found, too small, or several where one is needed."""


class WeightsError(FacecastError):
    """A weights file is missing or does not match its config."""

    exit_code = 3


class DependencyError(FacecastError):
    """A system tool or optional package is missing; the message says how to install it."""

    exit_code = 4
