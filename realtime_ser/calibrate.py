"""The guided calibration: read a short passage, get a speaker profile (``realtime-ser calibrate``).

Counts *voiced* seconds with the model's speech gate (silence and noise do not count): every
window the gate passes adds one hop of speech. Its feature vectors' mean and variance become the
profile's normaliser statistics (``normalize.state_from_stats``), so ``listen --profile NAME``
starts warm. Measured (reports/profiles.md, ``python -m train.profile_eval``): a neutral reading's
raw statistics, with the normaliser adapting on from there, did better than mapping them to
all-emotion statistics or a neutral-referenced model, so they are stored as they are
(``"mapping": "none"``).

On a terminal, stderr shows the passage and a progress bar (Rich); otherwise plain progress lines.
stdout gets one JSON line: ``{"type": "profile", "name", "path", "speech_s", "windows", "model"}``.
"""

from __future__ import annotations

import argparse
import logging
import queue
import sys
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

from .errors import ConfigError, InputAudioError, ModelError

if TYPE_CHECKING:
    from .core import ModelLike, Pending

log = logging.getLogger(__name__)

DEFAULT_SECONDS = 45.0
MIN_SECONDS = 10.0
PROGRESS_EVERY_S = 5.0
POLL_S = 0.1
PASSAGE = (
    "Please read this aloud in your normal, relaxed voice, as if talking to a friend:\n\n"
    "When the sunlight strikes raindrops in the air, they act as a prism and form a rainbow. "
    "The rainbow is a division of white light into many beautiful colours. These take the shape of a "
    "long round arch, with its path high above, and its two ends apparently beyond the horizon. "
    "There is, according to legend, a boiling pot of gold at one end. People look, but no one ever "
    "finds it. When a man looks for something beyond his reach, his friends say he is looking for "
    "the pot of gold at the end of the rainbow.\n\n"
    "Then keep talking about your day, your plans or anything at all until the bar is full.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group()
    src.add_argument("--device", metavar="DEV", help="input device: index or part of its name (default: the system's)")
    src.add_argument("--replay", metavar="FILE", help="calibrate from a recording instead of the microphone")
    p.add_argument("--profile", metavar="NAME", default="default",
                   help="profile name (stored in the user data dir) or a path ending in .json (default: default)")
    p.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, metavar="S",
                   help=f"seconds of speech to collect (default {DEFAULT_SECONDS:g}, at least {MIN_SECONDS:g})")
    p.add_argument("--model", metavar="PATH", help="an .onnx model with its card (default: the shipped one)")
    p.add_argument("--dashboard", action="store_true", default=None,
                   help="the passage and progress bar on stderr (default: when stderr is a terminal)")


class _View:
    """Progress on stderr: a Rich panel with the passage and a bar, or plain lines."""

    def __init__(self, target_s: float, rich: bool) -> None:
        self.target = target_s
        self.live = None
        self._next_line = PROGRESS_EVERY_S
        if rich:
            try:
                from rich.console import Console, Group
                from rich.live import Live
                from rich.panel import Panel
                from rich.progress import BarColumn, Progress, TextColumn

                self.progress = Progress(TextColumn("speech collected"), BarColumn(),
                                         TextColumn("{task.completed:.0f} / {task.total:.0f} s"))
                self.task = self.progress.add_task("speech", total=target_s)
                console = Console(stderr=True)
                self.live = Live(Group(Panel(PASSAGE, title="realtime-ser calibrate"), self.progress),
                                 console=console, refresh_per_second=8, redirect_stdout=False, redirect_stderr=False)
                self.live.start()
            except ImportError:
                self.live = None
        if self.live is None:
            sys.stderr.write(f"calibrate: read aloud in your normal voice; collecting {target_s:g} s of speech\n")
            sys.stderr.flush()

    def update(self, speech_s: float) -> None:
        if self.live is not None:
            self.progress.update(self.task, completed=min(speech_s, self.target))
        elif speech_s >= self._next_line:
            while self._next_line <= speech_s:
                self._next_line += PROGRESS_EVERY_S
            sys.stderr.write(f"calibrate: {min(speech_s, self.target):.0f}/{self.target:g} s of speech\n")
            sys.stderr.flush()

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()


