"""Generated sounds for the speech-gate tests: six kinds of non-speech, pink noise for SNR mixes, and a
real synthetic voice (espeak-ng). Seeded numpy synthesis, 16 kHz mono float32; no files needed.

Levels are RMS dBFS (``20 log10(rms)``): a full-scale sine is -3 dBFS.

* ``chords``: a piano-like chord sequence (triads and sevenths, decaying harmonic notes), -24 dBFS;
* ``hummed_melody``: a hummed tune (glottal-like harmonic source through a nasal "mmm" filter,
  legato notes, vibrato), -26 dBFS;
* ``mains_hum``: 100 Hz with harmonics (rectifier buzz), -40 dBFS;
* ``fan``: low-passed broadband air noise with blade-pass tones and a slow wobble, -35 dBFS;
* ``keyboard``: typing, short clicks at irregular intervals over a quiet room, peaks near -20 dBFS;
* ``pink``: pink (1/f) noise, -30 dBFS.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

SR = 16_000
SOUND_S = 20.0

CHORDS_DBFS = -24.0
HUM_MELODY_DBFS = -26.0
MAINS_DBFS = -40.0
FAN_DBFS = -35.0
KEYBOARD_ROOM_DBFS = -65.0
KEYBOARD_CLICK_PEAK = 0.1
PINK_DBFS = -30.0

MAINS_HZ = 100.0  # the hum of a full-wave rectifier on 50 Hz mains
MAINS_HARMONICS = 8
CHORD_S = 1.0
NOTE_DECAY_S = 0.6
MELODY_NOTE_S = 0.4
FAN_BLADE_HZ = 60.0
TYPING_RATE_HZ = 7.0
CLICK_S = 0.008


def rms_dbfs(x: np.ndarray) -> float:
    return float(20 * np.log10(max(float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))), 1e-12)))


def at_level(x: np.ndarray, dbfs: float) -> np.ndarray:
    """``x`` scaled to an RMS of ``dbfs``."""
    return (x * 10 ** ((dbfs - rms_dbfs(x)) / 20)).astype(np.float32)


def _t(seconds: float) -> np.ndarray:
    return np.arange(int(round(seconds * SR))) / SR


def _midi_hz(note: float) -> float:
    return 440.0 * 2 ** ((note - 69) / 12)


def pink(seconds: float = SOUND_S, dbfs: float = PINK_DBFS, seed: int = 0) -> np.ndarray:
    """Pink noise: white noise shaped to 1/f power in the frequency domain."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * SR))
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / SR)
    spec[1:] /= np.sqrt(f[1:])
    spec[0] = 0
    return at_level(np.fft.irfft(spec, n), dbfs)


def chords(seconds: float = SOUND_S, dbfs: float = CHORDS_DBFS, seed: int = 0) -> np.ndarray:
    """A chord every second: three or four piano-like notes (harmonics with a fast attack and decay)."""
    rng = np.random.default_rng(seed)
    roots = [48, 53, 55, 57, 52, 50]  # C F G A E D
    shapes = [(0, 4, 7), (0, 3, 7), (0, 4, 7, 10), (0, 4, 7, 11)]
    t_note = _t(CHORD_S * 1.5)
    env = (1 - np.exp(-t_note / 0.005)) * np.exp(-t_note / NOTE_DECAY_S)
    out = np.zeros(len(_t(seconds)) + len(t_note))
    for k in range(int(seconds / CHORD_S)):
        root = roots[rng.integers(len(roots))]
        note_set = shapes[rng.integers(len(shapes))]
        start = int(k * CHORD_S * SR)
        for off in note_set:
            f0 = _midi_hz(root + off + 12)
            note = sum(np.sin(2 * np.pi * h * f0 * t_note + rng.uniform(0, 2 * np.pi)) * 0.6 ** h
                       for h in range(1, 9) if h * f0 < SR / 2)
            out[start:start + len(t_note)] += note * env
    return at_level(out[: len(_t(seconds))], dbfs)


