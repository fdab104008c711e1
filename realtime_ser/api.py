"""The library API, for applications that embed realtime-ser rather than read its stdout.

Events are the same dicts the CLI prints as JSON lines (see the README and
``realtime_ser/schema/events.schema.json``)::

    from realtime_ser.api import Tracker, predict_file

    tracker = Tracker()                        # the shipped model; or Tracker(model="my.onnx")
    for event in tracker.replay("talk.wav"):   # pace="fast" by default; "realtime" behaves like a mic
        if event["type"] == "change":
            print(event["t_end"], event["emotion"])

    with Tracker() as tracker:                 # live microphone; Ctrl-C or tracker.stop() ends it
        tracker.listen(callback=avatar.update, device="USB")   # blocks; or iterate tracker.listen()

    predict_file("clip.wav")   # {"file": ..., "emotion": ..., "probabilities": {...}, "speech_s": ...}

    tracker = Tracker(profile="alice")         # start from a speaker profile (``realtime-ser calibrate``)
    ...; tracker.save_profile()                # keep what this session adapted (atomic write)

Errors are ``realtime_ser.errors.SerError`` subclasses with a one-line message.
``listen`` and ``replay`` run the capture and the model in background threads; a
``callback`` is called from the caller's thread, in order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import SAMPLE_RATE
from .audio.sources import FileSource, MicSource
from .core import ModelLike, Pending, StreamConfig, StreamProcessor
from .events import PROB_DECIMALS, t_round
from .runner import DEFAULT_QUEUE_S, DEFAULT_STATUS_EVERY_S, Pipeline, PipelineConfig
from .smoothing import SILENCE, SmoothingParams

if TYPE_CHECKING:  # for annotations only (profiles load lazily)
    from .profiles import Profile

EventCallback = Callable[[dict], None]


def load_model(model: ModelLike | str | Path | None) -> ModelLike:
    """A loaded model: ``None`` is the shipped one, a path is an .onnx file with its card."""
    if model is None or isinstance(model, (str, Path)):
        from .model import Model  # onnxruntime is imported only here

        return Model.load(model)
    return model


def stream_config(model: ModelLike, window_s: float | None = None, hop_s: float | None = None,
                  smoothing: SmoothingParams | None = None) -> StreamConfig:
    """The framing: the model card's window and hop unless overridden."""
    return StreamConfig(window_s=float(window_s if window_s is not None else getattr(model, "window_s", 2.0)),
                        hop_s=float(hop_s if hop_s is not None else getattr(model, "hop_s", 0.5)),
                        smoothing=smoothing if smoothing is not None else SmoothingParams())


