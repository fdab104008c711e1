"""Event types and their JSON form (one object per stdout line). Pure.

Every event carries ``"schema": SCHEMA_VERSION`` and a ``"type"``:

* ``start``: once, before anything else: model, labels, source, framing, smoothing.
* ``prediction``: one per analysed window (windows skipped under overload get none).
* ``change``: after the ``prediction`` of a window where the smoothed emotion changed
  (including to and from ``"silence"``).
* ``status``: every ``--status-every`` seconds of audio: counters and queue depth.
* ``end``: once, last: why the stream ended, totals, and the error if there was one.

Times (``t_start``, ``t_end``, ``t``) are seconds of audio since the stream began,
computed from sample counts. The machine-readable contract is
``realtime_ser/schema/events.schema.json``; bump ``SCHEMA_VERSION`` on any incompatible
change.

**Valence and arousal** are the probability-weighted mean of per-label coordinates
on Russell's circumplex model of affect (Russell 1980, "A circumplex model of
affect", J. Pers. Soc. Psychol. 39(6)), placed as in the usual circumplex diagrams:
pleasant/unpleasant on the valence axis, activated/deactivated on the arousal axis.
They are the smoothed probabilities' centre of mass, so they move continuously (good
for avatar blendshapes) and are 0/0 in silence. Labels not in ``VALENCE_AROUSAL``
(nor in ``LABEL_ALIASES``) count as neutral (0, 0).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

import numpy as np

SCHEMA_VERSION = 1

TIME_DECIMALS = 3  # 1 ms: finer than any sample-count time we report matters
PROB_DECIMALS = 4
LEVEL_DECIMALS = 1  # dBFS
AFFECT_DECIMALS = 3
LATENCY_DECIMALS = 1  # ms
WARMUP_DECIMALS = 3
VOICED_DECIMALS = 2  # s, the VAD works on 10 ms frames
CALLBACK_MS_DECIMALS = 3  # the callback runs for microseconds
AFFECT_TABLE_CACHE = 8  # label sets whose valence/arousal table is kept (one per loaded model)

VALENCE_AROUSAL: Mapping[str, tuple[float, float]] = {
    # label: (valence, arousal), each in [-1, 1]
    "neutral": (0.0, 0.0),
    "calm": (0.3, -0.5),
    "happy": (0.8, 0.5),
    "sad": (-0.7, -0.5),
    "angry": (-0.7, 0.8),
    "fearful": (-0.6, 0.6),
    "disgust": (-0.6, 0.2),
    "surprised": (0.3, 0.8),
    "boredom": (-0.3, -0.7),
}
LABEL_ALIASES: Mapping[str, str] = {
    "fear": "fearful", "anger": "angry", "happiness": "happy", "joy": "happy", "sadness": "sad",
    "disgusted": "disgust", "surprise": "surprised", "bored": "boredom",
}


def affect_coordinates(label: str) -> tuple[float, float]:
    key = label.lower()
    return VALENCE_AROUSAL.get(LABEL_ALIASES.get(key, key), (0.0, 0.0))


@functools.lru_cache(maxsize=AFFECT_TABLE_CACHE)
def _affect_table(labels: tuple[str, ...]) -> np.ndarray:
    """``(len(labels), 2)`` valence/arousal coordinates, made once per label set (read-only)."""
    table = np.array([affect_coordinates(lbl) for lbl in labels], dtype=np.float64)
    table.flags.writeable = False
    return table


def valence_arousal(labels: Sequence[str], probabilities: np.ndarray | None) -> tuple[float, float]:
    """Probability-weighted (valence, arousal), clipped to [-1, 1]; (0, 0) without probabilities."""
    if probabilities is None:
        return 0.0, 0.0
    coords = _affect_table(tuple(labels))
    p = np.asarray(probabilities, dtype=np.float64)
    v, a = (p @ coords).tolist()
    return round(_clip_unit(v), AFFECT_DECIMALS), round(_clip_unit(a), AFFECT_DECIMALS)


def _clip_unit(x: float) -> float:
    """``np.clip(x, -1, 1)`` for one float (NaN and -0.0 pass unchanged, as there), without its overhead."""
    return -1.0 if x < -1.0 else 1.0 if x > 1.0 else x


def rounded(x: float | None, decimals: int) -> float | None:
    return None if x is None else round(float(x), decimals)


def by_label(labels: Sequence[str], p: np.ndarray | None) -> dict[str, float] | None:
    if p is None:
        return None
    return {lbl: round(v, PROB_DECIMALS) for lbl, v in zip(labels, np.asarray(p).tolist(), strict=False)}


def t_round(t: float) -> float:
    return round(float(t), TIME_DECIMALS)


class _Event:
    type = "event"

    def to_json(self) -> dict:
        out: dict = {"schema": SCHEMA_VERSION, "type": self.type}
        kind: type = type(self)
        for name in _field_names(kind):
            out[name] = getattr(self, name)
        return out


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    """The dataclass fields of an event class, in order (looked up once per class)."""
    return tuple(f.name for f in fields(cls))


@dataclass(frozen=True)
class StartEvent(_Event):
    type = "start"
    version: str
    model: str
    labels: list[str]
    device: str
    source_rate: int
    source_channels: int
    sample_rate: int
    window_s: float
    hop_s: float
    live: bool
    smoothing: dict


@dataclass(frozen=True)
class PredictionEvent(_Event):
    type = "prediction"
    t_start: float
    t_end: float
    emotion: str  # smoothed: a label or "silence"
    confidence: float | None
    probabilities: dict[str, float] | None  # smoothed; None in silence
    raw_probabilities: dict[str, float] | None  # this window's model output; None without speech
    speech: bool
    voiced_s: float
    level_dbfs: float
    valence: float
    arousal: float
    latency_ms: float | None
    dropped_blocks: int
    skipped_windows: int
    normalizer_warmup: float | None


@dataclass(frozen=True)
class ChangeEvent(_Event):
    type = "change"
    t_start: float
    t_end: float
    previous: str
    emotion: str
    confidence: float | None
    probabilities: dict[str, float] | None
    valence: float
    arousal: float
    latency_ms: float | None


@dataclass(frozen=True)
class StatusEvent(_Event):
    type = "status"
    t: float
    emotion: str
    windows: int
    skipped_windows: int
    dropped_blocks: int
    dropped_s: float
    input_overflows: int
    nonfinite_samples: int
    queue_depth: int
    queue_capacity: int
    callback_max_ms: float | None
    latency_ms: float | None
    normalizer_warmup: float | None
    model: str
    device: str
    device_state: str = "ok"  # one of DEVICE_STATES
    gap_s: float | None = None  # stalled/lost/waiting/back: seconds without audio in this episode
    gap_windows: int = 0  # windows so far that fell in gaps (a lost device): not analysed


DEVICE_STATES = ("ok", "stalled", "lost", "waiting", "back")


END_REASONS = ("end_of_input", "stopped", "duration", "error")


@dataclass(frozen=True)
class EndEvent(_Event):
    type = "end"
    t: float
    reason: str  # one of END_REASONS
    windows: int
    skipped_windows: int
    dropped_blocks: int
    error: str | None
    gap_s: float = 0.0  # seconds of audio counted as silence because the device was gone
    gap_windows: int = 0
