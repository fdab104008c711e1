"""Replay through the whole runtime (pipeline threads, conversion, VAD, model, smoothing, events)."""

from __future__ import annotations

import math
import threading

import jsonschema
import numpy as np
import pytest

from realtime_ser.api import Tracker
from realtime_ser.audio.sources import BLOCK_S, FAST_READ_S, FileSource
from realtime_ser.core import StreamProcessor
from realtime_ser.errors import InputAudioError
from realtime_ser.runner import Pipeline, PipelineConfig

from helpers import HIGH_F0, LOW_F0, SlowModel, comparable, load_schema, noise, voice, write_audio

SR = 16_000
HOP_S = 0.5


def speech_clip(low_s: float = 3.0, high_s: float = 3.0, lead_s: float = 0.5, tail_s: float = 0.3) -> np.ndarray:
    return np.concatenate([np.zeros(int(lead_s * SR), np.float32), voice(LOW_F0, low_s, seed=1),
                           voice(HIGH_F0, high_s, seed=2), np.zeros(int(tail_s * SR), np.float32)])


def of_type(events, kind):
    return [e for e in events if e["type"] == kind]


@pytest.fixture(scope="module")
def clip_path(tmp_path_factory):
    return write_audio(tmp_path_factory.mktemp("replay") / "clip.wav", speech_clip())


def stereo_44k_clip(tmp_path):
    """A 44.1 kHz stereo speech clip whose length is no multiple of the hop (resampler and flush matter)."""
    x = speech_clip(2.0, 2.0, tail_s=0.37)
    t = np.arange(int(len(x) * 44_100 / SR)) / 44_100
    x44 = np.interp(t, np.arange(len(x)) / SR, x).astype(np.float32)
    return write_audio(tmp_path / "c44.wav", np.stack([x44, 0.5 * x44], axis=1), 44_100)


def test_three_block_sizes_give_identical_events(tiny_model, tmp_path):
    # 44.1 kHz stereo with a length that is no multiple of the hop: resampler and flush both matter
    path = stereo_44k_clip(tmp_path)
    tracker = Tracker(model=tiny_model, status_every_s=1.0)
    runs = [list(tracker.replay(path, pace="fast", block_frames=n)) for n in (256, 1000, 44_100)]
    assert comparable(runs[0]) == comparable(runs[1]) == comparable(runs[2])
    preds = of_type(runs[0], "prediction")
    assert any(p["speech"] for p in preds) and of_type(runs[0], "change")


def test_fast_replay_loses_nothing_even_with_a_slow_model(tiny_model, clip_path):
    slow = SlowModel(tiny_model, delay_s=0.02)
    events = list(Tracker(model=slow).replay(clip_path, pace="fast", block_frames=160))
    duration = len(speech_clip()) / SR
    preds = of_type(events, "prediction")
    assert len(preds) == math.ceil(duration / HOP_S)  # every window, including the final partial one
    assert [p["t_end"] for p in preds][:3] == [0.5, 1.0, 1.5]
    assert preds[-1]["t_end"] == pytest.approx(duration)
    end = events[-1]
    assert end["type"] == "end" and end["reason"] == "end_of_input"
    assert end["skipped_windows"] == 0 and end["dropped_blocks"] == 0 and end["windows"] == len(preds)
    assert slow.calls == sum(p["speech"] for p in preds)  # the model runs on speech windows only


def test_voice_changes_move_the_smoothed_emotion_at_the_right_time(tiny_model, clip_path):
    events = list(Tracker(model=tiny_model).replay(clip_path, pace="fast"))
    changes = [(c["previous"], c["emotion"], c["t_end"]) for c in of_type(events, "change")]
    assert changes[0][:2] == ("silence", "sad") and changes[0][2] <= 0.5 + 1.5
    to_happy = [t for prev, emo, t in changes if emo == "happy"]
    assert to_happy and 3.5 < to_happy[0] <= 3.5 + 2.5  # within a window + dwell of the switch at 3.5 s
    final = of_type(events, "prediction")[-1]
    assert final["emotion"] == "happy" and final["valence"] > 0 and final["arousal"] > 0
    assert abs(sum(final["probabilities"].values()) - 1) < 1e-3


