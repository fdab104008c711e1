"""Events -> JSON lines on stdout: one object per line, flushed per line.

A reader that closes the pipe early (``realtime-ser listen ... | head -3``) raises
``OutputClosed`` here; following the Python docs' "Note on SIGPIPE", stdout is then
pointed at /dev/null so the interpreter's final flush cannot raise again, and the
caller ends quietly.
"""

from __future__ import annotations

import json
import os
import sys
from typing import TextIO


class OutputClosed(Exception):
    """The reader of stdout went away."""


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, allow_nan=False)
"""One encoder for every line (``json.dumps`` with these options builds a new one per call)."""


class JsonlSink:
    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.lines = 0
        self.closed = False

    def write(self, event: dict) -> None:
        if self.closed:
            raise OutputClosed()
        line = _ENCODER.encode(event)
        try:
            self.stream.write(line + "\n")
            self.stream.flush()
        except BrokenPipeError:
            self.closed = True
            silence_stdout(self.stream)
            raise OutputClosed() from None
        self.lines += 1


def silence_stdout(stream: TextIO) -> None:
    """Point ``stream``'s file descriptor at /dev/null (after its reader closed it)."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)
