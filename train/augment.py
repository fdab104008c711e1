"""Audio conditions for training and for the robustness table: seeded, so every clip always gets the
same augmentation and the feature cache (one per corpus and condition) stays valid.

Conditions (``CONDITIONS``):

* ``clean``: the clip as stored.
* ``aug``: the training mix. Per clip, drawn from a generator seeded by the clip's sha256:
  a synthetic room (``P_REVERB``, RT60 0.2-0.8 s), additive noise (``P_NOISE``, 0-20 dB SNR, one of
  pink, brown, babble of 3 other speakers of the same corpus, mains hum with harmonics), the
  telephone band (``P_TELEPHONE``: 300-3400 Hz band-pass and a round trip through 8 kHz), an Ogg Opus
  round trip at the lowest bitrate libsndfile offers (``P_OPUS``, ``compression_level=1.0``), and
  always a level change to -45..-6 dBFS (active level). Only training speakers are ever augmented:
  the evaluation fits on the ``aug`` windows of the training corpora only.
* ``snr20``, ``snr10``, ``snr5``: test audio with noise at that SNR (kind per clip: pink, brown or
  babble of other speakers of the held-out corpus); ``reverb``: test audio in a synthetic room
  (RT60 0.4-0.8 s). These never reach training; they feed the robustness table.

SNR is measured against the clip's active speech power (the mean power of its frames within
``ACTIVE_RANGE_DB`` of the loudest), the noise spans the whole clip.
"""

from __future__ import annotations

import hashlib
import io
import json
import zlib
from collections.abc import Callable

import numpy as np
import soundfile as sf

SAMPLE_RATE = 16_000
AUG_VERSION = 1  # bump when any condition's processing changes (it is part of the cache key)
CLEAN = "clean"  # the audio as stored (its cache file has no condition in its name)
TRAIN_MIX = "aug"
TEST_CONDITIONS = ("snr20", "snr10", "snr5", "reverb")
CONDITIONS = (CLEAN, TRAIN_MIX) + TEST_CONDITIONS
TEST_SNR_DB = {"snr20": 20.0, "snr10": 10.0, "snr5": 5.0}

P_REVERB = 0.5
P_NOISE = 0.8
P_TELEPHONE = 0.2
P_OPUS = 0.25
SNR_RANGE_DB = (0.0, 20.0)
RT60_RANGE_S = (0.2, 0.8)
TEST_RT60_RANGE_S = (0.4, 0.8)
LEVEL_RANGE_DBFS = (-45.0, -6.0)
NOISE_KINDS_TRAIN = ("pink", "brown", "babble", "hum")
NOISE_KINDS_TEST = ("pink", "brown", "babble")
BABBLE_TALKERS = 3
HUM_HZ = (50.0, 60.0)
HUM_HARMONICS = 8
TELEPHONE_BAND_HZ = (300.0, 3400.0)
TELEPHONE_RATE = 8000
BUTTER_ORDER = 4
OPUS_COMPRESSION_LEVEL = 1.0  # libsndfile's lowest Opus bitrate
RIR_PREDELAY_S = 0.003
RIR_MAX_S = 1.0
FRAME = 320  # 20 ms, for the active-level measure
ACTIVE_RANGE_DB = 30.0
EPS = 1e-12
PEAK_LIMIT = 0.999


def check_condition(name: str) -> str:
    if name not in CONDITIONS:
        raise ValueError(f"unknown audio condition {name!r}; expected one of {', '.join(CONDITIONS)}")
    return name


def condition_key(condition: str) -> str:
    """Part of the cache key: everything that changes the audio of ``condition``."""
    params = {k: v for k, v in globals().items() if k.isupper() and isinstance(v, (int, float, str, tuple))}
    blob = json.dumps({"condition": condition, "params": params}, sort_keys=True, default=list)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def _rng(condition: str, seed_text: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(f"{condition}:{seed_text}".encode()))


# ---------------------------------------------------------------- building blocks


def active_power(x: np.ndarray) -> float:
    """Mean power of the frames within ``ACTIVE_RANGE_DB`` of the loudest frame."""
    n = len(x) // FRAME
    if n == 0:
        return float(np.mean(x.astype(np.float64) ** 2) + EPS)
    p = np.mean(x[: n * FRAME].astype(np.float64).reshape(n, FRAME) ** 2, axis=1) + EPS
    keep = 10 * np.log10(p) >= 10 * np.log10(p.max()) - ACTIVE_RANGE_DB
    return float(p[keep].mean())


def coloured_noise(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Noise with power spectral density ~ 1/f**exponent (1 pink, 2 brown), unit variance."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n)
    f[0] = f[1] if n > 1 else 1.0
    y = np.fft.irfft(spec / f ** (exponent / 2.0), n)
    return (y / (y.std() + EPS)).astype(np.float32)


def hum(n: int, rng: np.random.Generator) -> np.ndarray:
    f0 = HUM_HZ[int(rng.integers(len(HUM_HZ)))]
    t = np.arange(n) / SAMPLE_RATE
    y = sum((rng.uniform(0.2, 1.0) / k * np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 2 * np.pi))
             for k in range(1, HUM_HARMONICS + 1)), np.zeros(n))
    return (y / (np.std(y) + EPS)).astype(np.float32)


