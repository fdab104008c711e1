"""``FrameCache``: the features of one stream's overlapping windows, analysing only the new frames."""

from __future__ import annotations

import numpy as np

from .dispatch import _rows
from .kernel import _same_samples
from .reference import _FRAME_SPAN, HOP, FrameAnalysis, _assemble, _Rows, _sanitize


class FrameCache:
    """``analyze`` for the overlapping windows of one stream, analysing only the frames that are new.

    Every frame descriptor except the window-level parts (activity, level, voiced frames;
    in ``functionals`` the level-relative values, the first frame's flux and the delta
    edges) is a function of one frame's samples. Frames sit at ``start + j * HOP`` stream
    samples, so when a window starts a whole number of hops after the previous one and
    holds the same samples where they overlap, the frames they share are taken from the
    previous window and only the new ones are analysed: the result equals
    ``analyze(window)`` (``tests/test_features.py`` checks it). Any other window (another
    phase, such as the final partial window of a file; no overlap; other samples; a length
    that is not a whole number of hops) is analysed whole. Pure: no threads, no clocks.
    """

    def __init__(self) -> None:
        self._start: int | None = None  # stream sample of the cached window's first sample
        self._raw: np.ndarray | None = None  # that window's samples, as given
        self._rows: _Rows | None = None
        self.frames_analysed = 0
        self.frames_reused = 0

    def reset(self) -> None:
        self._start = self._raw = self._rows = None

    def analyze(self, window: np.ndarray, start: int) -> FrameAnalysis:
        """Like ``analyze(window)``, for a window whose first sample is stream sample ``start``.

        Args:
            window: 16 kHz mono samples (any float dtype; flattened); NaN and infinities count as 0.
            start: the window's first sample, in samples of the 16 kHz stream (negative when the window
                reaches back before the stream began, into zero padding).

        Returns:
            The window's ``FrameAnalysis``, equal to ``analyze(window)``.
        """
        raw = np.asarray(window).reshape(-1)
        rows = self._reuse(raw, int(start))
        if rows is None:
            rows = _rows(_sanitize(raw))
            self.frames_analysed += len(rows)
        if len(raw) % HOP == 0 and len(raw) >= _FRAME_SPAN:
            self._start, self._raw, self._rows = int(start), raw.copy(), rows
        else:
            self.reset()
        return _assemble(rows)

    def _reuse(self, raw: np.ndarray, start: int) -> _Rows | None:
        if self._rows is None or self._raw is None or self._start is None:
            return None
        if raw.shape != self._raw.shape or raw.dtype != self._raw.dtype:
            return None
        shift = start - self._start
        if shift <= 0 or shift % HOP:
            return None
        kept = self._rows.tail(shift // HOP)
        if len(kept) == 0 or not _same_samples(raw[: len(raw) - shift], self._raw[shift:]):
            return None
        new = _rows(_sanitize(raw[len(kept) * HOP :]))
        self.frames_analysed += len(new)
        self.frames_reused += len(kept)
        return kept.extend(new)