@pytest.mark.parametrize("kind", ["silence", "low noise", "loud noise"])
def test_silence_and_noise_claim_no_emotion(tiny_model, tmp_path, kind):
    x = {"silence": np.zeros(4 * SR, np.float32), "low noise": noise(4.0, -60.0),
         "loud noise": noise(4.0, -20.0)}[kind]
    events = list(Tracker(model=tiny_model).replay(write_audio(tmp_path / "n.wav", x), pace="fast"))
    preds = of_type(events, "prediction")
    assert len(preds) == 8
    assert all(p["emotion"] == "silence" and not p["speech"] and p["probabilities"] is None for p in preds)
    assert all(p["valence"] == 0 and p["arousal"] == 0 for p in preds)
    assert not of_type(events, "change")


def test_48k_stereo_and_16k_mono_give_the_same_timeline(tiny_model, tmp_path, clip_path):
    x = speech_clip()
    import soxr

    x48 = soxr.resample(x, SR, 48_000).astype(np.float32)
    path48 = write_audio(tmp_path / "s48.wav", np.stack([x48, x48], axis=1), 48_000)
    tr = Tracker(model=tiny_model)
    a = of_type(list(tr.replay(clip_path)), "prediction")
    b = of_type(list(tr.replay(path48)), "prediction")
    assert [p["t_end"] for p in a] == [p["t_end"] for p in b]
    assert [p["emotion"] for p in a] == [p["emotion"] for p in b]
    assert [p["speech"] for p in a] == [p["speech"] for p in b]


def test_speaker_normaliser_warms_up_on_speech(normalized_model_path, clip_path):
    events = list(Tracker(model=str(normalized_model_path)).replay(clip_path))
    warm = [p["normalizer_warmup"] for p in of_type(events, "prediction")]
    assert warm[0] == 0.0 and all(b >= a for a, b in zip(warm, warm[1:], strict=False)) and warm[-1] > 0.5


def test_every_event_validates_against_the_schema(tiny_model, clip_path):
    validator = jsonschema.Draft202012Validator(load_schema())
    events = list(Tracker(model=tiny_model, status_every_s=1.0).replay(clip_path))
    for e in events:
        validator.validate(e)
    assert {e["type"] for e in events} == {"start", "prediction", "change", "status", "end"}
    assert events[0]["type"] == "start" and events[-1]["type"] == "end"


def test_a_read_error_midway_keeps_what_came_before(tiny_model, clip_path):
    class Breaking(FileSource):
        def blocks(self):
            done = 0
            for block in super().blocks():
                if done >= 2 * SR:  # after 2 s of audio, whatever the read size
                    raise InputAudioError("disk on fire")
                done += len(block)
                yield block

    seen = []
    with pytest.raises(InputAudioError, match="disk on fire"):
        for e in Pipeline(Breaking(clip_path), tiny_model, PipelineConfig()).events():
            seen.append(e)
    assert len(of_type(seen, "prediction")) == 4  # windows ending at 0.5 .. 2.0 s
    assert seen[-1]["type"] == "end" and seen[-1]["reason"] == "error" and "disk on fire" in seen[-1]["error"]


def test_dropped_blocks_become_silence_on_the_audio_clock(tiny_model):
    proc = StreamProcessor(tiny_model, 48_000)
    block = np.ones((4800, 2), np.float32) * 0.1
    ends = [p.window.end for p in proc.ingest(0, block)]
    ends += [p.window.end for p in proc.ingest(48_000, block)]  # 0.9 s of blocks were dropped
    assert proc.samples_seen >= int(1.05 * SR) - 100  # the gap counted as time
    assert ends == [8000, 16000]


def test_library_callback_gets_the_same_events_and_stop_ends_the_stream(tiny_model, clip_path):
    tracker = Tracker(model=tiny_model)
    iterated = list(tracker.replay(clip_path))
    called: list[dict] = []
    tracker.replay(clip_path, callback=called.append)
    assert comparable(called) == comparable(iterated)

    stopped: list[dict] = []

    def stop_at_first_change(event: dict) -> None:
        stopped.append(event)
        if event["type"] == "change":
            tracker.stop()

    tracker.replay(clip_path, block_frames=400, callback=stop_at_first_change)
    assert stopped[-1]["type"] == "end" and stopped[-1]["reason"] == "stopped"
    assert len(of_type(stopped, "prediction")) < len(of_type(iterated, "prediction"))


