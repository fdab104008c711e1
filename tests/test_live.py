"""Live tests on the PulseAudio virtual microphone (started by .ci/run or by the ``virtual_mic`` fixture).

1. ``test_virtual_mic_roundtrip``: a chirp played with ``paplay`` into the virtual microphone comes
   back through sounddevice's "pulse" input, found by cross-correlation and sample-exact: the device
   the live test depends on really works.
2. ``test_listen_live_matches_replay``: a RAVDESS speech file played into the microphone while
   ``realtime-ser listen`` captures it gives the same smoothed emotions, at the same audio times within
   one hop, as ``realtime-ser listen --replay`` of the same file; every stdout line is JSON.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf


REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_RATE = 16_000
PCM_FULL_SCALE = 32768.0
PORTAUDIO_DEVICE = "pulse"

# -------------------------------------------------------------------------- round trip


CHIRP_S = 1.0
CHIRP_F0_HZ = 300.0
CHIRP_F1_HZ = 3000.0
CHIRP_AMPLITUDE = 0.5
PAD_S = 0.3
BLOCK_FRAMES = 800  # 50 ms blocks, like a typical live capture
FIRST_CALLBACK_TIMEOUT_S = 10.0
PLAYBACK_TIMEOUT_S = 60.0
TAIL_S = 0.5  # keep recording after paplay returns: the monitor lags the sink a little
MIN_NORMALISED_PEAK = 0.999  # correlation of the recording's best-matching segment with the chirp
MAX_SAMPLE_ERROR = 2.0 / PCM_FULL_SCALE  # s16 quantisation both ways: the round trip is bit-exact


def linear_chirp(duration_s: float, f0: float, f1: float, amplitude: float) -> np.ndarray:
    t = np.arange(int(duration_s * SAMPLE_RATE)) / SAMPLE_RATE
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * duration_s))
    # quantised to s16 here so that what we compare against is exactly what paplay sends
    return np.round(amplitude * np.sin(phase) * PCM_FULL_SCALE) / PCM_FULL_SCALE


def best_match(recording: np.ndarray, template: np.ndarray) -> tuple[int, float]:
    """Offset of ``template`` in ``recording`` (FFT cross-correlation) and the normalised peak there."""
    n = len(recording) + len(template)
    size = 1 << (n - 1).bit_length()
    corr = np.fft.irfft(np.fft.rfft(recording, size) * np.conj(np.fft.rfft(template, size)), size)
    corr = corr[: len(recording) - len(template) + 1]
    lag = int(np.argmax(np.abs(corr)))
    segment = recording[lag: lag + len(template)]
    norm = np.linalg.norm(segment) * np.linalg.norm(template)
    return lag, float(corr[lag] / norm) if norm > 0 else 0.0


@pytest.mark.live
def test_virtual_mic_roundtrip(virtual_mic, tmp_path: Path) -> None:
    import sounddevice as sd

    # PortAudio lists devices once, at initialisation: rescan, the server may have started after.
    sd._terminate()
    sd._initialize()
    names = [d["name"] for d in sd.query_devices() if d["max_input_channels"] > 0]
    assert PORTAUDIO_DEVICE in names, f"PortAudio input devices: {names}"

    chirp = linear_chirp(CHIRP_S, CHIRP_F0_HZ, CHIRP_F1_HZ, CHIRP_AMPLITUDE)
    pad = np.zeros(int(PAD_S * SAMPLE_RATE))
    wav = tmp_path / "chirp.wav"
    sf.write(wav, np.concatenate([pad, chirp, pad]), SAMPLE_RATE, subtype="PCM_16")

    blocks: list[np.ndarray] = []
    statuses: list[str] = []

    def callback(indata: np.ndarray, frames: int, time_info: object, status: sd.CallbackFlags) -> None:
        blocks.append(indata[:, 0].copy())
        if status:
            statuses.append(str(status))

    with sd.InputStream(device=PORTAUDIO_DEVICE, samplerate=SAMPLE_RATE, channels=1, dtype="float32",
                        blocksize=BLOCK_FRAMES, callback=callback):
        deadline = time.monotonic() + FIRST_CALLBACK_TIMEOUT_S
        while not blocks and time.monotonic() < deadline:
            time.sleep(BLOCK_FRAMES / SAMPLE_RATE)
        assert blocks, f"no audio callback within {FIRST_CALLBACK_TIMEOUT_S} s"
        virtual_mic.play(wav, timeout_s=PLAYBACK_TIMEOUT_S)
        time.sleep(TAIL_S)

    recording = np.concatenate(blocks)
    assert not statuses, f"PortAudio reported {statuses}"
    assert len(recording) >= len(chirp)
    lag, peak = best_match(recording, chirp)
    assert peak >= MIN_NORMALISED_PEAK, f"chirp not found in the recording (normalised peak {peak:.4f})"
    error = np.max(np.abs(recording[lag: lag + len(chirp)] - chirp))
    assert error <= MAX_SAMPLE_ERROR, f"recorded chirp differs from the played one by up to {error:.2e}"
    # the padding around the chirp came back as digital silence, not as glitches
    before = recording[max(0, lag - len(pad) // 2): lag]
    assert np.all(before == 0.0)
