"""``python -m realtime_ser``: the same as the ``realtime-ser`` command."""

from .cli import entry

entry()
