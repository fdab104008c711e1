"""The one feature implementation, shared by training and the runtime.

Input: one analysis window of 16 kHz mono float32 audio (normally 2.0 s).
Output: a fixed-length float32 vector (``FEATURE_NAMES`` names every element).

Pure numpy: no librosa at run time (no numba JIT start-up), no threads, no state.
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

Changing anything here changes ``FEATURE_SPEC`` and so ``SPEC_HASH``; a model trained on
another spec is refused at load (``realtime_ser.model``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 16_000
HOP = 160  # 10 ms frame hop for every LLD

# Spectral analysis (matches librosa.feature.melspectrogram(n_fft=512, hop_length=160,
# win_length=400, window="hann", center=False, power=2.0, n_mels=40, fmin=20, fmax=8000)).
N_FFT = 512
WIN_LENGTH = 400
N_MELS = 40
FMIN = 20.0
FMAX = 8000.0
N_MFCC = 20
AMIN = 1e-10
DELTA_WIDTH = 2  # regression deltas over +-2 frames

# Pitch analysis.
PITCH_FRAME = 640  # 40 ms: two periods of a 50 Hz voice
PITCH_NFFT = 1024  # >= frame + max lag, so the FFT autocorrelation does not wrap
F0_MIN = 60.0
F0_MAX = 600.0
VOICING_THRESHOLD = 0.45  # normalised autocorrelation peak for a voiced frame
OCTAVE_TOLERANCE = 0.9  # pick the shortest lag whose peak reaches this share of the best
F0_REF_HZ = 27.5  # semitone reference (A0)

# Frame activity.
ACTIVE_RANGE_DB = 40.0  # frames quieter than loudest-minus-this are inactive
ACTIVE_FLOOR_DBFS = -65.0  # and so is anything below this absolute level
ENERGY_FLOOR_DBFS = -200.0  # energy of a digitally silent frame

PERCENTILES = (10.0, 50.0, 90.0)

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


def _names() -> tuple[str, ...]:
    names: list[str] = []
    names += [f"mfcc{i}_{f}" for i in range(N_MFCC) for f in FRAME_FUNCTIONALS]
    names += [f"dmfcc{i}_std" for i in range(N_MFCC)]
    names += [f"logmel{i}_{f}" for i in range(N_MELS) for f in ("mean", "std")]
    for lld in SPECTRAL_LLDS:
        # The relative energy's mean is 0 by construction: leave it out.
        names += [f"{lld}_{f}" for f in FRAME_FUNCTIONALS if not (lld == "energy_rel_db" and f == "mean")]
    names += list(PITCH_FEATURES) + list(VOICE_FEATURES)
    return tuple(names)


FEATURE_NAMES: tuple[str, ...] = _names()
N_FEATURES = len(FEATURE_NAMES)

FEATURE_SPEC: dict = {
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


# ---------------------------------------------------------------- constant tables


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney mel scale (librosa's default, htk=False)."""
    f = np.asarray(f, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-12) / min_log_hz) / logstep, f / f_sp)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


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
_BAND_50_1000 = (_FREQS_KHZ >= 0.05) & (_FREQS_KHZ < 1.0)
_BAND_1_5K = (_FREQS_KHZ >= 1.0) & (_FREQS_KHZ < 5.0)
_BAND_0_2K = _FREQS_KHZ < 2.0
_BAND_2_5K = (_FREQS_KHZ >= 2.0) & (_FREQS_KHZ < 5.0)
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
    power: np.ndarray  # (T, 1 + N_FFT // 2) power spectrum
    zcr: np.ndarray  # (T,)
    level_db: float  # mean energy of active frames (dBFS), or the floor when none

    @property
    def n_frames(self) -> int:
        return len(self.energy_db)