class Collector:
    """Windows -> speech gate -> feature rows of the voiced windows, and seconds of speech."""

    def __init__(self, model: ModelLike, source_rate: int) -> None:
        from .api import stream_config
        from .core import StreamProcessor

        self.model = model
        self.proc = StreamProcessor(model, source_rate, stream_config(model))
        self.hop_s = self.proc.config.hop_s
        self.rows: list[np.ndarray] = []

    @property
    def speech_s(self) -> float:
        return len(self.rows) * self.hop_s

    def feed(self, pending: Iterable[Pending]) -> None:
        from . import features

        for p in pending:
            w = p.window
            analysis = self.proc.frames.analyze(w.samples, w.end - len(w.samples))
            # the stream's own speech gate (gate.SpeechGate, its neural state following the windows)
            if self.proc.gate.decide(w, analysis).speech:
                self.rows.append(features.functionals(analysis))

    def state(self) -> dict:
        from .normalize import speaker_stats, state_from_stats

        X = np.asarray(self.rows, dtype=np.float64)
        mean, var = speaker_stats(X)
        assert self.model.normalizer is not None, "run() refuses a model without a speaker normaliser"
        return state_from_stats(self.model.normalizer, mean, var, len(X))


def _from_file(path: str, model: ModelLike, target_s: float, view: _View) -> Collector:
    from .audio.sources import FileSource

    src = FileSource(path, pace="fast")
    src.open()
    try:
        col = Collector(model, src.sample_rate)
        start = 0
        for data in src.blocks():
            col.feed(col.proc.ingest(start, data))
            start += len(data)
            view.update(col.speech_s)
            if col.speech_s >= target_s:
                break
        else:
            col.feed(col.proc.finish())
            view.update(col.speech_s)
    finally:
        src.close()
    return col


def _from_mic(device: int | str | None, model: ModelLike, target_s: float, view: _View) -> Collector:
    from .audio.sources import Block, MicSource, SourceFailure

    src = MicSource(device)
    src.open()
    assert src.block_frames is not None, "an open microphone source has a block size"
    q: queue.Queue = queue.Queue(maxsize=max(4, int(5.0 * src.sample_rate / src.block_frames)))
    col = Collector(model, src.sample_rate)
    src.start(q)
    try:
        while col.speech_s < target_s:
            try:
                item = q.get(timeout=POLL_S)
            except queue.Empty:
                src.check()
                continue
            if isinstance(item, SourceFailure):
                raise item.error
            if isinstance(item, Block):
                col.feed(col.proc.ingest(item.start, item.data))
                view.update(col.speech_s)
    finally:
        src.stop()
    return col


def run(args: argparse.Namespace) -> int:
    import json

    from . import profiles
    from .api import load_model

    if not (args.seconds >= MIN_SECONDS and args.seconds <= 600):
        raise ConfigError(f"--seconds must be between {MIN_SECONDS:g} and 600, got {args.seconds}")
    path = profiles.profile_path(args.profile)  # a bad name fails before any audio
    model = load_model(args.model)
    if model.normalizer is None:
        raise ModelError(f"model {model.name} has no speaker normaliser (card normalization type 'none'): "
                         f"there is nothing to calibrate; use a model with normalization online_speaker")
    show = args.dashboard if args.dashboard is not None else sys.stderr.isatty()
    view = _View(args.seconds, rich=bool(show))
    t0 = time.monotonic()
    try:
        if args.replay is not None:
            col = _from_file(args.replay, model, args.seconds, view)
        else:
            col = _from_mic(args.device, model, args.seconds, view)
    finally:
        view.close()
    if col.speech_s < args.seconds:
        fix = (f"use a longer recording or accept less with --seconds {int(col.speech_s)}"
               if col.speech_s >= MIN_SECONDS else f"use a recording with at least {MIN_SECONDS:g} s of speech")
        raise InputAudioError(f"{args.replay} holds only {col.speech_s:.1f} s of speech (the speech gate's count), "
                              f"{args.seconds:g} s needed; {fix}")
    prof = profiles.new(args.profile, model, col.state(), col.speech_s, source="calibration", mapping="none")
    profiles.save(prof)
    log.info("calibration took %.1f s", time.monotonic() - t0)
    sys.stderr.write(f"calibrate: profile {prof.name!r} written to {path} ({col.speech_s:.1f} s of speech); "
                     f"use it with `realtime-ser listen --profile {args.profile}`\n")
    sys.stdout.write(json.dumps({"type": "profile", "name": prof.name, "path": str(path),
                                 "speech_s": round(col.speech_s, 2), "windows": len(col.rows),
                                 "model": model.name}) + "\n")
    sys.stdout.flush()
    return 0
