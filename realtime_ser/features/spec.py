"""The feature spec: every parameter, the names and order of the feature vector, the per-frame
descriptor layout, and the spec hash.

The single source of the layout: the numpy reference (``reference.py``) reads it from here, and the
compiled kernel (``realtime_ser/_kernel.c``) reads it from ``ser_spec.h``, a header that ``setup.py``
generates from this module at build time (``c_header``). The kernel reports the hash it was built
with (``_kernel.spec_hash()``) and ``kernel.py`` refuses a build of another spec.

Standard library only: ``setup.py`` loads this file by path, before numpy or the package exist.

Changing anything in ``FEATURE_SPEC`` changes ``SPEC_HASH``; a model trained on another spec is
refused at load (``realtime_ser.model``). The shipped model card pins the hash.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

SAMPLE_RATE = 16_000  # Hz
HOP = 160  # samples: the 10 ms frame hop of every per-frame descriptor

# Spectral analysis (matches librosa.feature.melspectrogram(n_fft=512, hop_length=160,
# win_length=400, window="hann", center=False, power=2.0, n_mels=40, fmin=20, fmax=8000)).
N_FFT = 512  # samples
WIN_LENGTH = 400  # samples: the Hann window, centred in the FFT frame
N_MELS = 40
FMIN = 20.0  # Hz
FMAX = 8000.0  # Hz
N_MFCC = 20
AMIN = 1e-10  # floor of the mel energies before the log
DELTA_WIDTH = 2  # regression deltas over +-2 frames

# Pitch analysis.
PITCH_FRAME = 640  # samples, 40 ms: two periods of a 50 Hz voice
PITCH_NFFT = 1024  # >= frame + max lag, so the FFT autocorrelation does not wrap
F0_MIN = 60.0  # Hz
F0_MAX = 600.0  # Hz
VOICING_THRESHOLD = 0.45  # normalised autocorrelation peak for a voiced frame
OCTAVE_TOLERANCE = 0.9  # pick the shortest lag whose peak reaches this share of the best
F0_REF_HZ = 27.5  # semitone reference (A0)

# Frame activity.
ACTIVE_RANGE_DB = 40.0  # frames quieter than loudest-minus-this are inactive
ACTIVE_FLOOR_DBFS = -65.0  # and so is anything below this absolute level
ENERGY_FLOOR_DBFS = -200.0  # energy of a digitally silent frame

PERCENTILES = (10.0, 50.0, 90.0)

# Frame-wise spectral descriptors, in the order of the feature vector.
SPECTRAL_LLDS = (
    "energy_rel_db",
    "centroid_khz",
    "spread_khz",
    "rolloff85_khz",
    "flatness_db",
    "entropy",
    "flux_db",
    "slope_db_per_band",
    "alpha_ratio_db",
    "hammarberg_db",
    "zcr",
)
FRAME_FUNCTIONALS = ("mean", "std", "p10", "p50", "p90", "dabs")
PITCH_FEATURES = (
    "f0_st_mean",
    "f0_st_std",
    "f0_st_p10",
    "f0_st_p50",
    "f0_st_p90",
    "f0_st_range",
    "f0_st_slope_per_s",
    "f0_st_dabs",
)
VOICE_FEATURES = (
    "voiced_fraction",
    "voicing_strength_mean",
    "hnr_db_mean",
    "hnr_db_std",
    "voiced_segment_rate_hz",
    "voiced_segment_mean_s",
)
# The spectral descriptors that are not a function of one frame's spectrum (not shape columns).
ENERGY_LLD, FLUX_LLD, ZCR_LLD = "energy_rel_db", "flux_db", "zcr"

# Per-frame shape descriptors (columns of ``FrameAnalysis.shape``): functions of one frame's power
# spectrum and log-mel only, so they are cached per frame by ``FrameCache``.
SHAPE_COLUMNS = ("centroid_khz", "spread_khz", "rolloff85_khz", "flatness_db", "entropy", "slope_db_per_band",
                 "alpha_ratio_db", "hammarberg_db")

# Columns of the per-frame descriptor matrix (``FrameAnalysis.lld``, the kernel's input and output):
# MFCC of the absolute log-mel, the shape columns, energy, zero-crossing rate, voicing, F0.
L_MFCC = slice(0, N_MFCC)
L_SHAPE = slice(N_MFCC, N_MFCC + len(SHAPE_COLUMNS))
L_ENERGY, L_ZCR, L_VOICING, L_F0 = range(L_SHAPE.stop, L_SHAPE.stop + 4)
N_LLD = L_F0 + 1


def _names() -> tuple[str, ...]:
    names: list[str] = []
    names += [f"mfcc{i}_{f}" for i in range(N_MFCC) for f in FRAME_FUNCTIONALS]
    names += [f"dmfcc{i}_std" for i in range(N_MFCC)]
    names += [f"logmel{i}_{f}" for i in range(N_MELS) for f in ("mean", "std")]
    for lld in SPECTRAL_LLDS:
        # The relative energy's mean is 0 by construction: leave it out.
        names += [f"{lld}_{f}" for f in FRAME_FUNCTIONALS if not (lld == ENERGY_LLD and f == "mean")]
    names += list(PITCH_FEATURES) + list(VOICE_FEATURES)
    return tuple(names)


FEATURE_NAMES: tuple[str, ...] = _names()
N_FEATURES = len(FEATURE_NAMES)

FEATURE_SPEC: dict[str, Any] = {
    "name": "ser-functionals",
    "version": 1,
    "sample_rate": SAMPLE_RATE,
    "hop": HOP,
    "n_fft": N_FFT,
    "win_length": WIN_LENGTH,
    "n_mels": N_MELS,
    "fmin": FMIN,
    "fmax": FMAX,
    "n_mfcc": N_MFCC,
    "amin": AMIN,
    "delta_width": DELTA_WIDTH,
    "pitch_frame": PITCH_FRAME,
    "pitch_nfft": PITCH_NFFT,
    "f0_min": F0_MIN,
    "f0_max": F0_MAX,
    "voicing_threshold": VOICING_THRESHOLD,
    "octave_tolerance": OCTAVE_TOLERANCE,
    "f0_ref_hz": F0_REF_HZ,
    "active_range_db": ACTIVE_RANGE_DB,
    "active_floor_dbfs": ACTIVE_FLOOR_DBFS,
    "percentiles": list(PERCENTILES),
    "names": list(FEATURE_NAMES),
}
SPEC_HASH = hashlib.sha256(json.dumps(FEATURE_SPEC, sort_keys=True).encode()).hexdigest()[:16]


def c_header() -> str:
    """The layout as C preprocessor constants (``ser_spec.h``, generated by ``setup.py`` at build time).

    ``SER_SPECTRAL_SHAPE`` gives, for each of ``SPECTRAL_LLDS`` in order, its shape column or -1 (the
    relative energy, the flux and the zero-crossing rate, whose positions are given by name).
    """
    shape_of = [SHAPE_COLUMNS.index(n) if n in SHAPE_COLUMNS else -1 for n in SPECTRAL_LLDS]
    lines = [
        "/* Generated by setup.py from realtime_ser/features/spec.py: do not edit. */",
        "#ifndef SER_SPEC_H",
        "#define SER_SPEC_H",
        f'#define SER_SPEC_HASH "{SPEC_HASH}"',
        f"#define SER_N_FEATURES {N_FEATURES}",
        f"#define SER_N_MFCC {N_MFCC}",
        f"#define SER_N_MELS {N_MELS}",
        f"#define SER_N_LLD {N_LLD}",
        f"#define SER_LLD_MFCC {L_MFCC.start}",
        f"#define SER_LLD_SHAPE {L_SHAPE.start}",
        f"#define SER_LLD_ENERGY {L_ENERGY}",
        f"#define SER_LLD_ZCR {L_ZCR}",
        f"#define SER_LLD_VOICING {L_VOICING}",
        f"#define SER_LLD_F0 {L_F0}",
        f"#define SER_N_SHAPE {len(SHAPE_COLUMNS)}",
        *(f"#define SER_SHAPE_{name.split('_')[0].upper()} {i}" for i, name in enumerate(SHAPE_COLUMNS)),
        f"#define SER_N_SPECTRAL {len(SPECTRAL_LLDS)}",
        f"#define SER_SPECTRAL_ENERGY {SPECTRAL_LLDS.index(ENERGY_LLD)}",
        f"#define SER_SPECTRAL_FLUX {SPECTRAL_LLDS.index(FLUX_LLD)}",
        f"#define SER_SPECTRAL_ZCR {SPECTRAL_LLDS.index(ZCR_LLD)}",
        f"#define SER_SPECTRAL_SHAPE {{{', '.join(map(str, shape_of))}}}",
        f"#define SER_N_FRAME_FUNCTIONALS {len(FRAME_FUNCTIONALS)}",
        f"#define SER_N_PERCENTILES {len(PERCENTILES)}",
        f"#define SER_N_PITCH {len(PITCH_FEATURES)}",
        f"#define SER_N_VOICE {len(VOICE_FEATURES)}",
        "#endif",
    ]
    return "\n".join(lines) + "\n"