class Tracker:
    """Speech-emotion tracking of a microphone or a file, as a stream of event dicts.

    The events are the dicts ``listen`` writes as JSON lines (``realtime_ser/schema/events.schema.json``):
    ``start``, ``prediction``, ``change``, ``status``, ``end``. Times in them are seconds of audio,
    counted from samples. A tracker runs one stream at a time; use it as a context manager to release
    the device or file.
    """

    def __init__(self, model: ModelLike | str | Path | None = None, *, smoothing: SmoothingParams | None = None,
                 window_s: float | None = None, hop_s: float | None = None,
                 status_every_s: float = DEFAULT_STATUS_EVERY_S, queue_s: float = DEFAULT_QUEUE_S,
                 profile: Profile | str | Path | None = None, device_timeout_s: float | None = None) -> None:
        """Load the model and build the stream's configuration (once; every stream reuses it).

        Every argument but ``model`` is keyword-only.

        Args:
            model: ``None`` (default) for the shipped model, a path to an ``.onnx`` with its ``.json``
                card beside it, or an already loaded model.
            smoothing: the smoothing parameters (seconds of audio, probabilities); default
                ``SmoothingParams()`` (tau 1.0 s, enter 0.5, exit 0.35, dwell 1.0 s, ...).
            window_s, hop_s: analysis window and hop in seconds; default: the model card's (2.0, 0.5).
            status_every_s: a ``status`` event every this many seconds of audio; 0 for none; default 5.
            queue_s: capture queue length in seconds of audio (live input); default 5.
            profile: a speaker profile (``profiles.Profile``, a name or a path) to start the normaliser
                from; default none.
            device_timeout_s: a lost input device is waited for and re-opened; give up (an
                ``AudioDeviceError``) after this many seconds; ``None`` (default) waits until stopped,
                0 gives up at once.

        Raises:
            ModelError: the model or its card is missing, corrupted or mismatched; the profile does not
                fit the model.
            ConfigError: a window, hop, smoothing, queue or timeout value out of range.
        """
        self.model = load_model(model)
        self.config = PipelineConfig(stream=stream_config(self.model, window_s, hop_s, smoothing),
                                     queue_s=queue_s, status_every_s=status_every_s,
                                     device_timeout_s=device_timeout_s)
        self._pipeline: Pipeline | None = None
        self.profile = load_profile(profile, self.model)

    def save_profile(self) -> Path | None:
        """Write the last stream's adapted statistics into the profile (atomic); ``None`` without a profile."""
        from . import profiles

        proc = self._pipeline.processor if self._pipeline is not None else None
        if self.profile is None or proc is None or proc.normalizer is None:
            return None
        self.profile.absorb(proc, proc.speech_windows * proc.config.hop_s)
        return profiles.save(self.profile)

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.model.labels)

    def _run(self, source: MicSource | FileSource, callback: EventCallback | None,
             duration_s: float | None) -> Iterator[dict] | None:
        cfg = self.config if duration_s is None else dataclasses.replace(self.config, duration_s=duration_s)
        pipeline = Pipeline(source, self.model, cfg)
        self._pipeline = pipeline
        if self.profile is not None:
            pipeline.start()
            assert pipeline.processor is not None  # start() made it
            self.profile.apply(pipeline.processor)
        events = pipeline.events()
        if callback is None:
            return events
        for event in events:
            callback(event)
        return None

    def replay(self, path: str | Path, pace: str = "fast", block_frames: int | None = None,
               callback: EventCallback | None = None) -> Iterator[dict] | None:
        """Events of a file (any WAV/FLAC/OGG/MP3, 8-192 kHz, any channel count).

        Args:
            path: the audio file.
            pace: ``"fast"`` (default: as fast as possible, nothing skipped) or ``"realtime"`` (released
                on the wall clock, exactly like a microphone).
            block_frames: frames per read block at the file's own rate; default 50 ms (2 s when fast).
            callback: if given, called with each event and ``replay`` returns ``None`` when the stream
                ends; otherwise an iterator of the events is returned.

        Raises:
            InputAudioError: the file is missing, unreadable, empty or not audio (also while reading).
        """
        return self._run(FileSource(path, pace=pace, block_frames=block_frames), callback, None)

    def listen(self, device: int | str | None = None, callback: EventCallback | None = None,
               block_frames: int | None = None, duration_s: float | None = None) -> Iterator[dict] | None:
        """Events of a live input device.

        Args:
            device: the device's index, part of its name, or ``None`` (default) for the system default.
            callback: as for ``replay``; without one, an iterator of the events is returned.
            block_frames: frames per capture block at the device's rate; default 50 ms.
            duration_s: stop after this many seconds of audio; default: until ``stop()``.

        Raises:
            AudioDeviceError: no such device, it cannot be opened, or (with ``device_timeout_s``) it
                was gone for longer than that.
        """
        return self._run(MicSource(device, block_frames=block_frames), callback, duration_s)

    def stop(self) -> None:
        """End the running stream (its ``end`` event still arrives)."""
        if self._pipeline is not None:
            self._pipeline.stop()

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pipeline is not None:
            self._pipeline.close()


def load_profile(profile: Profile | str | Path | None, model: ModelLike) -> Profile | None:
    """``None``, a ``profiles.Profile`` or a profile name/path -> a profile checked against ``model``."""
    if profile is None:
        return None
    from . import profiles

    if isinstance(profile, profiles.Profile):
        profile.check_model(model)
        return profile
    return profiles.load(str(profile), model)


