"""The feature functions everyone calls: the compiled kernel where it runs, else the numpy reference.

Both give the same values within the tolerances of ``tests/test_kernel.py``; ``kernel.implementation()``
says which one runs.
"""

from __future__ import annotations

import numpy as np

from . import kernel
from .reference import FrameAnalysis, _assemble, _functionals_numpy, _Rows, _rows_numpy, _sanitize


def _rows(x: np.ndarray) -> _Rows:
    """Descriptors of the frames that start at ``x[j * HOP]`` (``x`` float64 and finite)."""
    return kernel._rows_kernel(x) if kernel.selected() is not None else _rows_numpy(x)


def analyze(window: np.ndarray) -> FrameAnalysis:
    """Frame-level descriptors of one window, one row per 10 ms frame (``HOP`` samples).

    Args:
        window: 16 kHz mono samples, float, full scale 1.0 (normally 2.0 s; shorter than one 40 ms pitch
            frame is zero-padded in front); NaN and infinite samples count as 0.
    """
    return _assemble(_rows(_sanitize(window)))


def functionals(a: FrameAnalysis) -> np.ndarray:
    """The fixed-length feature vector (``N_FEATURES`` float32, in ``FEATURE_NAMES`` order) of an
    analysed window; non-finite values are written as 0."""
    if a.lld is not None and kernel.selected() is not None:
        return kernel._functionals_kernel(a)
    return _functionals_numpy(a)


def extract(window: np.ndarray) -> np.ndarray:
    """Feature vector of one window of 16 kHz mono audio: ``functionals(analyze(window))``."""
    return functionals(analyze(window))
