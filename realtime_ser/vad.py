"""Speech-gate parameters (``VadParams``, stored in each model card's ``vad`` block) and results (``VadResult``).

The runtime's and training's one speech gate is ``realtime_ser/gate.py`` (Silero VAD behind an energy
stage, docs/gate.md); it reads these parameters. ``decide`` / ``is_speech`` below are the earlier
energy/voicing decision, kept as a reference (the gate tests measure the neural gate against it on clean
corpus audio, where it is reliable); nothing in the runtime or training calls them.

That decision: a window holds speech when it has at least ``min_voiced_s`` of *voiced* frames: frames
that are active (see ``features``), louder than ``floor_dbfs`` and periodic (normalised
autocorrelation peak above ``features.VOICING_THRESHOLD``). Silence has no active frames;
white or pink noise at any level is not periodic; a quiet room is below the floor. Music and hums
pass it (tests/test_gate.py), which is why the neural gate replaced it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import features

DEFAULT_MIN_VOICED_S = 0.3
# -60 dBFS, not -50: quiet RAVDESS actors (calm, sad) speak at -45 to -57 dBFS, and a -50 floor
# silenced 55 of their clips entirely; noise at any level is still refused (it is not periodic).
DEFAULT_FLOOR_DBFS = -60.0
# The neural speech gate (realtime_ser/gate.py, docs/gate.md): its energy first stage, Silero's
# frame-probability threshold and how much of a window must reach it.
DEFAULT_MIN_ACTIVE_S = 0.1
DEFAULT_GATE_THRESHOLD = 0.5  # Silero's own default
DEFAULT_MIN_SPEECH_S = 0.1  # 4 frames of 32 ms (3 frames = 0.096 s do not pass)
# Humming (a closed mouth) fools the network on some tunes: a window whose voiced frames keep almost all
# their energy below 1 kHz (the lower quartile of their alpha ratio, 50-1000 Hz over 1-5 kHz, above this)
# has no open vowel in it and is not speech. Measured in docs/gate.md.
DEFAULT_CLOSED_MOUTH_ALPHA_DB = 30.0


@dataclass(frozen=True)
class VadParams:
    min_voiced_s: float = DEFAULT_MIN_VOICED_S
    floor_dbfs: float = DEFAULT_FLOOR_DBFS
    min_active_s: float = DEFAULT_MIN_ACTIVE_S
    gate_threshold: float = DEFAULT_GATE_THRESHOLD
    min_speech_s: float = DEFAULT_MIN_SPEECH_S
    closed_mouth_alpha_db: float = DEFAULT_CLOSED_MOUTH_ALPHA_DB

    def __post_init__(self) -> None:
        if not 0.0 < self.min_voiced_s <= 10.0:
            raise ValueError(f"min_voiced_s must be in (0, 10] seconds, got {self.min_voiced_s}")
        if not -120.0 <= self.floor_dbfs <= 0.0:
            raise ValueError(f"floor_dbfs must be in [-120, 0] dBFS, got {self.floor_dbfs}")
        if not 0.0 <= self.min_active_s <= 10.0:
            raise ValueError(f"min_active_s must be in [0, 10] seconds, got {self.min_active_s}")
        if not 0.0 < self.gate_threshold < 1.0:
            raise ValueError(f"gate_threshold must be in (0, 1), got {self.gate_threshold}")
        if not 0.0 < self.min_speech_s <= 10.0:
            raise ValueError(f"min_speech_s must be in (0, 10] seconds, got {self.min_speech_s}")
        if not 0.0 < self.closed_mouth_alpha_db <= 100.0:
            raise ValueError(f"closed_mouth_alpha_db must be in (0, 100] dB, got {self.closed_mouth_alpha_db}")


@dataclass(frozen=True)
class VadResult:
    speech: bool
    voiced_s: float  # seconds of voiced frames above the floor
    level_dbfs: float  # mean energy of the window's active frames
    speech_s: float = 0.0  # neural gate: seconds of frames at or above gate_threshold
    max_prob: float = 0.0  # neural gate: the window's highest frame probability
    tilt_db: float = 0.0  # lower quartile of the voiced frames' alpha ratio (closed-mouth check)


def decide(analysis: features.FrameAnalysis, params: VadParams = VadParams()) -> VadResult:
    """The speech / no-speech decision for one analysed window."""
    voiced = analysis.voiced & (analysis.energy_db >= params.floor_dbfs)
    voiced_s = float(np.count_nonzero(voiced)) * features.HOP / features.SAMPLE_RATE
    return VadResult(speech=voiced_s >= params.min_voiced_s, voiced_s=voiced_s,
                     level_dbfs=float(analysis.level_db))


def is_speech(window: np.ndarray, params: VadParams = VadParams()) -> bool:
    """Convenience for callers that have only the audio."""
    return decide(features.analyze(window), params).speech
