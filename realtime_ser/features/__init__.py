"""The one feature implementation, shared by training and the runtime.

Input: one analysis window of 16 kHz mono float32 audio (normally 2.0 s).
Output: a fixed-length float32 vector (``FEATURE_NAMES`` names every element).

The package:

* ``spec``: every parameter, the feature names and order, the per-frame layout, ``SPEC_HASH``
  (standard library only; the compiled kernel's header is generated from it);
* ``reference``: the numpy reference implementation and the tables derived from the spec;
* ``kernel``: the binding of the compiled loops (``realtime_ser/_kernel.c``), chosen by
  ``kernel.selected()`` at the first call, never at import;
* ``dispatch``: ``analyze``, ``functionals``, ``extract``: the kernel where it runs, else the reference;
* ``cache``: ``FrameCache``, the incremental analysis of one stream's overlapping windows.

Every name the flat ``features`` module had stays importable from here (``features.X``), the private
ones that tests and tools use included. ``IMPLEMENTATION`` (``"numpy"``, ``"kernel"`` or
``"kernel_avx2"``) and ``_kernel`` (the selected build, or None) are computed on first access.

Changing anything in ``spec.FEATURE_SPEC`` changes ``SPEC_HASH``; a model trained on another spec is
refused at load (``realtime_ser.model``).
"""

from __future__ import annotations

from typing import Any

from .cache import FrameCache
from .dispatch import _rows, analyze, extract, functionals
from .kernel import (
    _KERNEL_BANDS,
    _configure,
    _functionals_kernel,
    _rows_kernel,
    _same_samples,
    implementation,
    kernel_config,
)
from .reference import (
    _BAND_0_2K,
    _BAND_1_5K,
    _BAND_2_5K,
    _BAND_50_1000,
    _C_DELTA,
    _C_FLUX,
    _C_LLD,
    _C_LOGMEL,
    _C_SLOPE,
    _DCT,
    _DCT_COLSUM,
    _DELTA_W,
    _FRAME_SPAN,
    _FREQS_KHZ,
    _FREQS_KHZ_SQ,
    _L_ENERGY,
    _L_F0,
    _L_MFCC,
    _L_SHAPE,
    _L_VOICING,
    _L_ZCR,
    _LAG_MAX,
    _LAG_MIN,
    _MEL_FB,
    _MEL_SLOPE_W,
    _N_FRAMEWISE,
    _N_LLD,
    _PITCH_WIN,
    _POWER_EPS,
    _QUANTILES,
    _SHAPE,
    _SHAPE_COLUMNS,
    _SPEC_CORE,
    _WIN_ACF,
    _WINDOW,
    FrameAnalysis,
    _assemble,
    _deltas,
    _frames,
    _front_padded,
    _functionals_numpy,
    _mean,
    _mean_std,
    _order_stats,
    _percentiles,
    _pitch,
    _pitch_features,
    _pitch_input,
    _power,
    _Rows,
    _rows_numpy,
    _sanitize,
    _shape_llds,
    _voice_features,
    log_mel,
    mel_filterbank,
    mfcc_from_log_mel,
    power_spectrogram,
)
from .spec import (
    ACTIVE_FLOOR_DBFS,
    ACTIVE_RANGE_DB,
    AMIN,
    DELTA_WIDTH,
    ENERGY_FLOOR_DBFS,
    F0_MAX,
    F0_MIN,
    F0_REF_HZ,
    FEATURE_NAMES,
    FEATURE_SPEC,
    FMAX,
    FMIN,
    FRAME_FUNCTIONALS,
    HOP,
    N_FEATURES,
    N_FFT,
    N_MELS,
    N_MFCC,
    OCTAVE_TOLERANCE,
    PERCENTILES,
    PITCH_FEATURES,
    PITCH_FRAME,
    PITCH_NFFT,
    SAMPLE_RATE,
    SPEC_HASH,
    SPECTRAL_LLDS,
    VOICE_FEATURES,
    VOICING_THRESHOLD,
    WIN_LENGTH,
)

__all__ = [
    "ACTIVE_FLOOR_DBFS", "ACTIVE_RANGE_DB", "AMIN", "DELTA_WIDTH", "ENERGY_FLOOR_DBFS", "F0_MAX", "F0_MIN",
    "F0_REF_HZ", "FEATURE_NAMES", "FEATURE_SPEC", "FMAX", "FMIN", "FRAME_FUNCTIONALS", "HOP", "N_FEATURES",
    "N_FFT", "N_MELS", "N_MFCC", "OCTAVE_TOLERANCE", "PERCENTILES", "PITCH_FEATURES", "PITCH_FRAME",
    "PITCH_NFFT", "SAMPLE_RATE", "SPECTRAL_LLDS", "SPEC_HASH", "VOICE_FEATURES", "VOICING_THRESHOLD",
    "WIN_LENGTH", "FrameAnalysis", "FrameCache", "analyze", "extract", "functionals", "implementation",
    "kernel_config", "log_mel", "mel_filterbank", "mfcc_from_log_mel", "power_spectrogram",
]

_PRIVATE = (  # re-exported for the tests and tools that import them from the flat module's days
    _BAND_0_2K, _BAND_1_5K, _BAND_2_5K, _BAND_50_1000, _C_DELTA, _C_FLUX, _C_LLD, _C_LOGMEL, _C_SLOPE, _DCT,
    _DCT_COLSUM, _DELTA_W, _FRAME_SPAN, _FREQS_KHZ, _FREQS_KHZ_SQ, _KERNEL_BANDS, _L_ENERGY, _L_F0, _L_MFCC,
    _L_SHAPE, _L_VOICING, _L_ZCR, _LAG_MAX, _LAG_MIN, _MEL_FB, _MEL_SLOPE_W, _N_FRAMEWISE, _N_LLD, _PITCH_WIN,
    _POWER_EPS, _QUANTILES, _SHAPE, _SHAPE_COLUMNS, _SPEC_CORE, _WIN_ACF, _WINDOW, _Rows, _assemble, _configure,
    _deltas, _frames, _front_padded, _functionals_kernel, _functionals_numpy, _mean, _mean_std, _order_stats,
    _percentiles, _pitch, _pitch_features, _pitch_input, _power, _rows, _rows_kernel, _rows_numpy,
    _same_samples, _sanitize, _shape_llds, _voice_features,
)


def __getattr__(name: str) -> Any:
    """``IMPLEMENTATION`` and ``_kernel``: the implementation chosen at the first feature call."""
    if name == "IMPLEMENTATION":
        return implementation()
    if name == "_kernel":
        from .kernel import selected

        return selected()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
