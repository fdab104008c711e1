"""The binding of the compiled kernel (``realtime_ser/_kernel.c``): which build runs, and its calls.

``selected()`` chooses once, at the first feature call (never at import): the environment variable
``REALTIME_SER_FEATURES`` (``numpy`` forces the reference, ``kernel`` the portable build), else the
fastest build this CPU runs (``_kernel_avx2`` where the CPU has AVX2, else ``_kernel``), else None
(not built: no compiler at install time; the numpy reference runs). A build that its configuration
refuses (its C and C++ halves disagree, or it was built from another feature spec: a stale editable
build) is logged once as a warning and the reference runs instead.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import logging
import os
from types import ModuleType
from typing import Any

import numpy as np

from . import reference as ref
from .spec import (
    AMIN,
    ENERGY_FLOOR_DBFS,
    F0_REF_HZ,
    HOP,
    N_FEATURES,
    N_LLD,
    N_MELS,
    OCTAVE_TOLERANCE,
    PITCH_NFFT,
    SAMPLE_RATE,
    SPEC_HASH,
    WIN_LENGTH,
)

_PACKAGE = __name__.rsplit(".", 2)[0]  # realtime_ser: the compiled modules sit at its top level
ENV_CHOICE = "REALTIME_SER_FEATURES"
CHOICE_NUMPY = "numpy"
CHOICE_PORTABLE = "kernel"

# The bands as bin ranges (start, stop) x 4: 50-1000 Hz, 1-5 kHz, 0-2 kHz, 2-5 kHz.
_KERNEL_BANDS = tuple(v for band in (ref._BAND_50_1000, ref._BAND_1_5K, ref._BAND_0_2K, ref._BAND_2_5K)
                      for v in (band.start, band.stop))


def kernel_config() -> dict[str, Any]:
    """Every constant and table the compiled loops use, by name (``_kernel.c``'s ``configure``).

    The layout (columns of ``lld``, the order of the feature vector) is not in it: the kernel reads it
    from ``ser_spec.h``, generated from ``spec.py`` at build time, and checks ``spec_hash`` against it.
    """
    return {
        "spec_hash": SPEC_HASH,
        "hop": HOP,
        "sample_rate": float(SAMPLE_RATE),
        "spec_win": ref._WINDOW,
        "core_start": ref._SPEC_CORE.start,
        "core_len": WIN_LENGTH,
        "pitch_win": ref._PITCH_WIN,
        "pitch_nfft": PITCH_NFFT,
        "melfb": np.ascontiguousarray(ref._MEL_FB),
        "dct": np.ascontiguousarray(ref._DCT),
        "freqs": ref._FREQS_KHZ,
        "freqs_sq": ref._FREQS_KHZ_SQ,
        "slope_w": ref._MEL_SLOPE_W,
        "bands": _KERNEL_BANDS,
        "amin": AMIN,
        "power_eps": ref._POWER_EPS,
        "energy_floor": ENERGY_FLOOR_DBFS,
        "win_acf": ref._WIN_ACF,
        "lag_min": ref._LAG_MIN,
        "lag_max": ref._LAG_MAX,
        "octave_tol": OCTAVE_TOLERANCE,
        "dct_colsum": ref._DCT_COLSUM,
        "delta_w": ref._DELTA_W,
        "quantiles": ref._QUANTILES,
        "f0_ref": F0_REF_HZ,
    }


def configure(kernel: ModuleType) -> None:
    """Hand the constants and tables over to one build of the compiled loops.

    The first valid call configures the build; later valid calls change nothing (the loops read the
    tables without the GIL, so they are never replaced), invalid ones raise and change nothing either.

    Raises:
        ValueError: the build was made from another feature spec, or a table has the wrong size.
        RuntimeError: the build's C and C++ halves were compiled for different vector widths.
    """
    kernel.configure(kernel_config())


_configure = configure  # the name tests and tools used before the features package


@functools.cache
def selected() -> ModuleType | None:
    """The configured build of the kernel that runs, or None for the numpy reference (chosen once)."""
    choice = os.environ.get(ENV_CHOICE, "").strip().lower()
    if choice == CHOICE_NUMPY:
        return None
    try:
        kernel = importlib.import_module(f"{_PACKAGE}._kernel")
    except ImportError:  # not built (no C compiler at install time): the numpy reference runs instead
        return None
    if choice != CHOICE_PORTABLE and kernel.cpu_has_avx2():
        with contextlib.suppress(ImportError):  # not built (not x86-64, or the compiler refused -mavx2)
            kernel = importlib.import_module(f"{_PACKAGE}._kernel_avx2")
    try:
        configure(kernel)
    except (RuntimeError, ValueError, TypeError) as e:  # a stale or inconsistent build: run the reference
        logging.getLogger("realtime_ser").warning("feature kernel unusable (%s): using the numpy reference; "
                                                  "rebuild it with pip install -e .", e)
        return None
    return kernel


def implementation() -> str:
    """``"numpy"``, ``"kernel"`` (portable build) or ``"kernel_avx2"``: what computes the features."""
    kernel = selected()
    return "numpy" if kernel is None else kernel.__name__.rsplit(".", 1)[-1].lstrip("_")


def _require() -> ModuleType:
    kernel = selected()
    if kernel is None:
        raise RuntimeError("the compiled feature kernel is not in use (not built, or REALTIME_SER_FEATURES=numpy)")
    return kernel


def _rows_kernel(x: np.ndarray) -> ref._Rows:
    """``reference._rows_numpy`` by the compiled loops."""
    kernel = _require()
    x = np.ascontiguousarray(x, dtype=np.float64)
    xs = ref._front_padded(x, ref.N_FFT)
    n = (len(xs) - ref.N_FFT) // HOP + 1
    lld = np.empty((n, N_LLD))
    logmel = np.empty((n, N_MELS))
    kernel.rows(xs, ref._pitch_input(x, n), n, logmel, lld)
    return ref._Rows(power=None, logmel=logmel, lld=lld)


def _functionals_kernel(a: ref.FrameAnalysis) -> np.ndarray:
    """``reference._functionals_numpy`` by the compiled loops (``a.lld`` must be set)."""
    out = np.empty(N_FEATURES, dtype=np.float32)
    _require().functionals(a.lld, a.logmel, a.active, a.voiced, float(a.level_db), out)
    return out


def _same_samples(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two 1-D sample arrays of one dtype are identical (the kernel compares bytes: same bits)."""
    kernel = selected()
    if kernel is not None and a.flags.c_contiguous and b.flags.c_contiguous:
        return bool(kernel.same(a, b))
    return bool(np.array_equal(a, b))
