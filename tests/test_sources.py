"""Sources (realtime_ser.audio.sources): device choice, file blocks, realtime pace = live semantics."""

from __future__ import annotations

import queue
import threading
import time

import numpy as np
import pytest

from realtime_ser.audio.sources import END, Block, CallbackCapture, FileSource, InputDevice, MicSource, resolve_device
from realtime_ser.errors import AudioDeviceError, ConfigError

from helpers import write_audio

DEVICES = [
    InputDevice(0, "HDA Intel PCH: ALC257 Analog (hw:0,0)", "ALSA", 2, 44_100.0, False),
    InputDevice(3, "USB Audio Device: Mic (hw:2,0)", "ALSA", 1, 48_000.0, False),
    InputDevice(5, "pulse", "ALSA", 32, 44_100.0, False),
    InputDevice(6, "default", "ALSA", 32, 44_100.0, True),
]


@pytest.mark.parametrize("spec, index", [(None, 6), ("", 6), (3, 3), ("3", 3), ("usb", 3), ("PULSE", 5),
                                         ("default", 6), (" alc257 ", 0)])
def test_device_by_default_index_or_name_part(spec, index):
    assert resolve_device(spec, DEVICES).index == index


def test_device_errors_say_what_to_do():
    with pytest.raises(AudioDeviceError, match="realtime-ser devices"):
        resolve_device(4, DEVICES)
    with pytest.raises(AudioDeviceError, match="realtime-ser devices"):
        resolve_device("bluetooth", DEVICES)
    with pytest.raises(ConfigError, match="matches 2"):
        resolve_device("hw:", DEVICES)
    with pytest.raises(AudioDeviceError, match="--replay"):
        resolve_device(None, [])


def test_no_default_falls_back_to_the_first_input():
    devices = [InputDevice(2, "a", "ALSA", 1, 16_000.0, False), InputDevice(4, "b", "ALSA", 1, 16_000.0, False)]
    assert resolve_device(None, devices).index == 2


def test_bad_block_size_and_pace_are_config_errors(tmp_path):
    with pytest.raises(ConfigError):
        MicSource(block_frames=0)
    with pytest.raises(ConfigError):
        FileSource(tmp_path / "x.wav", pace="warp")
    with pytest.raises(ConfigError):
        FileSource(tmp_path / "x.wav", block_frames=-5)


def test_file_is_read_in_blocks_of_the_asked_size(tmp_path):
    x = np.random.default_rng(0).standard_normal((10_001, 3)).astype(np.float32) * 0.1
    src = FileSource(write_audio(tmp_path / "x.wav", x, 22_050, subtype="FLOAT"), block_frames=1000)
    src.open()
    assert (src.sample_rate, src.channels, src.frames) == (22_050, 3, 10_001)
    blocks = list(src.blocks())
    assert [len(b) for b in blocks] == [1000] * 10 + [1]
    np.testing.assert_array_equal(np.concatenate(blocks), x)


@pytest.mark.parametrize("pace", ["fast", "realtime"])
def test_file_run_puts_numbered_blocks_then_end(tmp_path, pace):
    x = np.zeros(1600, np.float32)  # 0.1 s: quick even at real-time pace
    src = FileSource(write_audio(tmp_path / "x.wav", x), pace=pace, block_frames=400)
    src.open()
    q: queue.Queue = queue.Queue(maxsize=100)
    src.run(q, threading.Event())
    items = [q.get_nowait() for _ in range(q.qsize())]
    assert items[-1] is END
    assert [b.start for b in items[:-1]] == [0, 400, 800, 1200]
    assert all(isinstance(b, Block) and b.data.shape == (400, 1) for b in items[:-1])
    assert src.live == (pace == "realtime")


def test_realtime_pace_drops_like_a_microphone_when_the_queue_is_full(tmp_path):
    src = FileSource(write_audio(tmp_path / "x.wav", np.zeros(1600, np.float32)), pace="realtime", block_frames=200)
    src.open()
    q: queue.Queue = queue.Queue(maxsize=3)
    feeder = threading.Thread(target=src.run, args=(q, threading.Event()), daemon=True)
    feeder.start()  # nobody drains the queue while the 8 blocks are released
    deadline = 200
    while src.capture is None or src.capture.counters.blocks < 8:
        deadline -= 1
        assert deadline > 0, "the file source did not release its blocks"
        threading.Event().wait(0.01)
    assert src.capture.counters.dropped_blocks == 5  # 3 fitted, the rest were dropped and counted
    got = [q.get(timeout=5) for _ in range(4)]  # draining lets END in: nothing blocks for good
    feeder.join(5)
    assert [b.start for b in got[:3]] == [0, 200, 400] and got[3] is END and not feeder.is_alive()


class FakeStream:
    active = True


def mic_with_fake_stream(block_frames: int = 800) -> MicSource:
    mic = MicSource(block_frames=block_frames)
    mic.sample_rate = 16_000
    mic.name = "fake"
    mic.capture = CallbackCapture(queue.Queue(maxsize=10))
    mic._stream = FakeStream()
    mic._started_at = time.monotonic()
    return mic


def test_a_device_that_stops_is_reported():
    mic = mic_with_fake_stream()
    mic.check()  # just started, nothing yet: fine
    mic.capture.callback(np.zeros((800, 1), np.float32), 800, None, None)
    mic.check()  # audio is flowing
    mic.capture.last_arrival -= 1.5 * mic.stall_timeout_s
    with pytest.raises(AudioDeviceError, match="stopped delivering audio"):
        mic.check()
    mic2 = mic_with_fake_stream()
    mic2.capture.on_finished()
    with pytest.raises(AudioDeviceError, match="audio server went away"):
        mic2.check()
    mic3 = mic_with_fake_stream()
    mic3._started_at -= 60
    with pytest.raises(AudioDeviceError, match="delivered no audio"):
        mic3.check()


def test_long_blocks_stretch_the_stall_timeout():
    assert mic_with_fake_stream(800).stall_timeout_s == 1.0
    assert mic_with_fake_stream(16_000).stall_timeout_s == 3.0  # 1 s blocks: three of them
