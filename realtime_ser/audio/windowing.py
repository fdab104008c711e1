"""Sliding windows over a stream of 16 kHz mono samples. Pure: no threads, no devices.

The stream is taken to be preceded by silence (the window buffer starts as zeros), so
the first window ends one hop after the stream starts and a clip shorter than a window
is handled exactly like the first seconds of a live stream. Window ``k`` (k = 1, 2, ...)
ends at sample ``k * hop``; ``flush()`` at the end of a finite stream emits one last
window ending at the final sample when samples arrived after the last window's end.

The same input gives the same windows whatever the block sizes it arrives in: every
window is a function of the sample index at which it ends, nothing else.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

BUFFER_WINDOWS = 4  # the sample buffer holds this many windows (see Windower)


@dataclass(frozen=True)
class Window:
    """One analysis window: ``samples`` covers stream samples ``[end - len(samples), end)``.

    ``start`` is clamped at 0 (the part before the stream began is zero padding);
    ``final`` marks the extra window emitted by ``flush()``.
    """

    start: int
    end: int
    samples: np.ndarray
    final: bool = False


class Windower:
    """Turns blocks of samples into windows of ``window`` samples every ``hop`` samples."""

    def __init__(self, window: int, hop: int) -> None:
        if window <= 0 or hop <= 0:
            raise ValueError(f"window and hop must be positive sample counts, got {window} and {hop}")
        if hop > window:
            raise ValueError(f"hop ({hop} samples) must not exceed the window ({window} samples)")
        self.window = window
        self.hop = hop
        # The last ``window`` samples are buf[pos - window : pos]; new samples go after them and the
        # tail moves back to the front only when the buffer is full (once per BUFFER_WINDOWS - 1
        # windows of audio), instead of shifting the whole window on every block.
        self._buf = np.zeros(BUFFER_WINDOWS * window, dtype=np.float32)
        self._pos = window
        self._total = 0  # samples received so far
        self._last_end = 0  # end sample of the last emitted window

    @property
    def samples_seen(self) -> int:
        return self._total

    def _append(self, piece: np.ndarray) -> None:
        n = len(piece)
        w = self.window
        if n >= w:
            self._buf[:w] = piece[-w:]
            self._pos = w
        else:
            if self._pos + n > len(self._buf):
                self._buf[:w] = self._buf[self._pos - w : self._pos]
                self._pos = w
            self._buf[self._pos : self._pos + n] = piece
            self._pos += n
        self._total += n

    def _emit(self, final: bool = False) -> Window:
        end = self._total
        self._last_end = end
        samples = self._buf[self._pos - self.window : self._pos].copy()
        return Window(start=max(0, end - self.window), end=end, samples=samples, final=final)

    def push(self, block: np.ndarray) -> Iterator[Window]:
        """Feed a 1-D float32 block; yields every window that ends inside it."""
        block = np.asarray(block, dtype=np.float32).reshape(-1)
        pos = 0
        while pos < len(block):
            next_end = (self._total // self.hop + 1) * self.hop
            take = min(next_end - self._total, len(block) - pos)
            if take > 0:
                self._append(block[pos : pos + take])
                pos += take
            if self._total == next_end:
                yield self._emit()

    def flush(self) -> Iterator[Window]:
        """At the end of a finite stream: the last samples after the last window, if any."""
        if self._total > self._last_end:
            yield self._emit(final=True)


def windows_of(signal: np.ndarray, window: int, hop: int) -> list[Window]:
    """All windows of a whole clip, exactly as a stream of it would produce them."""
    w = Windower(window, hop)
    out = list(w.push(signal))
    out.extend(w.flush())
    return out
