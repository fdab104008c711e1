"""One audio stream's processing state: raw blocks in, events out. No threads, no queues.

``StreamProcessor`` chains, for one stream: gap filling (dropped blocks become silence
so the audio clock stays right) -> ``Converter`` (16 kHz mono) -> ``Windower`` ->
speech gate (``gate.SpeechGate``) -> features -> online speaker normaliser (if the model ships one) -> model ->
``Smoother`` -> events. It is split in two steps so the runner can skip stale
windows under overload: ``ingest`` (cheap: conversion and windowing) and ``process``
(the expensive part, per window). ``predict`` and the library use it synchronously;
``runner`` runs it in its worker thread.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from . import SAMPLE_RATE, __version__, features, vad
from .audio.convert import Converter
from .audio.windowing import Window, Windower
from .errors import ConfigError, ModelError
from .events import (
    LATENCY_DECIMALS,
    LEVEL_DECIMALS,
    PROB_DECIMALS,
    VOICED_DECIMALS,
    WARMUP_DECIMALS,
    ChangeEvent,
    PredictionEvent,
    StartEvent,
    by_label,
    rounded,
    t_round,
    valence_arousal,
)
from .gate import SpeechGate
from .normalize import NormalizerParams, OnlineNormalizer
from .smoothing import SILENCE, Smoother, SmoothingParams

MIN_WINDOW_S = 0.5
MAX_WINDOW_S = 10.0
MIN_HOP_S = 0.05
GAP_FILL_S = 1.0  # a long gap is filled with silence in pieces of this length
MS_PER_S = 1000.0


class ModelLike(Protocol):
    labels: tuple[str, ...]
    normalizer: NormalizerParams | None
    vad: vad.VadParams

    @property
    def name(self) -> str: ...

    def predict_proba(self, x: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class StreamConfig:
    """Framing and smoothing of a stream (CLI: ``--window``, ``--hop`` and the smoothing flags)."""

    window_s: float = 2.0
    hop_s: float = 0.5
    smoothing: SmoothingParams = SmoothingParams()

    def __post_init__(self) -> None:
        if not (math.isfinite(self.window_s) and MIN_WINDOW_S <= self.window_s <= MAX_WINDOW_S):
            raise ConfigError(f"--window must be between {MIN_WINDOW_S:g} and {MAX_WINDOW_S:g} s, got {self.window_s}")
        if not (math.isfinite(self.hop_s) and MIN_HOP_S <= self.hop_s <= self.window_s):
            raise ConfigError(f"--hop must be between {MIN_HOP_S:g} s and the window ({self.window_s:g} s), "
                              f"got {self.hop_s}")

    @property
    def window_samples(self) -> int:
        return int(round(self.window_s * SAMPLE_RATE))

    @property
    def hop_samples(self) -> int:
        return int(round(self.hop_s * SAMPLE_RATE))


@dataclass(frozen=True)
class Pending:
    """A window waiting to be processed, with the arrival time of the block that completed it."""

    window: Window
    arrival: float


class StreamProcessor:
    """Blocks of one source -> windows -> events. ``live`` adds latency to the events."""

    def __init__(self, model: ModelLike, source_rate: int, config: StreamConfig | None = None,
                 *, live: bool = False) -> None:
        self.model = model
        self.config = config if config is not None else StreamConfig()
        self.labels = tuple(model.labels)
        try:
            self.smoother = Smoother(self.labels, self.config.smoothing)
        except ValueError as e:
            raise ModelError(f"model {model.name}: {e}") from None
        self.converter = Converter(source_rate)
        self.windower = Windower(self.config.window_samples, self.config.hop_samples)
        self.normalizer = OnlineNormalizer(model.normalizer) if model.normalizer is not None else None
        self.frames = features.FrameCache()  # analyses only the frames each window adds
        self.gate = SpeechGate(model.vad)  # its neural state follows the stream, hop by hop
        self.live = live
        self.windows = 0  # processed
        self.skipped = 0
        self.speech_windows = 0
        self.last_latency_ms: float | None = None
        self.gap_windows = 0  # windows that fell in a gap (a lost device): neither analysed nor skipped
        self.gap_samples = 0  # 16 kHz samples of such gaps, counted as silence
        self._next_frame = 0

    # ------------------------------------------------------------ cheap part

    @property
    def samples_seen(self) -> int:
        """16 kHz samples received so far (the stream's audio clock)."""
        return self.windower.samples_seen

    @property
    def time_s(self) -> float:
        return self.samples_seen / SAMPLE_RATE

    def ingest(self, start: int, data: np.ndarray, arrival: float = 0.0) -> list[Pending]:
        """A raw block whose first frame is ``start``: fills any gap before it, converts, windows."""
        out: list[Pending] = []
        gap = start - self._next_frame
        if gap > 0:
            channels = data.shape[1] if data.ndim == 2 else 1
            piece = max(1, int(GAP_FILL_S * self.converter.rate))
            while gap > 0:
                n = min(gap, piece)
                out += self._push(self.converter.process(np.zeros((n, channels), dtype=np.float32)), arrival)
                gap -= n
        self._next_frame = max(self._next_frame, start + len(data))
        if gap < 0:  # overlaps what we already have: keep only the new part
            data = data[-gap:]
        if len(data):
            out += self._push(self.converter.process(data), arrival)
        return out

    def fill_gap(self, frames: int, channels: int, arrival: float) -> list[Pending]:
        """Audio that never arrived (the device was gone): ``frames`` source frames of silence, so the
        audio clock keeps counting. The windows ending inside the gap are counted in ``gap_windows``,
        not analysed and not kept (memory stays bounded whatever the gap's length), except the last,
        returned, so that the smoothing sees the silence."""
        piece = max(1, int(GAP_FILL_S * self.converter.rate))
        before = self.samples_seen
        last: Window | None = None
        left = frames
        while left > 0:
            n = min(left, piece)
            for w in self.windower.push(self.converter.process(np.zeros((n, channels), dtype=np.float32))):
                if last is not None:
                    self.gap_windows += 1
                last = w
            left -= n
        self._next_frame += max(0, frames)
        self.gap_samples += self.samples_seen - before
        return [Pending(last, arrival)] if last is not None else []

    def finish(self, arrival: float = 0.0) -> list[Pending]:
        """End of a finite stream: the resampler's tail and the last partial window."""
        out = self._push(self.converter.flush(), arrival)
        out += [Pending(w, arrival) for w in self.windower.flush()]
        return out

    def _push(self, samples: np.ndarray, arrival: float) -> list[Pending]:
        return [Pending(w, arrival) for w in self.windower.push(samples)] if len(samples) else []

    def skip(self, pending: Pending) -> None:
        self.skipped += 1

    # ------------------------------------------------------------ expensive part

    def start_event(self, device: str, source_rate: int, source_channels: int) -> StartEvent:
        return StartEvent(version=__version__, model=self.model.name, labels=list(self.labels), device=device,
                          source_rate=source_rate, source_channels=source_channels, sample_rate=SAMPLE_RATE,
                          window_s=self.config.window_s, hop_s=self.config.hop_s, live=self.live,
                          smoothing=self.config.smoothing.to_json())

    @property
    def normalizer_warmup(self) -> float | None:
        return None if self.normalizer is None else round(self.normalizer.warmup, WARMUP_DECIMALS)

    def classify(self, window: Window) -> tuple[vad.VadResult, np.ndarray | None]:
        """Speech gate, and for speech: features -> normaliser -> model probabilities."""
        analysis = self.frames.analyze(window.samples, window.end - len(window.samples))
        decision = self.gate.decide(window, analysis)
        if not decision.speech:
            return decision, None
        x = features.functionals(analysis)
        if self.normalizer is not None:
            self.normalizer.update(x)
            x = self.normalizer.transform(x)
        probs = np.asarray(self.model.predict_proba(x[None, :]), dtype=np.float64).reshape(-1)
        if probs.shape != (len(self.labels),):
            raise ModelError(f"model {self.model.name} returned {probs.shape[-1]} probabilities for "
                             f"{len(self.labels)} labels; re-export the model and its card together")
        if not math.isfinite(probs.sum()):  # one cheap check; rare repair
            probs = np.where(np.isfinite(probs), probs, 0.0)
        return decision, probs

    def process(self, pending: Pending, dropped_blocks: int = 0) -> list[PredictionEvent | ChangeEvent]:
        """The events of one window: a prediction, and a change when the smoothed emotion changed."""
        w = pending.window
        decision, raw = self.classify(w)
        state = self.smoother.update(w.end / SAMPLE_RATE, decision.speech, raw, voiced_s=decision.voiced_s)
        self.windows += 1
        self.speech_windows += int(decision.speech)
        valence, arousal = valence_arousal(self.labels, state.probabilities)
        probabilities = by_label(self.labels, state.probabilities)
        confidence = rounded(state.confidence, PROB_DECIMALS)
        latency = None
        if self.live:
            latency = round((time.monotonic() - pending.arrival) * MS_PER_S, LATENCY_DECIMALS)
            self.last_latency_ms = latency
        t_start, t_end = t_round(w.start / SAMPLE_RATE), t_round(w.end / SAMPLE_RATE)
        events: list[PredictionEvent | ChangeEvent] = [PredictionEvent(
            t_start=t_start, t_end=t_end, emotion=state.emotion, confidence=confidence,
            probabilities=probabilities, raw_probabilities=by_label(self.labels, raw), speech=decision.speech,
            voiced_s=round(decision.voiced_s, VOICED_DECIMALS), level_dbfs=round(decision.level_dbfs, LEVEL_DECIMALS),
            valence=valence, arousal=arousal, latency_ms=latency, dropped_blocks=dropped_blocks,
            skipped_windows=self.skipped, normalizer_warmup=self.normalizer_warmup)]
        if state.changed:
            events.append(ChangeEvent(t_start=t_start, t_end=t_end, previous=state.previous, emotion=state.emotion,
                                      confidence=confidence, probabilities=probabilities, valence=valence,
                                      arousal=arousal, latency_ms=latency))
        return events

    @property
    def emotion(self) -> str:
        return self.smoother.emotion


__all__ = ["StreamConfig", "StreamProcessor", "Pending", "SILENCE"]
