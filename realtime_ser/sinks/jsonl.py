"""Events -> JSON lines on stdout: one object per line, flushed per line.

A reader that closes the pipe early (``realtime-ser listen ... | head -3``) raises
``OutputClosed`` here; following the Python docs' "Note on SIGPIPE", stdout is then
pointed at /dev/null so the interpreter's final flush cannot raise again, and the
caller ends quietly.

Any other write failure (stdout closed with ``>&-``, ``> /dev/full``, a disk that fills up, an
I/O error) raises ``OutputError`` (exit 6) with one line saying so. Every line flushed before the
failure stays; when stdout is a regular file, a line torn by the failure is cut off again, so the
file holds only whole events.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import stat
import sys
from typing import TextIO

from ..errors import OutputError

log = logging.getLogger(__name__)


class OutputClosed(Exception):
    """The reader of stdout went away."""


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, allow_nan=False)
"""One encoder for every line (``json.dumps`` with these options builds a new one per call)."""


def encode(event: dict) -> str:
    """One event as its JSON line (without the newline)."""
    return _ENCODER.encode(event)


def _regular_file_fd(stream: TextIO | None) -> int | None:
    """The file descriptor under ``stream`` when it is a regular file (where a torn line can be cut off)."""
    if stream is None:
        return None
    try:
        fd = stream.fileno()
        return fd if stat.S_ISREG(os.fstat(fd).st_mode) else None
    except (AttributeError, OSError, ValueError):
        return None


class JsonlSink:
    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.lines = 0
        self.closed = False
        self._file_fd = _regular_file_fd(self.stream)
        self._line_start: int | None = None  # where the line being written starts, in a regular file

    def _offset(self) -> int | None:
        if self._file_fd is None:
            return None
        try:
            return os.lseek(self._file_fd, 0, os.SEEK_CUR)
        except OSError:
            return None

    def write(self, event: dict) -> None:
        write_text(self, encode(event) + "\n")
        self.lines += 1

    def _cut_torn_line(self) -> None:
        """After a failed write to a regular file: drop the part of a line that did get written."""
        start, fd = self._line_start, self._file_fd
        if start is None or fd is None:
            return
        try:
            if os.fstat(fd).st_size > start:
                os.ftruncate(fd, start)
        except OSError as e:
            log.debug("cutting the torn last line off stdout: %s", e)


def write_text(sink: JsonlSink, text: str) -> None:
    """Write and flush ``text`` on ``sink.stream``: ``OutputClosed`` when its reader left, ``OutputError``
    when stdout cannot be written (closed, full, I/O error); stdout is silenced after either."""
    if sink.closed:
        raise OutputClosed()
    stream = sink.stream
    try:
        if stream is None:  # the program was started with stdout closed
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        start = sink._line_start = sink._offset()
        stream.write(text)
        stream.flush()
        if start is not None:
            _check_whole_line_written(sink, stream, start, len(text.encode(stream.encoding or "utf-8")))
    except BrokenPipeError:
        sink.closed = True
        silence_stdout(stream)
        raise OutputClosed() from None
    except (OSError, ValueError) as e:
        sink.closed = True
        sink._cut_torn_line()
        silence_stdout(stream)
        reason = getattr(e, "strerror", None) or str(e)
        raise OutputError(f"cannot write to stdout ({reason}); the {sink.lines} line(s) before were written; "
                          f"redirect stdout to a writable file or pipe") from None


def _check_whole_line_written(sink: JsonlSink, stream: TextIO, start: int, size: int) -> None:
    """In a regular file, a flush that wrote only part of a line (the file reached its size or space
    limit) can return without an error, the rest left in the buffer. One byte written straight to
    the file gets the system's reason (the torn line is cut off by the caller either way)."""
    end, fd = sink._offset(), sink._file_fd
    if end is None or fd is None or end - start >= size:
        return
    try:
        os.write(fd, b"\n")
    except OSError as e:
        raise OSError(e.errno, e.strerror) from None
    raise OSError(errno.EIO, f"short write: {end - start} of {size} bytes")


def silence_stdout(stream: TextIO | None) -> None:
    """Point ``stream``'s file descriptor at /dev/null (after its reader closed it or it failed), and
    drop what its buffer still holds, so that no later flush (the interpreter's at exit) fails again."""
    if stream is None:
        return
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)
    try:
        stream.flush()  # now into /dev/null: empties the buffer
    except (OSError, ValueError) as e:  # a closed stream has no buffer left to lose
        log.debug("flushing stdout into /dev/null: %s", e)
