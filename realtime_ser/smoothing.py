"""Smoothing of per-window probabilities into a stable current emotion. Pure.

Three mechanisms, all timed in seconds of *audio* (never the wall clock), so a replay
gives the same states as live capture of the same sound:

1. **Exponential moving average** of the probabilities of speech windows, with time
   constant ``tau_s``: a window ``dt`` seconds after the previous speech window gets
   weight ``alpha = 1 - exp(-dt / tau_s)`` (0.39 for the default 0.5 s hop and 1 s tau).
   Weighting by elapsed time keeps the behaviour when the hop changes or the runtime
   skips stale windows under overload.
2. **Hysteresis.** Another emotion takes over when its smoothed probability reaches
   ``enter`` *and* exceeds the current one's; the current emotion is also given up
   (for the most probable one) when its own smoothed probability falls below ``exit``
   (``exit <= enter``). Between the two thresholds nothing changes.
3. **Minimum dwell.** No change from one emotion to another within ``min_dwell_s`` of
   the previous change.

**Silence.** The state is ``"silence"`` (no emotion is claimed) at the start and
whenever the voice-activity gate has reported no speech for ``silence_hold_s`` seconds
of audio since the end of the last speech window; entering silence clears the average.
The first speech window after silence sets the average to its own probabilities and
the state to their most probable label at once (the dwell starts there). Non-speech
windows shorter than the hold change nothing: the state and the average are held.

With the defaults, one contrary window never flips the state (its smoothed
probability reaches only ``alpha`` = 0.39 < ``enter``); two in a row do (0.63).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:  # for annotations only
    import numpy as np

# numpy is imported inside the functions that use it: the CLI reads the defaults below to
# build its help, and `realtime-ser --help` must not pay for numpy.

SILENCE = "silence"

DEFAULT_TAU_S = 1.0
DEFAULT_ENTER = 0.5
DEFAULT_EXIT = 0.35
DEFAULT_MIN_DWELL_S = 1.0
DEFAULT_SILENCE_HOLD_S = 1.0
MAX_TAU_S = 600.0


@dataclass(frozen=True)
class SmoothingParams:
    """Smoothing settings (CLI: ``--smooth-tau``, ``--enter``, ``--exit``, ``--min-dwell``, ``--silence-hold``)."""

    tau_s: float = DEFAULT_TAU_S
    enter: float = DEFAULT_ENTER
    exit: float = DEFAULT_EXIT
    min_dwell_s: float = DEFAULT_MIN_DWELL_S
    silence_hold_s: float = DEFAULT_SILENCE_HOLD_S

    def __post_init__(self) -> None:
        for name in ("tau_s", "enter", "exit", "min_dwell_s", "silence_hold_s"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"smoothing {name} must be a finite number, got {value!r}")
        if not 0.0 < self.tau_s <= MAX_TAU_S:
            raise ValueError(f"smoothing time constant must be in (0, {MAX_TAU_S:g}] s, got {self.tau_s}")
        if not 0.0 < self.enter <= 1.0:
            raise ValueError(f"enter threshold must be in (0, 1], got {self.enter}")
        if not 0.0 <= self.exit <= self.enter:
            raise ValueError(f"exit threshold must be in [0, enter={self.enter}], got {self.exit}")
        if self.min_dwell_s < 0.0:
            raise ValueError(f"minimum dwell must be >= 0 s, got {self.min_dwell_s}")
        if self.silence_hold_s < 0.0:
            raise ValueError(f"silence hold must be >= 0 s, got {self.silence_hold_s}")

    def to_json(self) -> dict:
        return {"tau_s": self.tau_s, "enter": self.enter, "exit": self.exit, "min_dwell_s": self.min_dwell_s,
                "silence_hold_s": self.silence_hold_s}


@dataclass(frozen=True)
class SmoothedState:
    """The smoother's answer for one window."""

    emotion: str  # a label, or SILENCE
    confidence: float | None  # smoothed probability of ``emotion`` (None in silence)
    probabilities: np.ndarray | None  # the smoothed distribution (None in silence)
    changed: bool  # ``emotion`` differs from the previous window's
    previous: str  # the emotion before this window


def as_distribution(p: np.ndarray) -> np.ndarray:
    """Non-negative, finite, summing to 1 (uniform when nothing is left)."""
    import numpy as np

    p = np.nan_to_num(np.asarray(p, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    p = np.clip(p, 0.0, None)
    total = p.sum()
    return p / total if total > 0 else np.full(len(p), 1.0 / len(p))


class Smoother:
    """EMA + hysteresis + dwell + silence state, fed one window at a time in stream order."""

    def __init__(self, labels: Sequence[str], params: SmoothingParams | None = None) -> None:
        if not labels:
            raise ValueError("need at least one label")
        if SILENCE in labels:
            raise ValueError(f"{SILENCE!r} is reserved for the no-speech state and cannot be a label")
        self.labels = tuple(labels)
        self.params = params if params is not None else SmoothingParams()
        self.emotion = SILENCE
        self.ema: np.ndarray | None = None
        self._last_t: float | None = None
        self._last_speech_t: float | None = None
        self._last_change_t: float | None = None

    def update(self, t_end: float, speech: bool, probabilities: np.ndarray | None = None) -> SmoothedState:
        """One window ending at ``t_end`` seconds; ``probabilities`` are required when ``speech``."""
        if self._last_t is not None and t_end < self._last_t:
            raise ValueError(f"windows must come in stream order (got t_end {t_end} after {self._last_t})")
        self._last_t = t_end
        previous = self.emotion
        if speech:
            if probabilities is None or len(probabilities) != len(self.labels):
                raise ValueError("a speech window needs one probability per label")
            self._speech(t_end, as_distribution(probabilities))
        elif (self.emotion != SILENCE and self._last_speech_t is not None
              and t_end - self._last_speech_t >= self.params.silence_hold_s):
            self.emotion = SILENCE
            self.ema = None
            self._last_change_t = t_end
        changed = self.emotion != previous
        if self.emotion == SILENCE or self.ema is None:
            return SmoothedState(self.emotion, None, None, changed, previous)
        i = self.labels.index(self.emotion)
        return SmoothedState(self.emotion, float(self.ema[i]), self.ema.copy(), changed, previous)

    def _speech(self, t_end: float, p: np.ndarray) -> None:
        import numpy as np

        prm = self.params
        if self.ema is None:
            self.ema = p
            self.emotion = self.labels[int(np.argmax(p))]
            self._last_change_t = t_end
            self._last_speech_t = t_end
            return
        dt = max(0.0, t_end - (self._last_speech_t if self._last_speech_t is not None else t_end))
        alpha = 1.0 - math.exp(-dt / prm.tau_s)
        self.ema = as_distribution((1.0 - alpha) * self.ema + alpha * p)
        self._last_speech_t = t_end
        cur = self.labels.index(self.emotion)
        best = int(np.argmax(self.ema))
        if best == cur:
            return
        dwelt = self._last_change_t is None or t_end - self._last_change_t >= prm.min_dwell_s
        takes_over = self.ema[best] >= prm.enter and self.ema[best] > self.ema[cur]
        let_go = self.ema[cur] < prm.exit
        if dwelt and (takes_over or let_go):
            self.emotion = self.labels[best]
            self._last_change_t = t_end