def babble_noise(n: int, sources: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    y = np.zeros(n, dtype=np.float64)
    for s in sources:
        if len(s) == 0:
            continue
        reps = int(np.ceil(n / len(s))) + 1
        loop = np.tile(s, reps)
        start = int(rng.integers(len(s)))
        y += loop[start:start + n] / np.sqrt(active_power(s))
    return (y / (y.std() + EPS)).astype(np.float32)


def add_noise(x: np.ndarray, kind: str, snr_db: float, rng: np.random.Generator,
              babble: Callable[[], list[np.ndarray]]) -> np.ndarray:
    """``x`` plus noise of ``kind`` at ``snr_db``; ``babble()`` gives the talkers' audio (read only if needed)."""
    n = len(x)
    if kind == "pink":
        noise = coloured_noise(n, 1.0, rng)
    elif kind == "brown":
        noise = coloured_noise(n, 2.0, rng)
    elif kind == "hum":
        noise = hum(n, rng)
    elif kind == "babble":
        talkers = babble()
        noise = babble_noise(n, talkers, rng) if talkers else coloured_noise(n, 1.0, rng)
    else:
        raise ValueError(f"unknown noise kind {kind!r}")
    gain = np.sqrt(active_power(x) / (10 ** (snr_db / 10.0)) / (np.mean(noise.astype(np.float64) ** 2) + EPS))
    return (x + gain * noise).astype(np.float32)


def room_impulse_response(rt60_s: float, rng: np.random.Generator) -> np.ndarray:
    """A synthetic room: a direct path, then exponentially decaying noise (-60 dB after ``rt60_s``)."""
    n = int(min(rt60_s, RIR_MAX_S) * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    tail = rng.standard_normal(n) * 10 ** (-3.0 * t / rt60_s)
    pre = int(RIR_PREDELAY_S * SAMPLE_RATE)
    tail[:pre] = 0.0
    h = np.concatenate([[1.0], tail * rng.uniform(0.1, 0.3)])
    return (h / np.sqrt(np.sum(h**2))).astype(np.float64)


def reverberate(x: np.ndarray, rt60_s: float, rng: np.random.Generator) -> np.ndarray:
    from scipy.signal import fftconvolve

    y = fftconvolve(x.astype(np.float64), room_impulse_response(rt60_s, rng))[: len(x)]
    return (y * np.sqrt(active_power(x) / active_power(y))).astype(np.float32)


def telephone(x: np.ndarray) -> np.ndarray:
    from scipy.signal import butter, resample_poly, sosfilt

    sos = butter(BUTTER_ORDER, TELEPHONE_BAND_HZ, btype="bandpass", fs=SAMPLE_RATE, output="sos")
    y = sosfilt(sos, x.astype(np.float64))
    ratio = SAMPLE_RATE // TELEPHONE_RATE
    y = resample_poly(resample_poly(y, 1, ratio), ratio, 1)[: len(x)]
    return np.pad(y, (0, len(x) - len(y))).astype(np.float32)


def opus_round_trip(x: np.ndarray) -> np.ndarray:
    buf = io.BytesIO()
    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    scale = PEAK_LIMIT / peak if peak > PEAK_LIMIT else 1.0
    sf.write(buf, x * scale, SAMPLE_RATE, format="OGG", subtype="OPUS", compression_level=OPUS_COMPRESSION_LEVEL)
    buf.seek(0)
    y, _ = sf.read(buf, dtype="float32")
    y = y[: len(x)] / scale
    return np.pad(y, (0, len(x) - len(y))).astype(np.float32)


def set_level(x: np.ndarray, dbfs: float) -> np.ndarray:
    y = x * np.sqrt(10 ** (dbfs / 10.0) / active_power(x))
    return np.clip(y, -1.0, 1.0).astype(np.float32)


# ---------------------------------------------------------------- conditions


def babble_sources(condition: str, clip, pool: list) -> list:
    """Paths of the clips babble for ``clip`` is mixed from: ``BABBLE_TALKERS`` clips of *other* speakers in
    ``pool`` (seeded by the clip); empty for conditions that never use babble."""
    if condition in (CLEAN, "reverb"):
        return []
    others = [c for c in pool if c.speaker != clip.speaker]
    if not others:
        return []
    rng = _rng(f"{condition}:babble", clip.sha256)
    pick = rng.choice(len(others), size=min(BABBLE_TALKERS, len(others)), replace=False)
    return [others[int(i)].path for i in sorted(pick)]


def apply(condition: str, x: np.ndarray, *, seed_text: str,
          babble: Callable[[], list[np.ndarray]] = list) -> np.ndarray:
    """``x`` under ``condition``; the same ``seed_text`` (the clip's sha256) always gives the same audio.
    ``babble()`` returns the other talkers' audio; it is called only when babble is drawn."""
    rng = _rng(condition, seed_text)
    x = np.asarray(x, dtype=np.float32)
    if condition == TRAIN_MIX:
        if rng.random() < P_REVERB:
            x = reverberate(x, rng.uniform(*RT60_RANGE_S), rng)
        if rng.random() < P_NOISE:
            kind = NOISE_KINDS_TRAIN[int(rng.integers(len(NOISE_KINDS_TRAIN)))]
            x = add_noise(x, kind, rng.uniform(*SNR_RANGE_DB), rng, babble)
        if rng.random() < P_TELEPHONE:
            x = telephone(x)
        if rng.random() < P_OPUS:
            x = opus_round_trip(x)
        return set_level(x, rng.uniform(*LEVEL_RANGE_DBFS))
    if condition in TEST_SNR_DB:
        kind = NOISE_KINDS_TEST[int(rng.integers(len(NOISE_KINDS_TEST)))]
        return add_noise(x, kind, TEST_SNR_DB[condition], rng, babble)
    if condition == "reverb":
        return reverberate(x, rng.uniform(*TEST_RT60_RANGE_S), rng)
    raise ValueError(f"condition {condition!r} has no processing")
