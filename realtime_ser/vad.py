"""The one voice-activity decision: does a window hold enough speech to classify?

Used by the runtime (to stay quiet on silence and noise) and by training (windows that
fail it are dropped, since RAVDESS clips start and end with about a second of silence).
Pure: it reads the frame analysis that the features are computed from, so the decision
costs nothing extra.

A window holds speech when it has at least ``min_voiced_s`` of *voiced* frames: frames
that are active (see ``features``), louder than ``floor_dbfs`` and periodic (normalised
autocorrelation peak above ``features.VOICING_THRESHOLD``). Silence has no active frames;
white or pink noise at any level is not periodic; a quiet room is below the floor.
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
DEFAULT_GATE_THRESHOLD = 0.5
DEFAULT_MIN_SPEECH_S = 0.1


@dataclass(frozen=True)
class VadParams:
    min_voiced_s: float = DEFAULT_MIN_VOICED_S
    floor_dbfs: float = DEFAULT_FLOOR_DBFS
    min_active_s: float = DEFAULT_MIN_ACTIVE_S
    gate_threshold: float = DEFAULT_GATE_THRESHOLD
    min_speech_s: float = DEFAULT_MIN_SPEECH_S

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


@dataclass(frozen=True)
class VadResult:
    speech: bool
    voiced_s: float  # seconds of voiced frames above the floor
    level_dbfs: float  # mean energy of the window's active frames
    speech_s: float = 0.0  # neural gate: seconds of frames at or above gate_threshold
    max_prob: float = 0.0  # neural gate: the window's highest frame probability


def decide(analysis: features.FrameAnalysis, params: VadParams = VadParams()) -> VadResult:
    """The speech / no-speech decision for one analysed window."""
    voiced = analysis.voiced & (analysis.energy_db >= params.floor_dbfs)
    voiced_s = float(np.count_nonzero(voiced)) * features.HOP / features.SAMPLE_RATE
    return VadResult(speech=voiced_s >= params.min_voiced_s, voiced_s=voiced_s,
                     level_dbfs=float(analysis.level_db))


def is_speech(window: np.ndarray, params: VadParams = VadParams()) -> bool:
    """Convenience for callers that have only the audio."""
    return decide(features.analyze(window), params).speech
