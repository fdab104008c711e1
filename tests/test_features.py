"""Features: frozen values, the incremental (runtime) path, librosa parity, gain invariance, VAD.

Tolerances (``close``): ``|a - b| <= tol * max(1, |b|)`` for every feature, i.e. relative for
features larger than 1 and absolute below that.

* Values are frozen: the shipped model is trained on them. ``tests/data/features_reference.npz``
  holds vectors computed by the first implementation of ``features`` (commit 6e2437d) on the
  generated signals below; the current code must match them within ``FROZEN_TOL`` (1e-5).
* The runtime's incremental ``FrameCache`` path must equal whole-window ``extract`` within
  ``STREAM_TOL`` (1e-6; in practice it is bit-identical after the float32 cast).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from realtime_ser import features, vad
from realtime_ser.audio.windowing import Windower, windows_of

SR = features.SAMPLE_RATE
WINDOW = 2 * SR
HOP = SR // 2
FROZEN_TOL = 1e-5
STREAM_TOL = 1e-6
GAIN_TOL = 1e-3  # measured 3e-5 (0 for powers of two)
MEL_FB_TOL = 1e-6  # relative to the largest weight (librosa builds it in float32)
LOGMEL_TOL_DB = 1e-4  # float32 STFT in librosa vs float64 here (measured 5e-6 dB)
MFCC_TOL = 2e-4  # measured 4e-5
REFERENCE = Path(__file__).parent / "data" / "features_reference.npz"


# ---------------------------------------------------------------- generated audio


def voiced(seconds: float, f0: float = 140.0, amplitude: float = 0.3, seed: int = 0) -> np.ndarray:
    """A voice-like signal: a harmonic series with a moving F0 and syllabic (4 Hz) amplitude modulation."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * SR))
    t = np.arange(n) / SR
    inst_f0 = f0 * (1.0 + 0.2 * np.sin(2 * np.pi * 0.4 * t) + 0.02 * np.sin(2 * np.pi * 5.0 * t))
    phase = 2 * np.pi * np.cumsum(inst_f0) / SR
    x = sum(np.sin(k * phase) / k for k in range(1, int(3500 // (f0 * 1.25)) + 1))
    envelope = np.clip(np.sin(2 * np.pi * 4.0 * t) * 1.4 + 0.4, 0.0, 1.0)
    x = x * envelope + 0.002 * rng.standard_normal(n)
    return (amplitude * x / np.max(np.abs(x))).astype(np.float32)


def white(seconds: float, dbfs: float, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(int(round(seconds * SR))) * 10 ** (dbfs / 20)).astype(np.float32)


def sine(freq: float, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * freq * np.arange(int(round(seconds * SR))) / SR)).astype(np.float32)


def reference_signals() -> dict[str, np.ndarray]:
    """The generated clips of the frozen-value reference (each analysed as one window)."""
    return {
        "voice": voiced(2.0),
        "voice_high_quiet": voiced(2.0, f0=260.0, amplitude=0.01, seed=2),
        "voice_clipped": np.clip(voiced(2.0, amplitude=1.0, seed=3) * 4.0, -1.0, 1.0),
        "voice_in_noise": voiced(2.0, seed=4) + white(2.0, -35.0, seed=5),
        "half_silence": np.concatenate([np.zeros(SR, np.float32), voiced(1.0, f0=180.0, seed=6)]),
        "white_noise": white(2.0, -20.0),
        "tone": sine(440.0, 2.0),
        "silence": np.zeros(WINDOW, np.float32),
        "short_clip": voiced(0.3, f0=200.0, seed=7),
    }


def close(a: np.ndarray, b: np.ndarray, tol: float) -> float:
    """The worst ``|a - b| / max(1, |b|)``; asserts it is within ``tol``."""
    err = np.abs(a.astype(np.float64) - b.astype(np.float64)) / np.maximum(1.0, np.abs(b.astype(np.float64)))
    worst = int(np.argmax(err))
    assert err[worst] <= tol, (f"{features.FEATURE_NAMES[worst] if len(err) == features.N_FEATURES else worst}: "
                               f"{a[worst]} vs {b[worst]} (error {err[worst]:.2e} > {tol:g})")
    return float(err[worst])


def streamed(x: np.ndarray, window: int = WINDOW, hop: int = HOP) -> tuple[list, list, features.FrameCache]:
    """Whole-window ``extract`` and the incremental path, on the windows a stream of ``x`` produces."""
    cache = features.FrameCache()
    whole, incremental = [], []
    for w in windows_of(x, window, hop):
        whole.append(features.extract(w.samples))
        incremental.append(features.functionals(cache.analyze(w.samples, w.end - len(w.samples))))
    return whole, incremental, cache


# ---------------------------------------------------------------- basic properties


def test_feature_names_and_spec_hash_are_unchanged():
    assert features.N_FEATURES == len(features.FEATURE_NAMES) == 299
    assert features.SPEC_HASH == "3e5e56dbb1e13598"  # in the shipped model's card: never change


@pytest.mark.parametrize("name", list(reference_signals()))
def test_features_are_finite_and_deterministic(name):
    x = reference_signals()[name]
    a, b = features.extract(x), features.extract(x.copy())
    assert a.dtype == np.float32 and a.shape == (features.N_FEATURES,)
    assert np.all(np.isfinite(a))
    assert np.array_equal(a, b)


def test_non_finite_samples_are_treated_as_zero():
    x = voiced(2.0)
    bad = x.copy()
    bad[[100, 5000, 20000]] = [np.nan, np.inf, -np.inf]
    clean = x.copy()
    clean[[100, 5000, 20000]] = 0.0
    assert np.array_equal(features.extract(bad), features.extract(clean))


@pytest.mark.parametrize("n", [32, 400, 700, WINDOW + 40, WINDOW + 159])
def test_any_length_gives_a_finite_vector(n):
    """Also lengths that are not a whole number of hops (the first implementation failed on some)."""
    x = voiced(n / SR + 0.01)[:n]
    assert np.all(np.isfinite(features.extract(x)))


# ---------------------------------------------------------------- frozen values


def test_values_match_the_frozen_reference():
    ref = np.load(REFERENCE)
    signals = reference_signals()
    assert sorted(ref.files) == sorted(signals)
    for name, x in signals.items():
        close(features.extract(x), ref[name], FROZEN_TOL)


# ---------------------------------------------------------------- incremental (runtime) path


@pytest.mark.parametrize("name", ["voice", "noise_then_voice", "silence_voice_silence", "clipped", "odd_length"])
def test_incremental_path_equals_whole_window_extract(name):
    x = {
        "voice": voiced(7.0),
        "noise_then_voice": np.concatenate([white(3.0, -45.0), voiced(4.0, f0=220.0, seed=3)]),
        "silence_voice_silence": np.concatenate([np.zeros(SR * 3, np.float32), voiced(3.0, seed=4),
                                                 np.zeros(SR * 2, np.float32)]),
        "clipped": np.clip(voiced(5.0, amplitude=1.0, seed=5) * 3.0, -1.0, 1.0),
        "odd_length": voiced(6.0, seed=6)[: 6 * SR - 1234],  # the final flush window is off the frame grid
    }[name]
    whole, incremental, cache = streamed(x)
    for a, b in zip(incremental, whole, strict=True):
        close(a, b, STREAM_TOL)
    assert cache.frames_reused > cache.frames_analysed  # it really was incremental


@pytest.mark.parametrize("hop_s", [0.25, 0.5, 1.0, 0.333])
def test_incremental_path_with_other_hops(hop_s):
    """Hops that are not a whole number of frames (0.333 s) fall back to whole windows, still equal."""
    whole, incremental, cache = streamed(voiced(6.0, seed=8), hop=int(round(hop_s * SR)))
    for a, b in zip(incremental, whole, strict=True):
        close(a, b, STREAM_TOL)
    assert (cache.frames_reused > 0) == (int(round(hop_s * SR)) % features.HOP == 0)


def test_frame_cache_is_not_fooled_by_other_samples_or_positions():
    cache = features.FrameCache()
    x, y = voiced(3.0, seed=1), voiced(3.0, f0=250.0, seed=2)
    cache.analyze(x[:WINDOW], 0)
    # the right position but another stream's samples: must be analysed whole
    got = features.functionals(cache.analyze(y[HOP : HOP + WINDOW], HOP))
    close(got, features.extract(y[HOP : HOP + WINDOW]), STREAM_TOL)
    # going backwards, or a shift off the frame grid
    for start in (0, HOP + 80):
        got = features.functionals(cache.analyze(x[start : start + WINDOW], start))
        close(got, features.extract(x[start : start + WINDOW]), STREAM_TOL)


def test_stream_blocks_of_any_size_give_the_same_features():
    x = voiced(5.0, seed=9)
    out = []
    for block in (160, 777, 8000, len(x)):
        windower, cache, vectors = Windower(WINDOW, HOP), features.FrameCache(), []
        for i in range(0, len(x), block):
            for w in windower.push(x[i : i + block]):
                vectors.append(features.functionals(cache.analyze(w.samples, w.end - len(w.samples))))
        out.append(np.array(vectors))
    for v in out[1:]:
        assert np.array_equal(v, out[0])


@pytest.mark.corpus
def test_incremental_path_equals_extract_on_a_corpus_clip(data_root):
    import soundfile as sf

    corpus = data_root / "ravdess"
    with open(corpus / "MANIFEST.csv", newline="", encoding="utf-8") as f:
        row = next(r for r in csv.DictReader(f) if r["emotion"] == "angry")
    x, rate = sf.read(str(corpus / row["path"]), dtype="float32")
    assert rate == SR
    whole, incremental, cache = streamed(x)
    assert len(whole) >= 4
    for a, b in zip(incremental, whole, strict=True):
        close(a, b, STREAM_TOL)
    assert cache.frames_reused > 0


# ---------------------------------------------------------------- parity with librosa


@pytest.mark.slow
def test_mel_filterbank_matches_librosa():
    librosa = pytest.importorskip("librosa")
    ref = librosa.filters.mel(sr=SR, n_fft=features.N_FFT, n_mels=features.N_MELS, fmin=features.FMIN,
                              fmax=features.FMAX)
    ours = features.mel_filterbank()
    assert ours.shape == ref.shape
    assert np.max(np.abs(ours - ref)) <= MEL_FB_TOL * np.max(ref)


@pytest.mark.slow
def test_log_mel_and_mfcc_frames_match_librosa():
    librosa = pytest.importorskip("librosa")
    scipy_fft = pytest.importorskip("scipy.fft")
    x = voiced(2.0, seed=11) + white(2.0, -50.0, seed=12)
    mel = librosa.feature.melspectrogram(y=x, sr=SR, n_fft=features.N_FFT, hop_length=features.HOP,
                                         win_length=features.WIN_LENGTH, window="hann", center=False, power=2.0,
                                         n_mels=features.N_MELS, fmin=features.FMIN, fmax=features.FMAX)
    ref_db = librosa.power_to_db(mel, ref=1.0, amin=features.AMIN, top_db=None)
    ref_mfcc = scipy_fft.dct(ref_db, type=2, norm="ortho", axis=0)[: features.N_MFCC]
    ours_db = features.log_mel(features.power_spectrogram(x))
    assert ours_db.shape == ref_db.T.shape
    assert np.max(np.abs(ours_db - ref_db.T)) <= LOGMEL_TOL_DB
    assert np.max(np.abs(features.mfcc_from_log_mel(ours_db) - ref_mfcc.T)) <= MFCC_TOL
    # the frame analysis carries the same MFCC
    assert np.max(np.abs(features.analyze(x).mfcc - ref_mfcc.T)) <= MFCC_TOL


# ---------------------------------------------------------------- gain invariance


@pytest.mark.parametrize("gain", [0.5, 0.7, 3.0])
def test_features_do_not_depend_on_the_input_gain(gain):
    """While the frames stay above the absolute activity floor (-65 dBFS), the level is taken out."""
    x = voiced(2.0, amplitude=0.2, seed=13)
    a, b = features.extract(x * gain), features.extract(x)
    close(a, b, GAIN_TOL)


# ---------------------------------------------------------------- VAD


@pytest.mark.parametrize("name,x", [
    ("silence", np.zeros(WINDOW, np.float32)),
    ("quiet white noise", white(2.0, -60.0)),
    ("white noise", white(2.0, -30.0)),
    ("loud white noise", white(2.0, -6.0)),
])
def test_vad_rejects_silence_and_noise(name, x):
    assert not vad.is_speech(x), name


@pytest.mark.parametrize("f0,amplitude", [(110.0, 0.3), (200.0, 0.05), (300.0, 0.6)])
def test_vad_accepts_a_voiced_signal(f0, amplitude):
    a = features.analyze(voiced(2.0, f0=f0, amplitude=amplitude))
    decision = vad.decide(a)
    assert decision.speech and decision.voiced_s >= vad.DEFAULT_MIN_VOICED_S
