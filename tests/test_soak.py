"""The one-hour soak (issue 5 §2): a generated one-hour file replayed at fast pace through the whole
runtime keeps resident memory flat (growth under 10 MB from minute 5 to minute 60) and gives exactly
the prediction events the window and hop imply. Marked slow: several minutes on a small machine."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from helpers import HIGH_F0, LOW_F0, noise, voice

from realtime_ser.api import Tracker

SR = 16_000
HOUR_S = 3600
CHUNK_S = 10  # the file is written 10 s at a time: 2 s of voice, 8 s of quiet room noise
VOICE_S = 2.0
ROOM_DBFS = -60.0
HOP_S = 0.5
MAX_GROWTH_MB = 10.0
FIRST_MARK_MIN = 5
KB_PER_MB = 1024


def rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / KB_PER_MB
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.fixture(scope="module")
def hour_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("soak") / "hour.flac"
    rooms = [noise(CHUNK_S - VOICE_S, ROOM_DBFS, seed=s) for s in range(4)]
    voices = [voice(LOW_F0, VOICE_S, seed=1), voice(HIGH_F0, VOICE_S, seed=2)]
    with sf.SoundFile(str(path), "w", SR, 1, subtype="PCM_16") as f:
        for i in range(HOUR_S // CHUNK_S):
            f.write(np.concatenate([voices[i % 2], rooms[i % 4]]))
    return path


@pytest.mark.slow
@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_one_hour_replay_has_flat_memory_and_every_window(tiny_model, hour_file):
    marks: dict[int, float] = {}
    predictions = 0
    end = None
    for event in Tracker(model=tiny_model, status_every_s=60).replay(hour_file, pace="fast"):
        if event["type"] == "prediction":
            predictions += 1
        elif event["type"] == "status":
            marks[round(event["t"] / 60)] = rss_mb()
        elif event["type"] == "end":
            end = event
    assert end is not None and end["reason"] == "end_of_input" and end["t"] == HOUR_S
    assert predictions == HOUR_S / HOP_S == end["windows"]
    assert end["skipped_windows"] == 0 and end["dropped_blocks"] == 0
    growth = marks[max(marks)] - marks[FIRST_MARK_MIN]
    assert max(marks) == HOUR_S // 60
    assert growth < MAX_GROWTH_MB, f"resident memory grew {growth:.1f} MB from minute 5 to 60: {marks}"
