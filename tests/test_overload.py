"""Overload: a slow model on a live stream skips stale windows (counted), the audio callback never
blocks, a full capture queue drops whole blocks (counted) without losing the audio clock, and a fast
replay of the same audio loses nothing."""

from __future__ import annotations

import queue
import threading
import time

import numpy as np
import pytest

from realtime_ser.audio.sources import CallbackCapture
from realtime_ser.core import StreamConfig
from realtime_ser.runner import Pipeline, PipelineConfig
from realtime_ser.smoothing import SmoothingParams

from helpers import HIGH_F0, SlowModel, voice

SR = 16_000
BLOCK = 800  # 50 ms, a typical live block
WINDOW_S, HOP_S = 1.0, 0.25
DELAY_S = 2 * HOP_S  # inference twice as slow as the hop: the worker cannot keep up
AUDIO_S = 3.0


class SimulatedMic:
    """A live source whose 'PortAudio thread' is a test thread calling the real callback at real pace."""

    live = True
    sample_rate = SR
    channels = 1
    block_frames = BLOCK
    name = "simulated"

    def __init__(self, audio: np.ndarray) -> None:
        self.audio = audio
        self.capture: CallbackCapture | None = None
        self.durations: list[float] = []
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()

    @property
    def counters(self):
        return self.capture.counters

    def open(self) -> None:
        pass

    def start(self, q: queue.Queue) -> None:
        self.capture = CallbackCapture(q)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        """The audio, then silence until stopped (a real microphone keeps delivering)."""
        assert self.capture is not None  # start() made it
        t0 = time.monotonic()
        i = 0
        silence = np.zeros((BLOCK, 1), np.float32)
        while not self._stopped.is_set():
            block = self.audio[i:i + BLOCK, None] if i < len(self.audio) else silence
            due = t0 + (i + len(block)) / SR
            time.sleep(max(0.0, due - time.monotonic()))
            start = time.perf_counter()
            self.capture.callback(block, len(block), None, None)
            if i < len(self.audio):
                self.durations.append(time.perf_counter() - start)
            i += len(block)

    def check(self, since: float | None = None) -> None:
        pass

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join()


def run_live(model, audio, queue_s=5.0, status_every_s=1.0):
    mic = SimulatedMic(audio)
    cfg = PipelineConfig(stream=StreamConfig(WINDOW_S, HOP_S, SmoothingParams()), queue_s=queue_s,
                         status_every_s=status_every_s, duration_s=len(audio) / SR)
    events = list(Pipeline(mic, model, cfg).events())
    return mic, events


@pytest.mark.slow
def test_slow_model_live_skips_stale_windows_and_the_callback_never_blocks(tiny_model):
    audio = voice(HIGH_F0, AUDIO_S)
    slow = SlowModel(tiny_model, DELAY_S)
    mic, events = run_live(slow, audio)
    preds = [e for e in events if e["type"] == "prediction"]
    end = events[-1]
    total_windows = int(AUDIO_S / HOP_S)
    assert end["type"] == "end" and end["reason"] == "duration"
    assert end["skipped_windows"] > 0
    assert end["windows"] + end["skipped_windows"] == total_windows  # every window: processed or counted
    assert end["windows"] == len(preds) < total_windows
    assert end["dropped_blocks"] == 0  # the queue absorbed the stalls; only windows were skipped
    status = [e for e in events if e["type"] == "status"]
    assert status and status[-1]["skipped_windows"] > 0
    assert max(s["queue_depth"] for s in status) <= status[0]["queue_capacity"]
    # the callback only copied: far shorter than one stalled inference, measured around every call
    assert len(mic.durations) == AUDIO_S * SR / BLOCK
    assert max(mic.durations) < DELAY_S / 10
    # bounded latency: without skipping the last window would wait for every earlier inference
    # (about total_windows * DELAY_S - AUDIO_S = 3 s); with it, about one inference plus a hop
    latencies = [p["latency_ms"] for p in preds]
    assert all(lat is not None for lat in latencies)
    assert max(latencies) < (total_windows * DELAY_S - AUDIO_S) * 1000 / 2
    # processed windows keep their audio times
    assert all(abs(p["t_end"] / HOP_S - round(p["t_end"] / HOP_S)) < 1e-9 for p in preds)


@pytest.mark.slow
def test_a_full_capture_queue_drops_whole_blocks_and_keeps_the_clock(tiny_model):
    audio = voice(HIGH_F0, AUDIO_S)
    slow = SlowModel(tiny_model, DELAY_S)
    mic, events = run_live(slow, audio, queue_s=0.1)  # room for only a few blocks
    end = events[-1]
    assert 0 < end["dropped_blocks"] <= mic.capture.counters.dropped_blocks  # the mic goes on after the end
    assert end["t"] == AUDIO_S  # dropped blocks were replaced by silence: the audio clock holds
    assert max(mic.durations) < DELAY_S / 10


def test_callback_counts_overflow_without_blocking():
    q: queue.Queue = queue.Queue(maxsize=2)
    cap = CallbackCapture(q)
    block = np.zeros((BLOCK, 2), np.float32)

    class Flags:
        input_overflow = True

        def __bool__(self):
            return True

    for _ in range(5):
        cap.callback(block, BLOCK, None, None)
    cap.callback(block, BLOCK, None, Flags())
    assert q.qsize() == 2 and cap.counters.dropped_blocks == 4 and cap.counters.dropped_frames == 4 * BLOCK
    assert cap.counters.input_overflows == 1 and cap.next_frame == 6 * BLOCK
    first = q.get_nowait()
    assert first.start == 0 and first.data.shape == (BLOCK, 2)
    block[:] = 1.0
    assert np.all(first.data == 0)  # a copy: PortAudio reuses its buffer