def _frames(x: np.ndarray, length: int) -> np.ndarray:
    if len(x) < length:
        x = np.concatenate([np.zeros(length - len(x), dtype=x.dtype), x])
    return np.lib.stride_tricks.sliding_window_view(x, length)[::HOP]


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
    fr = _frames(x, PITCH_FRAME)[:n_frames]
    fr = (fr - fr.mean(axis=1, keepdims=True)) * _PITCH_WIN
    spec = np.fft.rfft(fr, n=PITCH_NFFT, axis=1)
    acf = np.fft.irfft(spec.real**2 + spec.imag**2, n=PITCH_NFFT, axis=1)[:, : _LAG_MAX + 2]
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


def analyze(window: np.ndarray) -> FrameAnalysis:
    """Frame-level descriptors of a window of 16 kHz mono audio (at least 40 ms)."""
    x = np.asarray(window, dtype=np.float64).reshape(-1)
    x = np.where(np.isfinite(x), x, 0.0)
    power = power_spectrogram(x)
    n = power.shape[0]
    logmel = log_mel(power)

    core = _frames(x, N_FFT)[:, (N_FFT - WIN_LENGTH) // 2 : (N_FFT + WIN_LENGTH) // 2]
    ms = np.mean(core * core, axis=1)
    energy_db = np.where(ms > 0, 10.0 * np.log10(np.maximum(ms, 1e-30)), ENERGY_FLOOR_DBFS)
    energy_db = np.maximum(energy_db, ENERGY_FLOOR_DBFS)
    signs = np.signbit(core)
    zcr = np.mean(signs[:, 1:] != signs[:, :-1], axis=1)

    active = (energy_db >= energy_db.max() - ACTIVE_RANGE_DB) & (energy_db >= ACTIVE_FLOOR_DBFS)
    voicing, f0 = _pitch(x, n)
    voiced = active & (voicing >= VOICING_THRESHOLD)
    level = float(energy_db[active].mean()) if active.any() else ENERGY_FLOOR_DBFS
    return FrameAnalysis(energy_db=energy_db, active=active, voiced=voiced, voicing=voicing, f0_hz=f0,
                         logmel=logmel, power=power, zcr=zcr, level_db=level)


# ---------------------------------------------------------------- functionals


def _frame_functionals(x: np.ndarray) -> np.ndarray:
    """``(6, D)``: mean, std, p10, p50, p90, mean |frame-to-frame change| of ``(T, D)``."""
    if len(x) == 0:
        return np.zeros((len(FRAME_FUNCTIONALS), x.shape[1]))
    pct = np.percentile(x, PERCENTILES, axis=0)
    dabs = np.mean(np.abs(np.diff(x, axis=0)), axis=0) if len(x) > 1 else np.zeros(x.shape[1])
    return np.vstack([x.mean(axis=0), x.std(axis=0), pct, dabs[None, :]])


def _spectral_llds(a: FrameAnalysis, logmel_rel: np.ndarray) -> np.ndarray:
    p = a.power + 1e-20
    total = p.sum(axis=1)
    pn = p / total[:, None]
    centroid = pn @ _FREQS_KHZ
    spread = np.sqrt(np.maximum(pn @ (_FREQS_KHZ**2) - centroid**2, 0.0))
    cum = np.cumsum(pn, axis=1)
    rolloff = _FREQS_KHZ[np.minimum(np.argmax(cum >= 0.85, axis=1), len(_FREQS_KHZ) - 1)]
    flatness = 10.0 * (np.mean(np.log10(p), axis=1) - np.log10(np.mean(p, axis=1)))
    entropy = -np.sum(pn * np.log2(pn), axis=1) / np.log2(p.shape[1])
    flux = np.concatenate([[0.0], np.mean(np.abs(np.diff(logmel_rel, axis=0)), axis=1)])
    slope = (logmel_rel - logmel_rel.mean(axis=1, keepdims=True)) @ _MEL_SLOPE_W
    alpha = 10.0 * np.log10(p[:, _BAND_50_1000].sum(axis=1) / p[:, _BAND_1_5K].sum(axis=1))
    hammarberg = 10.0 * np.log10(p[:, _BAND_0_2K].max(axis=1) / p[:, _BAND_2_5K].max(axis=1))
    energy_rel = a.energy_db - a.level_db
    return np.column_stack([energy_rel, centroid, spread, rolloff, flatness, entropy, flux, slope,
                            alpha, hammarberg, a.zcr])


def _pitch_features(a: FrameAnalysis) -> np.ndarray:
    v = a.voiced
    if v.sum() < 2:
        return np.zeros(len(PITCH_FEATURES))
    st = 12.0 * np.log2(a.f0_hz[v] / F0_REF_HZ)
    t = np.flatnonzero(v) * (HOP / SAMPLE_RATE)
    p10, p50, p90 = np.percentile(st, PERCENTILES)
    tc = t - t.mean()
    slope = float(np.sum(tc * (st - st.mean())) / max(np.sum(tc * tc), 1e-12))
    both = v[1:] & v[:-1]
    st_all = 12.0 * np.log2(np.maximum(a.f0_hz, 1.0) / F0_REF_HZ)
    dabs = float(np.mean(np.abs(np.diff(st_all))[both])) if both.any() else 0.0
    return np.array([st.mean(), st.std(), p10, p50, p90, p90 - p10, slope, dabs])


def _voice_features(a: FrameAnalysis) -> np.ndarray:
    n_active = int(a.active.sum())
    n_voiced = int(a.voiced.sum())
    if n_active == 0:
        return np.zeros(len(VOICE_FEATURES))
    strength = float(a.voicing[a.active].mean())
    if n_voiced:
        r = np.clip(a.voicing[a.voiced], 1e-3, 0.999)
        hnr = 10.0 * np.log10(r / (1.0 - r))
        hnr_mean, hnr_std = float(hnr.mean()), float(hnr.std())
    else:
        hnr_mean = hnr_std = 0.0
    onsets = int(np.sum(a.voiced[1:] & ~a.voiced[:-1]) + int(a.voiced[0]))
    active_s = n_active * HOP / SAMPLE_RATE
    seg_rate = onsets / active_s
    seg_mean = (n_voiced * HOP / SAMPLE_RATE) / onsets if onsets else 0.0
    return np.array([n_voiced / n_active, strength, hnr_mean, hnr_std, seg_rate, seg_mean])


def functionals(a: FrameAnalysis) -> np.ndarray:
    """The fixed-length feature vector (``N_FEATURES`` float32) of an analysed window."""
    sel = a.active if a.active.sum() >= 2 else np.ones(a.n_frames, dtype=bool)
    logmel_rel = a.logmel - a.level_db
    mfcc = mfcc_from_log_mel(logmel_rel)
    parts = [_frame_functionals(mfcc[sel]).T.reshape(-1)]
    pad = np.pad(mfcc, ((DELTA_WIDTH, DELTA_WIDTH), (0, 0)), mode="edge")
    delta = np.lib.stride_tricks.sliding_window_view(pad, 2 * DELTA_WIDTH + 1, axis=0) @ _DELTA_W
    parts.append(delta[sel].std(axis=0))
    lm = logmel_rel[sel]
    parts.append(np.column_stack([lm.mean(axis=0), lm.std(axis=0)]).reshape(-1))
    spec = _frame_functionals(_spectral_llds(a, logmel_rel)[sel])  # (6, n_llds)
    parts.append(spec[1:, 0])  # relative energy: no mean
    parts.append(spec[:, 1:].T.reshape(-1))
    parts.append(_pitch_features(a))
    parts.append(_voice_features(a))
    out = np.concatenate(parts).astype(np.float32)
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


def extract(window: np.ndarray) -> np.ndarray:
    """Feature vector of one window: ``functionals(analyze(window))``."""
    return functionals(analyze(window))