@pytest.mark.slow
def test_realtime_pace_gives_the_events_of_fast_pace(tiny_model, tmp_path):
    path = write_audio(tmp_path / "short.wav", speech_clip(1.0, 1.0, lead_s=0.2, tail_s=0.3))
    tracker = Tracker(model=tiny_model, status_every_s=0)
    fast = list(tracker.replay(path, pace="fast"))
    live = list(tracker.replay(path, pace="realtime"))
    assert all(p["latency_ms"] is None for p in of_type(fast, "prediction"))
    assert all(p["latency_ms"] is not None and p["latency_ms"] >= 0 for p in of_type(live, "prediction"))
    assert live[0]["live"] and not fast[0]["live"]
    fast_by_t = {p["t_end"]: p for p in comparable(of_type(fast, "prediction"))}
    live_preds = comparable(of_type(live, "prediction"))
    if live[-1]["skipped_windows"] == 0:  # a machine busy enough to skip would legitimately differ
        assert [p["t_end"] for p in live_preds] == list(fast_by_t)
        assert live_preds == list(fast_by_t.values())
    else:
        assert all(p["skipped_windows"] >= 0 and p["t_end"] in fast_by_t for p in live_preds)


@pytest.mark.slow
def test_fast_replay_reads_long_blocks_in_the_callers_thread_with_the_events_of_short_ones(tiny_model, tmp_path):
    # 44.1 kHz stereo, not a multiple of the long read: the last read is short, resampler and flush matter
    path = stereo_44k_clip(tmp_path)
    tracker = Tracker(model=tiny_model, status_every_s=1.0)
    threads_before = threading.active_count()
    default, threads_during = [], []
    for e in tracker.replay(path, pace="fast"):
        default.append(e)
        threads_during.append(threading.active_count())
    assert max(threads_during) == threads_before  # no reader or worker thread
    src = FileSource(path, pace="fast")
    src.open()
    src.close()
    assert src.read_frames == round(FAST_READ_S * 44_100) > src.block_frames == round(BLOCK_S * 44_100)
    small = list(tracker.replay(path, pace="fast", block_frames=src.block_frames))
    status = of_type(default, "status")
    assert comparable(default) == comparable(small) and status
    # the capture queue's capacity is reported as for the default block, and nothing is ever queued
    assert {(s["queue_depth"], s["queue_capacity"]) for s in status} == {(0, 100)}
    realtime = list(Tracker(model=tiny_model, status_every_s=0).replay(path, pace="realtime"))
    if realtime[-1]["skipped_windows"] == 0:  # a machine busy enough to skip would legitimately differ
        assert comparable(of_type(realtime, "prediction")) == comparable(of_type(default, "prediction"))


def test_a_read_error_in_a_long_read_keeps_the_blocks_before_it(tiny_model, clip_path, monkeypatch):
    """libsndfile fails a read that reaches a damaged spot: the long read is retried in short blocks,
    so the audio and events before the fault are those a short-block reader would have kept."""
    import soundfile as sf

    bad_frame = int(3.33 * SR)  # inside the 800-frame block that starts at 3.30 s
    real_read = sf.SoundFile.read

    def failing_read(self, frames=-1, *args, **kwargs):
        if self.tell() + frames > bad_frame:
            raise sf.LibsndfileError(0, "damaged block")
        return real_read(self, frames, *args, **kwargs)

    monkeypatch.setattr(sf.SoundFile, "read", failing_read)
    runs = []
    for block_frames in (None, 800):
        seen = []
        with pytest.raises(InputAudioError, match="read failed after 3.30 s of audio"):
            for e in Tracker(model=tiny_model).replay(clip_path, pace="fast", block_frames=block_frames):
                seen.append(e)
        runs.append(seen)
    assert comparable(runs[0]) == comparable(runs[1])
    assert of_type(runs[0], "prediction")[-1]["t_end"] == 3.3 and runs[0][-1]["reason"] == "error"


@pytest.mark.parametrize("every", [1e-17, 1e-300, 0.3])
def test_any_status_period_a_library_passes_ends_and_gives_one_status_per_window_at_most(tiny_model, clip_path,
                                                                                         every):
    """PipelineConfig(status_every_s=1e-17) once spun forever stepping the next status time by 1e-17 s."""
    events = list(Pipeline(FileSource(clip_path, pace="fast"), tiny_model,
                           PipelineConfig(status_every_s=every)).events())
    windows = len(of_type(events, "prediction"))
    statuses = of_type(events, "status")
    assert events[-1]["type"] == "end" and 0 < len(statuses) <= windows
    times = [s["t"] for s in statuses]
    assert times == sorted(times) and len(set(times)) == len(times)