def hummed_melody(seconds: float = SOUND_S, dbfs: float = HUM_MELODY_DBFS, seed: int = 0) -> np.ndarray:
    """Someone humming a tune with the mouth closed: a voice-like source, a nasal filter, legato notes."""
    rng = np.random.default_rng(seed)
    t = _t(seconds)
    scale = [0, 2, 4, 5, 7, 9, 11, 12]
    n_notes = int(np.ceil(seconds / MELODY_NOTE_S))
    notes = 57 + np.array(scale)[rng.integers(len(scale), size=n_notes)]
    idx = np.minimum((t / MELODY_NOTE_S).astype(int), n_notes - 1)
    target = np.array([_midi_hz(n) for n in notes])[idx]
    glide = np.exp(-1 / (0.03 * SR))  # legato: 30 ms portamento between notes
    f0 = np.empty_like(target)
    f0[0] = target[0]
    for i in range(1, len(t)):  # a one-pole glide (20 s of samples: fast enough)
        f0[i] = glide * f0[i - 1] + (1 - glide) * target[i]
    f0 *= 1 + 0.01 * np.sin(2 * np.pi * 5.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    src = np.zeros_like(t)
    for h in range(1, 30):
        src += np.where(h * f0 < SR / 2, np.sin(h * phase) / h ** 1.2, 0.0)
    # closed-mouth nasal murmur: energy below ~400 Hz, a weak resonance near 1 kHz
    spec = np.fft.rfft(src)
    f = np.fft.rfftfreq(len(src), 1 / SR)
    shape = 1 / (1 + (f / 350.0) ** 4) + 0.05 / (1 + ((f - 1000.0) / 150.0) ** 2)
    x = np.fft.irfft(spec * shape, len(src))
    breath = np.clip(np.sin(np.pi * t / 4.0) * 3, 0, 1) ** 0.3  # a breath every 4 s
    return at_level(x * breath, dbfs)


def mains_hum(seconds: float = SOUND_S, dbfs: float = MAINS_DBFS, seed: int = 0) -> np.ndarray:
    """100 Hz rectifier hum with decaying harmonics and a little noise."""
    rng = np.random.default_rng(seed)
    t = _t(seconds)
    x = sum(np.sin(2 * np.pi * k * MAINS_HZ * t + rng.uniform(0, 2 * np.pi)) / k for k in range(1, MAINS_HARMONICS + 1))
    x = x + 0.01 * rng.standard_normal(len(t))
    return at_level(x, dbfs)


def fan(seconds: float = SOUND_S, dbfs: float = FAN_DBFS, seed: int = 0) -> np.ndarray:
    """A desk fan: low-passed air noise, blade-pass tones, a slow wobble."""
    rng = np.random.default_rng(seed)
    t = _t(seconds)
    n = len(t)
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / SR)
    spec *= 1 / (1 + (f / 600.0) ** 2)
    air = np.fft.irfft(spec, n)
    air /= np.std(air)
    blades = sum(0.3 / k * np.sin(2 * np.pi * k * FAN_BLADE_HZ * t) for k in range(1, 4))
    wobble = 1 + 0.1 * np.sin(2 * np.pi * 0.7 * t)
    return at_level((air + blades) * wobble, dbfs)


def keyboard(seconds: float = SOUND_S, seed: int = 0) -> np.ndarray:
    """Typing: clicks (a few ms of filtered noise with a sharp decay) at irregular intervals."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * SR))
    x = pink(seconds, KEYBOARD_ROOM_DBFS, seed=seed + 1).astype(np.float64)
    t_click = np.arange(int(CLICK_S * SR)) / SR
    pos = 0.0
    while True:
        pos += rng.exponential(1 / TYPING_RATE_HZ) + 0.04
        start = int(pos * SR)
        if start + len(t_click) >= n:
            break
        click = rng.standard_normal(len(t_click)) * np.exp(-t_click / 0.0015)
        click += 0.5 * np.sin(2 * np.pi * rng.uniform(2000, 4000) * t_click) * np.exp(-t_click / 0.003)
        x[start:start + len(t_click)] += KEYBOARD_CLICK_PEAK * rng.uniform(0.4, 1.0) * click / np.max(np.abs(click))
    return x.astype(np.float32)


NON_SPEECH: dict[str, Callable[..., np.ndarray]] = {
    "chords": chords, "hummed_melody": hummed_melody, "mains_hum": mains_hum, "fan": fan, "keyboard": keyboard,
    "pink_noise": pink}


def non_speech(name: str, seconds: float = SOUND_S, seed: int = 0) -> np.ndarray:
    return NON_SPEECH[name](seconds, seed=seed)


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``speech + noise`` with the noise scaled to ``snr_db`` below the speech's active-part power
    (samples within 40 dB of its peak envelope), the usual definition for speech with pauses."""
    s = np.asarray(speech, dtype=np.float64)
    frame = SR // 100
    env = np.sqrt(np.convolve(s ** 2, np.ones(frame) / frame, mode="same"))
    active = env > np.max(env) * 10 ** (-40 / 20)
    p_speech = np.mean(s[active] ** 2)
    nz = np.asarray(noise[: len(s)], dtype=np.float64)
    nz = nz * np.sqrt(p_speech / np.mean(nz ** 2) / 10 ** (snr_db / 10))
    return (s + nz).astype(np.float32)


# ---------------------------------------------------------------- a real synthetic voice

ESPEAK = "espeak-ng"
VOICE_TEXT = ("The weather was lovely this morning, so we walked down to the harbour and watched the boats. "
              "Then my sister called and told me the whole story about her new job in the city. "
              "I honestly could not believe what she said, it was the most surprising news of the year. "
              "Tomorrow we will meet again and talk about everything over a long dinner.")


def espeak_available() -> bool:
    return shutil.which(ESPEAK) is not None


def espeak_voice(text: str = VOICE_TEXT, voice: str = "en-us", speed_wpm: int = 150) -> np.ndarray:
    """``text`` spoken by espeak-ng, at 16 kHz (RuntimeError if espeak-ng is missing or fails)."""
    import soundfile as sf

    from realtime_ser.audio.convert import Converter

    if not espeak_available():
        raise RuntimeError("espeak-ng is not installed")
    with tempfile.TemporaryDirectory(prefix="sounds-espeak-") as tmp:
        wav = Path(tmp) / "voice.wav"
        subprocess.run([ESPEAK, "-v", voice, "-s", str(speed_wpm), "-w", str(wav), text], check=True,
                       capture_output=True, timeout=60)
        data, rate = sf.read(str(wav), dtype="float32", always_2d=True)
    conv = Converter(rate)
    return np.concatenate([conv.process(data), conv.flush()]).astype(np.float32)
