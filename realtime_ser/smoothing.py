"""Smoothing of per-window probabilities into a stable current emotion. Pure.

Four mechanisms, all timed in seconds of *audio* (never the wall clock), so a replay
gives the same states as live capture of the same sound:

1. **Exponential moving average** of the probabilities of speech windows, with time
   constant ``tau_s``, weighted by how much speech each window holds: a window ``dt``
   seconds after the previous window (of any kind; since 0 for the first) holding
   ``voiced_s`` seconds of voiced frames has *speech weight*
   ``w = min(1, voiced_s / full_voiced_s)`` and enters the average with
   ``alpha = 1 - exp(-w * dt / tau_s)`` (0.39 for a full window at the default 0.5 s hop
   and 1 s tau). Weighting by elapsed time keeps the behaviour when the hop changes or
   the runtime skips stale windows under overload; weighting by speech makes a window
   that catches only the edge of an utterance (its first or last syllable) count little,
   so where the window grid happens to fall at speech onset and offset matters little.
2. **Hysteresis.** Another emotion takes over when its smoothed probability reaches
   ``enter`` *and* exceeds the current one's; the current emotion is also given up
   (for the most probable one) when its own smoothed probability falls below ``exit``
   (``exit <= enter``). Between the two thresholds nothing changes.
3. **Minimum dwell.** No change from one emotion to another within ``min_dwell_s`` of
   the previous change.

4. **Onset.** Leaving silence needs evidence, like the minimum speech duration of a
   VAD iterator: after silence the state stays ``"silence"`` (*pending*) until the
   speech windows have accumulated ``onset_s`` seconds of *speech evidence* (the sum of
   ``w * dt``; a full window at the default hop adds 0.5 s). The average is built during
   the pending period as a properly normalised weighted mean (each window with its own
   ``alpha``, none of them set at once), and the first emotion is its most probable
   label (the dwell starts there). ``onset_s = 0`` declares on the first speech window.

**Silence.** The state is ``"silence"`` (no emotion is claimed) at the start and
whenever the voice-activity gate has reported no speech for ``silence_hold_s`` seconds
of audio since the end of the last speech window; entering silence (or giving up a
pending onset) clears the average and the evidence. Non-speech windows shorter than
the hold change nothing: the state and the average are held.

With the defaults, one contrary window never flips the state (its smoothed
probability reaches at most ``alpha`` = 0.39 < ``enter``); two full ones in a row do
(0.63). The first emotion after silence comes once the speech windows hold 0.75 s of
evidence: one to two hops after the first speech window (the first ones, holding
only the utterance's first syllables, count for less).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

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
# A window holding this many seconds of voiced frames counts fully (a 2 s window inside fluent
# speech holds 1.0-1.5 s: RAVDESS speech windows have a median of 1.29 s, a 25th percentile of 1.07 s).
DEFAULT_FULL_VOICED_S = 1.0
# Seconds of speech evidence (speech weight x audio time) before the first emotion after silence:
# two full windows at the 0.5 s hop, about three at an utterance's start, whose windows hold only
# its first syllables (on RAVDESS, 1.0 s instead gave 2 more phase-robust files of 48 but up to 1.5 s
# more latency; 0.75 s keeps the first emotion within 1 s of the first speech window).
DEFAULT_ONSET_S = 0.75
MAX_TAU_S = 600.0
MAX_FULL_VOICED_S = 10.0  # the longest analysis window (stream.MAX_WINDOW_S)
MAX_ONSET_S = 60.0


@dataclass(frozen=True)
class SmoothingParams:
    """Smoothing settings (CLI: ``--smooth-tau``, ``--enter``, ``--exit``, ``--min-dwell``, ``--silence-hold``,
    ``--onset``, ``--full-voiced``)."""

    tau_s: float = DEFAULT_TAU_S
    enter: float = DEFAULT_ENTER
    exit: float = DEFAULT_EXIT
    min_dwell_s: float = DEFAULT_MIN_DWELL_S
    silence_hold_s: float = DEFAULT_SILENCE_HOLD_S
    onset_s: float = DEFAULT_ONSET_S
    full_voiced_s: float = DEFAULT_FULL_VOICED_S

    def __post_init__(self) -> None:
        for name in ("tau_s", "enter", "exit", "min_dwell_s", "silence_hold_s", "onset_s", "full_voiced_s"):
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
        if not 0.0 <= self.onset_s <= MAX_ONSET_S:
            raise ValueError(f"onset evidence must be in [0, {MAX_ONSET_S:g}] s, got {self.onset_s}")
        if not 0.0 < self.full_voiced_s <= MAX_FULL_VOICED_S:
            raise ValueError(f"full-weight voiced time must be in (0, {MAX_FULL_VOICED_S:g}] s, "
                             f"got {self.full_voiced_s}")

    def speech_weight(self, voiced_s: float | None) -> float:
        """How much a speech window counts, in [0, 1]: 1 when its voiced time is unknown."""
        if voiced_s is None or not math.isfinite(voiced_s):
            return 1.0
        return min(1.0, max(0.0, voiced_s) / self.full_voiced_s)

    def to_json(self) -> dict:
        return {"tau_s": self.tau_s, "enter": self.enter, "exit": self.exit, "min_dwell_s": self.min_dwell_s,
                "silence_hold_s": self.silence_hold_s, "onset_s": self.onset_s, "full_voiced_s": self.full_voiced_s}


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

    p = np.asarray(p, dtype=np.float64)
    total = p.sum()
    if math.isfinite(total) and total > 0 and p.min() >= 0.0:  # the usual case, in three cheap calls
        return p / total
    p = np.clip(np.nan_to_num(p, nan=0.0, posinf=0.0, neginf=0.0), 0.0, None)
    total = p.sum()
    return p / total if total > 0 else np.full(len(p), 1.0 / len(p))


class Smoother:
    """EMA + hysteresis + dwell + onset + silence state, fed one window at a time in stream order."""

    def __init__(self, labels: Sequence[str], params: SmoothingParams | None = None) -> None:
        if not labels:
            raise ValueError("need at least one label")
        if SILENCE in labels:
            raise ValueError(f"{SILENCE!r} is reserved for the no-speech state and cannot be a label")
        self.labels = tuple(labels)
        self.params = params if params is not None else SmoothingParams()
        self.emotion = SILENCE
        self.ema: np.ndarray | None = None  # the smoothed distribution once an emotion is declared
        self._acc: np.ndarray | None = None  # pending onset: sum of decayed alpha * p ...
        self._acc_weight = 0.0  # ... and of decayed alpha (their ratio is the weighted mean)
        self._evidence_s = 0.0  # pending onset: speech weight x seconds accumulated so far
        self._last_t: float | None = None
        self._last_speech_t: float | None = None
        self._last_change_t: float | None = None

    @property
    def pending(self) -> bool:
        """Speech has started after silence but not yet given ``onset_s`` of evidence (state: silence)."""
        return self._acc is not None

    def update(self, t_end: float, speech: bool, probabilities: np.ndarray | None = None,
               voiced_s: float | None = None) -> SmoothedState:
        """One window ending at ``t_end`` seconds; ``probabilities`` are required when ``speech``.

        ``voiced_s``: seconds of voiced frames in the window (its speech weight; None counts fully)."""
        if self._last_t is not None and t_end < self._last_t:
            raise ValueError(f"windows must come in stream order (got t_end {t_end} after {self._last_t})")
        dt = t_end - (self._last_t if self._last_t is not None else 0.0)
        self._last_t = t_end
        previous = self.emotion
        if speech:
            if probabilities is None or len(probabilities) != len(self.labels):
                raise ValueError("a speech window needs one probability per label")
            self._speech(t_end, max(0.0, dt) * self.params.speech_weight(voiced_s), as_distribution(probabilities))
        elif (self._last_speech_t is not None and (self.emotion != SILENCE or self.pending)
              and t_end - self._last_speech_t >= self.params.silence_hold_s):
            if self.emotion != SILENCE:
                self._last_change_t = t_end
            self._to_silence()
        changed = self.emotion != previous
        if self.emotion == SILENCE or self.ema is None:
            return SmoothedState(self.emotion, None, None, changed, previous)
        i = self.labels.index(self.emotion)
        return SmoothedState(self.emotion, float(self.ema[i]), self.ema.copy(), changed, previous)

    def _to_silence(self) -> None:
        self.emotion = SILENCE
        self.ema = None
        self._acc = None
        self._acc_weight = 0.0
        self._evidence_s = 0.0

    def _speech(self, t_end: float, evidence_s: float, p: np.ndarray) -> None:
        import numpy as np

        prm = self.params
        alpha = 1.0 - math.exp(-evidence_s / prm.tau_s)
        self._last_speech_t = t_end
        if self.ema is None:  # silence or pending: a weighted mean until there is enough evidence
            if self._acc is None:
                self._acc = np.zeros(len(self.labels))
            self._acc = (1.0 - alpha) * self._acc + alpha * p
            self._acc_weight = (1.0 - alpha) * self._acc_weight + alpha
            self._evidence_s += evidence_s
            if self._evidence_s < prm.onset_s or self._acc_weight <= 0.0:
                return
            self.ema = as_distribution(self._acc / self._acc_weight)
            self._acc = None
            self.emotion = self.labels[int(np.argmax(self.ema))]
            self._last_change_t = t_end
            return
        self.ema = as_distribution((1.0 - alpha) * self.ema + alpha * p)
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
