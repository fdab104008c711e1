"""The numpy reference implementation of the features (and the fallback where the kernel is not built).

Input: one analysis window of 16 kHz mono float32 audio (normally 2.0 s).
Output: a fixed-length float32 vector (``spec.FEATURE_NAMES`` names every element).

The compiled kernel (``kernel.py``, ``realtime_ser/_kernel.c``) re-implements these loops;
``tests/test_kernel.py`` bounds their differences. No librosa at run time (no numba JIT start-up),
no threads, no state.

The MFCC stage reproduces ``librosa.feature.mfcc`` (slaney mel filterbank, power
spectrum, ``10*log10`` with ``amin=1e-10`` and no ``top_db`` clipping, DCT-II ortho);
``tests/test_features.py`` holds the parity test against librosa.

Design, in the spirit of eGeMAPS / ComParE functionals but at ~1 ms a window:

* Frame-level descriptors (LLDs), 10 ms hop:
  - 40 log-mel bands and 20 MFCC (25 ms Hann window), plus MFCC deltas;
  - spectral shape: centroid, spread, 85 % roll-off, flatness, entropy, log-mel flux,
    log-mel slope, alpha ratio (50-1000 Hz vs 1-5 kHz), Hammarberg index
    (peak 0-2 kHz vs 2-5 kHz), zero-crossing rate, relative frame energy;
  - prosody and voice quality from a normalised autocorrelation (40 ms Hann window,
    window-autocorrelation corrected as in Boersma 1993): F0 in semitones, voicing
    strength, harmonics-to-noise ratio.
* Gain invariance: the window's level (mean energy of its active frames) is subtracted
  from log-mel, MFCC and energy, so a quieter microphone gives the same vector. The
  level itself is reported by the runtime, never fed to the model.
* Silence robustness: spectral functionals are taken over *active* frames (within
  ``ACTIVE_RANGE_DB`` of the window's loudest frame and above ``ACTIVE_FLOOR_DBFS``),
  prosodic ones over *voiced* frames, so leading silence or the zero padding at the
  start of a stream does not dilute them.
* Functionals: mean, standard deviation, 10th/50th/90th percentile and mean absolute
  frame-to-frame change; pitch also gets range and slope; rhythm gets the rate and mean
  length of voiced segments.

The parameters and the layout are in ``spec.py``; the tables derived from them (filterbank, DCT,
windows, bands) are here, and ``kernel.py`` hands the same tables to the compiled loops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .spec import (
    ACTIVE_FLOOR_DBFS,
    ACTIVE_RANGE_DB,
    AMIN,
    DELTA_WIDTH,
    ENERGY_FLOOR_DBFS,
    F0_MAX,
    F0_MIN,
    F0_REF_HZ,
    FLUX_LLD,
    FMAX,
    FMIN,
    HOP,
    N_FFT,
    N_MELS,
    N_MFCC,
    OCTAVE_TOLERANCE,
    PERCENTILES,
    PITCH_FEATURES,
    PITCH_FRAME,
    PITCH_NFFT,
    SAMPLE_RATE,
    SHAPE_COLUMNS,
    SPECTRAL_LLDS,
    VOICE_FEATURES,
    VOICING_THRESHOLD,
    WIN_LENGTH,
)
from .spec import L_ENERGY as _L_ENERGY
from .spec import L_F0 as _L_F0
from .spec import L_MFCC as _L_MFCC
from .spec import L_SHAPE as _L_SHAPE
from .spec import L_VOICING as _L_VOICING
from .spec import L_ZCR as _L_ZCR
from .spec import N_LLD as _N_LLD

_SHAPE_COLUMNS = SHAPE_COLUMNS
_SHAPE = {name: i for i, name in enumerate(SHAPE_COLUMNS)}

# ---------------------------------------------------------------- constant tables


# Slaney mel scale (librosa's default, htk=False): linear below 1 kHz, logarithmic above.
_MEL_F_SP = 200.0 / 3
_MEL_MIN_LOG_HZ = 1000.0
_MEL_MIN_LOG_MEL = _MEL_MIN_LOG_HZ / _MEL_F_SP
_MEL_LOGSTEP = np.log(6.4) / 27.0


def _hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    f = np.asarray(f, dtype=np.float64)
    return np.where(f >= _MEL_MIN_LOG_HZ,
                    _MEL_MIN_LOG_MEL + np.log(np.maximum(f, 1e-12) / _MEL_MIN_LOG_HZ) / _MEL_LOGSTEP, f / _MEL_F_SP)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    return np.where(m >= _MEL_MIN_LOG_MEL, _MEL_MIN_LOG_HZ * np.exp(_MEL_LOGSTEP * (m - _MEL_MIN_LOG_MEL)),
                    _MEL_F_SP * m)


def mel_filterbank(sr: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS,
                   fmin: float = FMIN, fmax: float = FMAX) -> np.ndarray:
    """Slaney-normalised triangular mel filterbank, ``(n_mels, 1 + n_fft // 2)``; equals
    ``librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)``."""
    fftfreqs = np.linspace(0.0, sr / 2.0, 1 + n_fft // 2)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fftfreqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, None]
    return weights


def _dct_matrix(n_in: int, n_out: int) -> np.ndarray:
    """DCT-II with orthonormal scaling (``scipy.fft.dct(type=2, norm='ortho')``), ``(n_in, n_out)``."""
    n = np.arange(n_in)
    k = np.arange(n_out)
    m = np.cos(np.pi / n_in * (n[:, None] + 0.5) * k[None, :]) * np.sqrt(2.0 / n_in)
    m[:, 0] /= np.sqrt(2.0)
    return m


def _periodic_hann(n: int) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)


def _padded_window() -> np.ndarray:
    w = np.zeros(N_FFT)
    left = (N_FFT - WIN_LENGTH) // 2
    w[left : left + WIN_LENGTH] = _periodic_hann(WIN_LENGTH)
    return w


_WINDOW = _padded_window()
_MEL_FB = mel_filterbank()
_DCT = _dct_matrix(N_MELS, N_MFCC)
_FREQS_KHZ = np.linspace(0.0, SAMPLE_RATE / 2.0, 1 + N_FFT // 2) / 1000.0


def _band(mask: np.ndarray) -> slice:
    """The contiguous range of FFT bins of a band mask, as a slice (no copy when indexing)."""
    bins = np.flatnonzero(mask)
    return slice(int(bins[0]), int(bins[-1]) + 1)


_BAND_50_1000 = _band((_FREQS_KHZ >= 0.05) & (_FREQS_KHZ < 1.0))
_BAND_1_5K = _band((_FREQS_KHZ >= 1.0) & (_FREQS_KHZ < 5.0))
_BAND_0_2K = _band(_FREQS_KHZ < 2.0)
_BAND_2_5K = _band((_FREQS_KHZ >= 2.0) & (_FREQS_KHZ < 5.0))
_MEL_IDX = np.arange(N_MELS, dtype=np.float64)
_MEL_SLOPE_W = (_MEL_IDX - _MEL_IDX.mean()) / np.sum((_MEL_IDX - _MEL_IDX.mean()) ** 2)
_PITCH_WIN = np.hanning(PITCH_FRAME + 2)[1:-1]  # symmetric, no zero end points
_LAG_MIN = int(np.floor(SAMPLE_RATE / F0_MAX))
_LAG_MAX = int(np.ceil(SAMPLE_RATE / F0_MIN))


def _window_acf() -> np.ndarray:
    spec = np.fft.rfft(_PITCH_WIN, n=PITCH_NFFT)
    acf = np.fft.irfft(spec.real**2 + spec.imag**2, n=PITCH_NFFT)[: _LAG_MAX + 2]
    return acf / acf[0]


_WIN_ACF = _window_acf()
_DELTA_W = np.arange(-DELTA_WIDTH, DELTA_WIDTH + 1, dtype=np.float64)
_DELTA_W /= np.sum(_DELTA_W**2)


_DCT_COLSUM = _DCT.sum(axis=0)  # MFCC(logmel - L) = MFCC(logmel) - L * this (~0 except c0)
_FREQS_KHZ_SQ = _FREQS_KHZ**2
_QUANTILES = np.true_divide(PERCENTILES, 100)
_LN_10 = float(np.log(10.0))
_LN_N_BINS = float(np.log(1 + N_FFT // 2))
_SPEC_CORE = slice((N_FFT - WIN_LENGTH) // 2, (N_FFT + WIN_LENGTH) // 2)
_POWER_EPS = 1e-20  # added to the power spectrum before ratios and logs
_FRAME_SPAN = max(N_FFT, PITCH_FRAME)  # samples of one frame's analyses (spectrum and pitch)

# ---------------------------------------------------------------- frame analysis


@dataclass(frozen=True)
class FrameAnalysis:
    """Frame-level descriptors of one window (10 ms hop). Shared by ``vad`` and ``functionals``."""

    energy_db: np.ndarray  # (T,) frame energy, dBFS (a full-scale sine is -3)
    active: np.ndarray  # (T,) bool
    voiced: np.ndarray  # (T,) bool
    voicing: np.ndarray  # (T,) normalised autocorrelation peak, about [0, 1]
    f0_hz: np.ndarray  # (T,) F0 estimate (meaningful where voiced)
    logmel: np.ndarray  # (T, N_MELS) dB, absolute (not level-corrected)
    power: np.ndarray | None  # (T, 1 + N_FFT // 2) power spectrum (None from the kernel: not needed)
    zcr: np.ndarray  # (T,)
    level_db: float  # mean energy of active frames (dBFS), or the floor when none
    # Derived per-frame descriptors, filled by ``analyze`` / ``FrameCache`` (computed from
    # ``power`` and ``logmel`` by ``functionals`` when left out):
    mfcc: np.ndarray | None = None  # (T, N_MFCC) MFCC of the absolute log-mel
    shape: np.ndarray | None = None  # (T, len(_SHAPE_COLUMNS)) spectral-shape LLDs
    lld: np.ndarray | None = None  # (T, _N_LLD) every per-frame descriptor (the kernel's input)

    @property
    def n_frames(self) -> int:
        return len(self.energy_db)


def _mean(x: np.ndarray, axis: int | None = None) -> np.ndarray:
    """``np.mean`` of a float or bool array, the same arithmetic without its Python-level overhead."""
    n = x.size if axis is None else x.shape[axis]
    return np.add.reduce(x, axis=axis, dtype=np.float64) / n


def _front_padded(x: np.ndarray, length: int) -> np.ndarray:
    """``x`` with zeros in front up to ``length`` samples (a clip shorter than one frame)."""
    if len(x) < length:
        return np.concatenate([np.zeros(length - len(x), dtype=x.dtype), x])
    return x


def _frames(x: np.ndarray, length: int) -> np.ndarray:
    """Read-only ``(T, length)`` view of the frames starting every ``HOP`` samples (front zero padding
    for a clip shorter than one frame)."""
    x = np.ascontiguousarray(_front_padded(x, length))
    n = (len(x) - length) // HOP + 1
    return np.lib.stride_tricks.as_strided(x, shape=(n, length), strides=(HOP * x.strides[0], x.strides[0]),
                                           writeable=False)


def power_spectrogram(x: np.ndarray) -> np.ndarray:
    """``(T, 1 + N_FFT // 2)`` power spectrum of 512-sample frames with a centred 400-sample Hann window."""
    fr = _frames(np.asarray(x, dtype=np.float64), N_FFT)
    spec = np.fft.rfft(fr * _WINDOW, axis=1)
    return spec.real**2 + spec.imag**2


def log_mel(power: np.ndarray) -> np.ndarray:
    """``(T, N_MELS)`` log-mel energies in dB (``10*log10(max(mel, AMIN))``)."""
    return 10.0 * np.log10(np.maximum(power @ _MEL_FB.T, AMIN))


def mfcc_from_log_mel(logmel: np.ndarray) -> np.ndarray:
    """``(T, N_MFCC)`` MFCC (DCT-II ortho of the log-mel bands)."""
    return logmel @ _DCT


def _pitch(x: np.ndarray, n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame (voicing strength, F0 in Hz) from a window-corrected normalised autocorrelation."""
    fr = _frames(_pitch_input(x, n_frames), PITCH_FRAME)[:n_frames]
    padded = np.empty((len(fr), PITCH_NFFT))  # frames with the FFT's zero padding, written in place
    padded[:, PITCH_FRAME:] = 0.0
    frames = padded[:, :PITCH_FRAME]
    np.subtract(fr, _mean(fr, axis=1)[:, None], out=frames)
    frames *= _PITCH_WIN
    spec = np.fft.rfft(padded, axis=1)
    # The power spectrum, computed in place as complex numbers: irfft of a complex array is several
    # times faster than of a real one here, with the same values (numpy converts a real input to
    # complex anyway); the in-place squares avoid large temporaries.
    spec.real = _power(spec)
    spec.imag = 0.0
    acf = np.fft.irfft(spec, n=PITCH_NFFT, axis=1)[:, : _LAG_MAX + 2]
    acf = acf / np.maximum(acf[:, :1], 1e-20) / _WIN_ACF
    seg = acf[:, _LAG_MIN - 1 : _LAG_MAX + 2]
    mid = seg[:, 1:-1]
    is_peak = (mid > seg[:, :-2]) & (mid >= seg[:, 2:])
    best = np.where(is_peak, mid, -np.inf).max(axis=1)
    ok = is_peak & (mid >= OCTAVE_TOLERANCE * best[:, None])
    has_peak = ok.any(axis=1)
    idx = np.argmax(ok, axis=1)
    rows = np.arange(len(idx))
    a, b, c = seg[rows, idx], seg[rows, idx + 1], seg[rows, idx + 2]
    denom = a - 2.0 * b + c
    shift = np.where(np.abs(denom) > 1e-12, 0.5 * (a - c) / np.where(denom == 0, 1.0, denom), 0.0)
    lag = _LAG_MIN + idx + np.clip(shift, -0.5, 0.5)
    strength = np.where(has_peak, np.clip(b, 0.0, 1.0), 0.0)
    return strength, SAMPLE_RATE / lag


def _shape_llds(power: np.ndarray, logmel: np.ndarray) -> np.ndarray:
    """``(T, len(_SHAPE_COLUMNS))``: spectral shape of each frame (one row per frame, no window state).

    Flux and the relative energy need the neighbouring frame or the window's level and
    are computed per window in ``_spectral_llds``. The log-mel slope is taken on the
    absolute log-mel: it is invariant to the window's level shift.
    """
    p = power + _POWER_EPS
    total = p.sum(axis=1)
    pn = p / total[:, None]
    centroid = pn @ _FREQS_KHZ
    spread = np.sqrt(np.maximum(pn @ _FREQS_KHZ_SQ - centroid**2, 0.0))
    cum = np.cumsum(pn, axis=1)
    rolloff = _FREQS_KHZ[np.minimum(np.argmax(cum >= 0.85, axis=1), len(_FREQS_KHZ) - 1)]
    ln_p = np.log(p)  # one (natural) log for flatness and entropy: ln(pn) = ln(p) - ln(total)
    flatness = 10.0 * (_mean(ln_p, axis=1) / _LN_10 - np.log10(_mean(p, axis=1)))
    entropy = (np.log(total) * pn.sum(axis=1) - np.einsum("ij,ij->i", pn, ln_p)) / _LN_N_BINS
    slope = (logmel - _mean(logmel, axis=1)[:, None]) @ _MEL_SLOPE_W
    alpha = 10.0 * np.log10(p[:, _BAND_50_1000].sum(axis=1) / p[:, _BAND_1_5K].sum(axis=1))
    hammarberg = 10.0 * np.log10(p[:, _BAND_0_2K].max(axis=1) / p[:, _BAND_2_5K].max(axis=1))
    return np.column_stack([centroid, spread, rolloff, flatness, entropy, slope, alpha, hammarberg])


@dataclass(frozen=True)
class _Rows:
    """Descriptors of consecutive frames that each depend on one frame's samples only (rows = frames)."""

    power: np.ndarray | None  # (T, 1 + N_FFT // 2), or None (the kernel does not keep it)
    logmel: np.ndarray  # (T, N_MELS)
    lld: np.ndarray  # (T, _N_LLD): MFCC of the absolute log-mel, shape LLDs, energy, zcr, voicing, F0

    def __len__(self) -> int:
        return len(self.lld)

    def tail(self, start: int) -> _Rows:
        return _Rows(None if self.power is None else self.power[start:], self.logmel[start:], self.lld[start:])

    def extend(self, new: _Rows) -> _Rows:
        power = None
        if self.power is not None and new.power is not None:
            power = np.concatenate([self.power, new.power])
        return _Rows(power, np.concatenate([self.logmel, new.logmel]), np.concatenate([self.lld, new.lld]))


def _power(spec: np.ndarray) -> np.ndarray:
    """``|spec|**2`` as ``re**2 + im**2``, squaring in place (``spec`` is overwritten)."""
    parts = spec.view(np.float64)
    np.multiply(parts, parts, out=parts)
    return parts[:, ::2] + parts[:, 1::2]


def _pitch_input(x: np.ndarray, n_frames: int) -> np.ndarray:
    """The samples the pitch frames of ``n_frames`` spectral frames read: a clip shorter than one pitch
    frame is padded in front (one frame), else the end is padded where the last spectral frames' pitch
    frames run past it."""
    need = (n_frames - 1) * HOP + PITCH_FRAME
    if PITCH_FRAME <= len(x) < need:
        return np.concatenate([x, np.zeros(need - len(x), dtype=x.dtype)])
    return _front_padded(x, PITCH_FRAME)


def _rows_numpy(x: np.ndarray) -> _Rows:
    """The reference implementation of ``_rows``."""
    fr = _frames(x, N_FFT)
    power = _power(np.fft.rfft(fr * _WINDOW, axis=1))
    logmel = log_mel(power)
    lld = np.empty((len(power), _N_LLD))
    lld[:, _L_MFCC] = mfcc_from_log_mel(logmel)
    lld[:, _L_SHAPE] = _shape_llds(power, logmel)
    core = fr[:, _SPEC_CORE]
    ms = _mean(core * core, axis=1)
    energy_db = np.where(ms > 0, 10.0 * np.log10(np.maximum(ms, 1e-30)), ENERGY_FLOOR_DBFS)
    lld[:, _L_ENERGY] = np.maximum(energy_db, ENERGY_FLOOR_DBFS)
    signs = np.signbit(core)
    lld[:, _L_ZCR] = _mean(signs[:, 1:] != signs[:, :-1], axis=1)
    lld[:, _L_VOICING], lld[:, _L_F0] = _pitch(x, len(power))
    return _Rows(power=power, logmel=logmel, lld=lld)


def _sanitize(window: np.ndarray) -> np.ndarray:
    """float64 samples with NaN and infinities as 0 (a finite sum means there are none: one cheap pass)."""
    x = np.asarray(window, dtype=np.float64).reshape(-1)
    if np.isfinite(np.add.reduce(x)):
        return x
    return np.where(np.isfinite(x), x, 0.0)


def _assemble(r: _Rows) -> FrameAnalysis:
    """The window-level parts (activity, level, voiced frames) from the window's frame rows."""
    lld = r.lld
    energy_db = lld[:, _L_ENERGY]
    voicing = lld[:, _L_VOICING]
    active = (energy_db >= energy_db.max() - ACTIVE_RANGE_DB) & (energy_db >= ACTIVE_FLOOR_DBFS)
    voiced = active & (voicing >= VOICING_THRESHOLD)
    level = float(_mean(energy_db[active])) if active.any() else ENERGY_FLOOR_DBFS
    return FrameAnalysis(energy_db=energy_db, active=active, voiced=voiced, voicing=voicing, f0_hz=lld[:, _L_F0],
                         logmel=r.logmel, power=r.power, zcr=lld[:, _L_ZCR], level_db=level, mfcc=lld[:, _L_MFCC],
                         shape=lld[:, _L_SHAPE], lld=lld)


# ---------------------------------------------------------------- functionals


def _mean_std(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column means and standard deviations, with ``np.mean`` / ``np.std``'s arithmetic."""
    n = x.shape[0]
    mean = np.add.reduce(x, axis=0) / n
    d = x - mean
    np.multiply(d, d, out=d)
    return mean, np.sqrt(np.add.reduce(d, axis=0) / n)


def _percentiles(sorted_rows: np.ndarray) -> np.ndarray:
    """``(len(PERCENTILES), D)`` of ``(D, n)`` rows sorted ascending; ``np.percentile``'s linear
    interpolation, with its arithmetic."""
    n = sorted_rows.shape[1]
    virtual = (n - 1) * _QUANTILES
    lo = np.floor(virtual).astype(np.intp)
    hi = np.minimum(lo + 1, n - 1)
    gamma = virtual - lo
    a = sorted_rows[:, lo]
    b = sorted_rows[:, hi]
    diff = b - a
    return np.where(gamma >= 0.5, b - diff * (1 - gamma), a + diff * gamma).T


def _order_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(pct, dabs)`` of ``(T, D)``: the PERCENTILES of each column and its mean |frame-to-frame change|."""
    if np.isnan(x).any():
        pct = np.percentile(x, PERCENTILES, axis=0)
    else:
        pct = _percentiles(np.sort(x.T, axis=1))
    if len(x) > 1:
        dabs = np.add.reduce(np.abs(x[1:] - x[:-1]), axis=0) / (len(x) - 1)
    else:
        dabs = np.zeros(x.shape[1])
    return pct, dabs


def _deltas(m: np.ndarray) -> np.ndarray:
    """Regression deltas over +-DELTA_WIDTH frames, edges padded by repetition."""
    pad = np.concatenate([m[:1]] * DELTA_WIDTH + [m] + [m[-1:]] * DELTA_WIDTH)
    n = len(m)
    out = np.zeros_like(m)
    for k, w in enumerate(_DELTA_W):
        if w:
            out += w * pad[k : k + n]
    return out


def _percentiles_1d(x: np.ndarray) -> tuple[float, float, float]:
    """PERCENTILES of a 1-D array in Python floats (the arithmetic of ``_percentiles``)."""
    s = np.sort(x).tolist()
    out = []
    for q in _QUANTILES.tolist():
        virtual = (len(s) - 1) * q
        lo = math.floor(virtual)
        hi = min(lo + 1, len(s) - 1)
        gamma = virtual - lo
        diff = s[hi] - s[lo]
        out.append(s[hi] - diff * (1 - gamma) if gamma >= 0.5 else s[lo] + diff * gamma)
    return out[0], out[1], out[2]


def _pitch_features(a: FrameAnalysis) -> np.ndarray:
    v = a.voiced
    vi = np.flatnonzero(v)
    if len(vi) < 2:
        return np.zeros(len(PITCH_FEATURES))
    st = 12.0 * np.log2(a.f0_hz[vi] / F0_REF_HZ)
    t = vi * (HOP / SAMPLE_RATE)
    if np.isnan(st).any():
        p10, p50, p90 = np.percentile(st, PERCENTILES)
    else:
        p10, p50, p90 = _percentiles_1d(st)
    st_mean, st_std = _mean_std(st)
    tc = t - _mean(t)
    slope = float(np.dot(tc, st - st_mean) / max(np.dot(tc, tc), 1e-12))
    both = np.flatnonzero(v[1:] & v[:-1])
    if len(both):
        st_all = 12.0 * np.log2(np.maximum(a.f0_hz, 1.0) / F0_REF_HZ)
        dabs = float(_mean(np.abs(st_all[both + 1] - st_all[both])))
    else:
        dabs = 0.0
    return np.array([st_mean, st_std, p10, p50, p90, p90 - p10, slope, dabs])


def _voice_features(a: FrameAnalysis) -> np.ndarray:
    n_active = int(np.count_nonzero(a.active))
    n_voiced = int(np.count_nonzero(a.voiced))
    if n_active == 0:
        return np.zeros(len(VOICE_FEATURES))
    strength = float(_mean(a.voicing[a.active]))
    if n_voiced:
        r = np.clip(a.voicing[a.voiced], 1e-3, 0.999)
        hnr_mean, hnr_std = map(float, _mean_std(10.0 * np.log10(r / (1.0 - r))))
    else:
        hnr_mean = hnr_std = 0.0
    onsets = int(np.count_nonzero(a.voiced[1:] & ~a.voiced[:-1]) + int(a.voiced[0]))
    active_s = n_active * HOP / SAMPLE_RATE
    seg_rate = onsets / active_s
    seg_mean = (n_voiced * HOP / SAMPLE_RATE) / onsets if onsets else 0.0
    return np.array([n_voiced / n_active, strength, hnr_mean, hnr_std, seg_rate, seg_mean])


# Column blocks of the per-window matrix in ``functionals``: frame-wise LLDs (in output order:
# MFCC, then SPECTRAL_LLDS), then MFCC deltas and log-mel (mean and std only).
_N_FRAMEWISE = N_MFCC + len(SPECTRAL_LLDS)
_C_LLD = N_MFCC  # first spectral LLD column
_C_FLUX = _C_LLD + SPECTRAL_LLDS.index(FLUX_LLD)
_C_SLOPE = _C_LLD + SPECTRAL_LLDS.index("slope_db_per_band")
_C_DELTA = slice(_N_FRAMEWISE, _N_FRAMEWISE + N_MFCC)
_C_LOGMEL = slice(_C_DELTA.stop, _C_DELTA.stop + N_MELS)


def _functionals_numpy(a: FrameAnalysis) -> np.ndarray:
    """The reference implementation of ``functionals``."""
    n_frames = a.n_frames
    idx = np.flatnonzero(a.active)
    if len(idx) < 2:
        idx = np.arange(n_frames)
    level = a.level_db
    mfcc_abs = a.mfcc if a.mfcc is not None else mfcc_from_log_mel(a.logmel)
    if a.shape is not None:
        shape = a.shape
    elif a.power is not None:
        shape = _shape_llds(a.power, a.logmel)
    else:
        raise ValueError("functionals: an analysis without its shape descriptors needs its power spectrum")
    flux = np.zeros(n_frames)
    if n_frames > 1:  # the level shift cancels in frame-to-frame differences
        flux[1:] = np.add.reduce(np.abs(a.logmel[1:] - a.logmel[:-1]), axis=1) / N_MELS

    m = np.empty((len(idx), _C_LOGMEL.stop))
    # MFCC of the level-corrected log-mel: only c0 moves (the DCT's other columns sum to ~0).
    np.subtract(mfcc_abs[idx], level * _DCT_COLSUM, out=m[:, :N_MFCC])
    np.subtract(a.energy_db[idx], level, out=m[:, _C_LLD])
    m[:, _C_LLD + 1 : _C_FLUX] = shape[idx, : _C_FLUX - _C_LLD - 1]
    m[:, _C_FLUX] = flux[idx]
    m[:, _C_SLOPE : _N_FRAMEWISE - 1] = shape[idx, _C_FLUX - _C_LLD - 1 :]
    m[:, _N_FRAMEWISE - 1] = a.zcr[idx]
    m[:, _C_DELTA] = _deltas(mfcc_abs)[idx]  # deltas are invariant to the level shift
    m[:, _C_LOGMEL] = a.logmel[idx]

    mean, std = _mean_std(m)
    pct, dabs = _order_stats(m[:, :_N_FRAMEWISE])
    framewise = np.vstack([mean[:_N_FRAMEWISE], std[:_N_FRAMEWISE], pct, dabs])  # (6, _N_FRAMEWISE)
    logmel_mean = mean[_C_LOGMEL] - level
    parts = [
        framewise[:, :N_MFCC].T.reshape(-1),
        std[_C_DELTA],
        np.column_stack([logmel_mean, std[_C_LOGMEL]]).reshape(-1),
        framewise[1:, _C_LLD],  # relative energy: no mean
        framewise[:, _C_LLD + 1 : _N_FRAMEWISE].T.reshape(-1),
        _pitch_features(a),
        _voice_features(a),
    ]
    out = np.concatenate(parts).astype(np.float32)
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)

