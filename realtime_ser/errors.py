"""The error hierarchy. Every expected failure is a ``SerError`` with a one-line
message that says what was received, what was expected and how to fix it; the CLI
maps each subclass to an exit code and prints the message without a traceback."""

from __future__ import annotations


class SerError(Exception):
    """Root of all expected realtime-ser failures."""

    exit_code = 1


class ConfigError(SerError):
    """Invalid arguments or configuration values."""

    exit_code = 2


class InputAudioError(SerError):
    """An audio file that cannot be read or holds no usable audio."""

    exit_code = 3


class ModelError(SerError):
    """A missing, corrupted or mismatched model or model card."""

    exit_code = 4


class AudioDeviceError(SerError):
    """No input device, a device that cannot be opened, or one that vanished."""

    exit_code = 5


class OutputError(SerError):
    """stdout cannot be written: closed (``>&-``), full (``> /dev/full``, a full disk) or an I/O error.
    (A reader that goes away, ``| head``, is not an error: the program ends quietly with 141.)"""

    exit_code = 6
