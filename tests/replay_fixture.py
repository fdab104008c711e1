"""The "no behaviour change" replay: generated audio replayed with the shipped model, its event lines.

Shared by tests/test_replay_fixture.py (compares) and scripts/record_replay_fixture.py (records).
The audio is generated (helpers.voice/noise, fixed seeds), never a corpus file. Volatile fields
(queue depth and capacity, latency, callback time, memory) are removed from each line; every other byte
of the line, as ``listen --replay --pace fast`` printed it, is kept (key order, number formatting).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np

from helpers import HIGH_F0, LOW_F0, MID_F0, cli_command, noise, voice, write_audio

FIXTURE_DIR = Path(__file__).resolve().parent / "fixtures"
FIXTURE = FIXTURE_DIR / "replay_events.jsonl"
META = FIXTURE_DIR / "replay_events.meta.json"
RECORD_COMMAND = "python scripts/record_replay_fixture.py"
SR = 16_000
VOLATILE = ("queue_depth", "queue_capacity", "latency_ms", "callback_max_ms", "peak_rss_mb", "rss_mb")


def clip() -> np.ndarray:
    """12.3 s: silence, low, middle and high voices, noise, a quiet voice; a length no multiple of the hop."""
    parts = [np.zeros(int(0.6 * SR), np.float32), voice(LOW_F0, 3.0, seed=11), voice(MID_F0, 2.5, seed=12),
             noise(1.0, -45.0, seed=13), voice(HIGH_F0, 3.0, seed=14), voice(MID_F0, 2.0, amplitude=0.05, seed=15),
             np.zeros(int(0.2 * SR), np.float32)]
    return np.concatenate(parts)


def strip_volatile(line: str) -> str:
    """The line with the volatile keys (and their values) cut out, other bytes untouched."""
    for key in VOLATILE:
        line = re.sub(rf',"{key}":[^,}}]*', "", line)
        line = re.sub(rf'"{key}":[^,}}]*,', "", line)
    return line


def shipped_sha256() -> str:
    from realtime_ser.model import DEFAULT_MODEL, card_path_for

    return json.loads(card_path_for(Path(DEFAULT_MODEL)).read_text(encoding="utf-8"))["onnx_sha256"]


def replay_lines(tmp: Path) -> tuple[list[str], str]:
    """(event lines of the replay, the shipped card's onnx_sha256)."""
    path = write_audio(tmp / "fixture_clip.flac", clip(), subtype="PCM_16")
    # a relative path (cwd=tmp): the start and status lines name the file, not the temporary directory
    result = subprocess.run([*cli_command(), "listen", "--replay", path.name, "--pace", "fast",
                             "--no-dashboard", "--status-every", "2"],
                            capture_output=True, text=True, timeout=120, cwd=tmp)
    if result.returncode != 0:
        raise AssertionError(f"listen --replay exited {result.returncode}: {result.stderr[-2000:]}")
    return [strip_volatile(line) for line in result.stdout.splitlines()], shipped_sha256()