def summarize_file(path: str | Path, model: ModelLike, config: StreamConfig, profile: Profile | None = None,
                   normalizer_state: dict | None = None) -> dict:
    """One file, synchronously (no threads): mean probabilities over its speech windows. The normaliser
    starts from ``profile`` (a checked ``profiles.Profile``) or ``normalizer_state`` when given."""
    src = FileSource(path, pace="fast")
    src.open()
    try:
        proc = StreamProcessor(model, src.sample_rate, config)
        if profile is not None:
            profile.apply(proc)
        elif normalizer_state is not None and proc.normalizer is not None:
            from .normalize import import_state

            import_state(proc.normalizer, normalizer_state)
        total = np.zeros(len(proc.labels))
        speech_samples = 0
        prev_end = 0

        def run(pending: Iterable[Pending]) -> None:
            nonlocal total, speech_samples, prev_end
            for p in pending:
                _, raw = proc.classify(p.window)
                if raw is not None:
                    total += raw
                    speech_samples += p.window.end - prev_end
                    proc.speech_windows += 1
                proc.windows += 1
                prev_end = p.window.end

        start = 0
        for data in src.blocks():
            run(proc.ingest(start, data))
            start += len(data)
        run(proc.finish())
    finally:
        src.close()
    out: dict = {"file": str(path)}
    if proc.speech_windows:
        mean = total / proc.speech_windows
        out["emotion"] = proc.labels[int(np.argmax(mean))]
        out["probabilities"] = {lbl: round(float(v), PROB_DECIMALS) for lbl, v in zip(proc.labels, mean, strict=False)}
    else:
        out["emotion"] = SILENCE
        out["probabilities"] = None
    out["speech_s"] = t_round(speech_samples / SAMPLE_RATE)
    out["duration_s"] = t_round(proc.samples_seen / SAMPLE_RATE)
    out["windows"] = proc.windows
    out["speech_windows"] = proc.speech_windows
    return out


def speaker_state(paths: Iterable[str | Path], model: ModelLike, config: StreamConfig) -> dict | None:
    """Normaliser state of one speaker from all the voiced windows of ``paths`` (first pass of
    ``predict --same-speaker``); ``None`` if the model has no normaliser or there is no speech."""
    from .calibrate import Collector

    if model.normalizer is None:
        return None
    rows = []
    for path in paths:
        src = FileSource(path, pace="fast")
        src.open()
        try:
            col = Collector(model, src.sample_rate)
            col.proc = StreamProcessor(model, src.sample_rate, config)
            start = 0
            for data in src.blocks():
                col.feed(col.proc.ingest(start, data))
                start += len(data)
            col.feed(col.proc.finish())
            rows += col.rows
        finally:
            src.close()
    if not rows:
        return None
    col.rows = rows
    return col.state()


def predict_file(path: str | Path, model: ModelLike | str | Path | None = None,
                 window_s: float | None = None, hop_s: float | None = None,
                 profile: Profile | str | Path | None = None) -> dict:
    """``{"file", "emotion", "probabilities", "speech_s", "duration_s", "windows", "speech_windows"}``.

    ``probabilities`` is the mean of the model's output over the file's speech windows
    (``None``, and ``emotion`` ``"silence"``, when there are none); ``speech_s`` is the
    audio time covered by speech windows (each window accounts for the audio since the
    previous window's end).

    Args:
        path: the audio file (any WAV/FLAC/OGG/MP3, 8-192 kHz, any channel count).
        model: ``None`` (default) for the shipped model, a path to an ``.onnx``, or a loaded model.
        window_s, hop_s: analysis window and hop in seconds; default: the model card's.
        profile: a speaker profile (object, name or path) to normalise with; default: a fresh
            normaliser for this file.

    Raises:
        InputAudioError: the file is missing, unreadable, empty or not audio.
        ModelError: the model, its card or the profile is missing, corrupted or mismatched.
    """
    m = load_model(model)
    return summarize_file(path, m, stream_config(m, window_s, hop_s), profile=load_profile(profile, m))
