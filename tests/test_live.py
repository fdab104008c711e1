"""Live tests on the PulseAudio virtual microphone (started by .ci/run or by the ``virtual_mic`` fixture).

1. ``test_virtual_mic_roundtrip``: a chirp played with ``paplay`` into the virtual microphone comes
   back through sounddevice's "pulse" input, found by cross-correlation and sample-exact: the device
   the live test depends on really works.
2. ``test_listen_live_matches_replay``: a RAVDESS speech file played into the microphone while
   ``realtime-ser listen`` captures it gives the same smoothed emotions, at the same audio times within
   one hop, as ``realtime-ser listen --replay`` of the same file; every stdout line is JSON.

   The live stream starts before playback, at an arbitrary point of the 0.5 s window grid, and the
   live path resamples (PortAudio opens "pulse" at 44.1 kHz stereo). So the file is also replayed with
   the grid shifted by tenths of a hop: the file must give the same smoothed emotions at every shift
   (else the next candidate file is tried), and the shift and whole-hop offset whose per-window input
   levels match the live run's (to a fraction of a dB) align the two streams before comparing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from helpers import cli_command, of_type, parse_lines

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


# ------------------------------------------------------------------ listen vs replay

CLI_MODULE = REPO_ROOT / "realtime_ser" / "cli.py"
SHIPPED_MODEL = REPO_ROOT / "models" / "default.onnx"
MODEL_ENV = "REALTIME_SER_LIVE_TEST_MODEL"  # a different .onnx for this test (development only)



def ravdess_clips(actor: int, codes: tuple[str, ...]) -> tuple[str, ...]:
    """RAVDESS speech clips of one actor; a code is emotion-intensity-statement, e.g. "05-02-01"."""
    return tuple(f"ravdess/Audio_Speech_Actors_01-24/Actor_{actor:02d}/03-01-{code}-01-{actor:02d}.flac"
                 for code in codes)


ANGRY_THEN_HAPPY = ("05-02-01", "05-02-02", "03-02-01", "03-02-02")  # strong intensity, both statements
ANGRY_THEN_SAD = ("05-02-01", "05-02-02", "04-02-01", "04-02-02")
# Candidate files, tried in order: the test uses the first one the model classifies steadily (same
# smoothed emotions at every window-grid phase). Each: four clips of one actor, trimmed, short gaps.
CANDIDATE_CLIP_SETS = tuple(ravdess_clips(actor, codes) for codes in (ANGRY_THEN_HAPPY, ANGRY_THEN_SAD)
                            for actor in range(1, 25))
TRIM_THRESHOLD = 10 ** (-40 / 20)  # trim each clip's leading and trailing room noise below -40 dBFS
GAP_S = 0.3
LEAD_S = 1.0
MIN_SPEECH_S = 6.0
STATUS_EVERY_S = 1.0

STARTUP_TIMEOUT_S = 120.0  # model load and the first half-second of audio, on a slow CI machine
STOP_TIMEOUT_S = 30.0
REPLAY_TIMEOUT_S = 300.0
EXIT_SIGINT = 130  # documented in realtime_ser/cli.py
MAX_LATENCY_MS = 2000.0  # generous: a live bound, not a benchmark
MAX_CALLBACK_MS = 20.0  # generous too: well under a 50 ms capture block, past which audio would be lost
TIME_TOLERANCE_S = 1e-6
PHASES = 10  # replays with the window grid shifted by 0, 1/10, ... 9/10 of a hop
LEVEL_FLOOR_DBFS = -60.0  # window levels below this count as silence when aligning
MAX_LEVEL_MISMATCH_DB = 3.0  # mean |live - replay| window level at the best alignment


def build_speech_file(shared_data: Path, clips: tuple[str, ...], out: Path, window_s: float,
                      hop_s: float) -> tuple[np.ndarray, float]:
    """Trimmed clips with gaps, silence before and enough after for the windows to fall silent.

    Returns the samples written and the seconds of (trimmed) speech in them."""
    pieces = [np.zeros(int(LEAD_S * SAMPLE_RATE), dtype=np.float32)]
    speech = 0
    for name in clips:
        x, rate = sf.read(shared_data / name, dtype="float32")
        assert rate == SAMPLE_RATE and x.ndim == 1, f"{name}: expected 16 kHz mono"
        loud = np.flatnonzero(np.abs(x) >= TRIM_THRESHOLD)
        clip = x[loud[0]: loud[-1] + 1]
        speech += len(clip)
        pieces += [clip, np.zeros(int(GAP_S * SAMPLE_RATE), dtype=np.float32)]
    # after the last clip: one whole window of silence, two hops for the smoothing to settle
    pieces.append(np.zeros(int((window_s + 2 * hop_s) * SAMPLE_RATE), dtype=np.float32))
    audio = np.concatenate(pieces)
    sf.write(out, audio, SAMPLE_RATE, subtype="PCM_16")
    return audio, speech / SAMPLE_RATE


def replay(wav: Path, options: list[str]) -> list[dict]:
    """``realtime-ser listen --replay wav --pace fast``: its events (every stdout line must be JSON)."""
    run = subprocess.run(cli_command() + ["listen", "--replay", str(wav), "--pace", "fast"] + options,
                         capture_output=True, text=True, timeout=REPLAY_TIMEOUT_S)
    assert run.returncode == 0, f"replay of {wav.name} exited {run.returncode}: {run.stderr[-2000:]}"
    return parse_lines(run.stdout, f"replay of {wav.name}")


def changes(events: list[dict], shift_s: float = 0.0) -> list[tuple[float, str]]:
    """(t_end - shift_s, emotion) of every change of the smoothed emotion."""
    return [(round(e["t_end"] - shift_s, 3), e["emotion"]) for e in of_type(events, "change")]


def window_levels(events: list[dict]) -> dict[float, float]:
    """t_end -> the window's input level (dBFS, floored), for every prediction."""
    return {round(e["t_end"], 3): max(e["level_dbfs"], LEVEL_FLOOR_DBFS) for e in of_type(events, "prediction")}


def align(live: list[dict], phase_runs: list[tuple[float, list[dict]]], hop_s: float) -> tuple[int, float, float]:
    """Where in the live stream the file began: ``(phase index, t0 seconds, mean level mismatch dB)``.

    The replay of the file padded with ``pad`` seconds has windows ending at file time ``t - pad``; the
    live windows end at file time ``t - t0``. With ``t0 = pad + m * hop``, live window ``t`` is replay
    window ``t - m * hop``. The best (phase, m) is the one whose per-window input levels agree best
    (live windows before the stream or after it ended count as silence)."""
    live_levels = window_levels(live)
    live_end = max(live_levels)
    best: tuple[float, int, float] | None = None
    for k, (pad_s, events) in enumerate(phase_runs):
        levels = window_levels(events)
        for m in range(int(live_end / hop_s) + 1):
            shift = m * hop_s
            mismatch = float(np.mean([abs(level - live_levels.get(round(t + shift, 3), LEVEL_FLOOR_DBFS))
                                      for t, level in levels.items()]))
            if best is None or mismatch < best[0]:
                best = (mismatch, k, pad_s + shift)
    assert best is not None
    return best[1], best[2], best[0]


def phase_replays(audio: np.ndarray, directory: Path, hop_s: float,
                  options: list[str]) -> tuple[list[tuple[float, list[dict]]], str | None]:
    """Replays of ``audio`` padded by 0, 1/PHASES, ... of a hop: ``[(pad_s, events)]``, and None when they
    all give the same smoothed emotions, else what differed (the replays stop at the first difference)."""
    runs: list[tuple[float, list[dict]]] = []
    for k in range(PHASES):
        pad_s = k * hop_s / PHASES
        shifted = directory / f"phase{k}.wav"
        sf.write(shifted, np.concatenate([np.zeros(round(pad_s * SAMPLE_RATE)), audio]), SAMPLE_RATE,
                 subtype="PCM_16")
        runs.append((pad_s, replay(shifted, options)))
        sequence = [emotion for _, emotion in changes(runs[-1][1])]
        if sequence != [emotion for _, emotion in changes(runs[0][1])]:
            return runs, (f"grid shifted by {pad_s:.3f} s: {changes(runs[-1][1], pad_s)}, "
                          f"not shifted: {changes(runs[0][1])}")
    return runs, None


def wait_for_first_prediction(process: subprocess.Popen, stdout_path: Path, stderr_path: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"listen exited early with {process.returncode}: "
                                 f"{stderr_path.read_text(errors='replace')[-2000:]}")
        if '"prediction"' in stdout_path.read_text(errors="replace"):
            return
        time.sleep(STATUS_EVERY_S / 10)
    raise AssertionError(f"listen produced no prediction within {STARTUP_TIMEOUT_S} s: "
                         f"{stderr_path.read_text(errors='replace')[-2000:]}")


@pytest.mark.live
@pytest.mark.corpus
@pytest.mark.slow
def test_listen_live_matches_replay(virtual_mic, shared_data_dir: Path, tmp_path: Path, missing,
                                    live_measurements: dict) -> None:
    model = Path(os.environ.get(MODEL_ENV, SHIPPED_MODEL))
    absent = [str(p.relative_to(REPO_ROOT)) if p.is_relative_to(REPO_ROOT) else str(p)
              for p in (CLI_MODULE, model) if not p.exists()]
    if absent:
        missing(f"the live-vs-replay comparison needs {' and '.join(absent)} (not there yet)")
    card = json.loads(model.with_suffix(".json").read_text(encoding="utf-8"))
    window_s, hop_s = float(card["window_s"]), float(card["hop_s"])

    common = ["--no-dashboard", "--model", str(model)]

    # The live stream's window grid falls anywhere against the file. Use a file whose replays at
    # PHASES grid phases agree on the smoothed emotions (a property of the model and the clips, not
    # of the live path); the phase whose window levels match the live run's is the live run's phase.
    unsteady = []
    for n, clips in enumerate(CANDIDATE_CLIP_SETS):
        directory = tmp_path / f"candidate{n}"
        directory.mkdir()
        wav = directory / "speech.wav"
        audio, speech_s = build_speech_file(shared_data_dir, clips, wav, window_s, hop_s)
        if speech_s <= MIN_SPEECH_S:
            unsteady.append(f"{clips[0].split('/')[-2]}: only {speech_s:.1f} s of speech")
            continue
        phase_runs, difference = phase_replays(audio, directory, hop_s, common)
        if difference is None:
            break
        unsteady.append(f"{clips[0].split('/')[-2]}: {difference}")
    else:
        pytest.fail("precondition: model " + model.name + " gives no candidate file the same smoothed emotions "
                    "at every window-grid phase, so live and replay cannot be compared; add steadier clips "
                    "to CANDIDATE_CLIP_SETS.\n" + "\n".join(unsteady))
    live_measurements["speech file"] = f"{clips[0].split('/')[-2]}, {speech_s:.1f} s of speech"

    # live: listen on the virtual microphone, play the file into it, stop with Ctrl-C (SIGINT)
    live_out, live_err = tmp_path / "live.jsonl", tmp_path / "live.err"
    with open(live_out, "w") as out, open(live_err, "w") as err:
        process = subprocess.Popen(cli_command() + ["listen", "--device", PORTAUDIO_DEVICE,
                                                    "--status-every", str(STATUS_EVERY_S)] + common,
                                   stdout=out, stderr=err)
        try:
            wait_for_first_prediction(process, live_out, live_err)
            virtual_mic.play(wav, timeout_s=PLAYBACK_TIMEOUT_S)
            time.sleep(2 * hop_s)  # the last windows of the file reach the worker
            process.send_signal(signal.SIGINT)
            returncode = process.wait(timeout=STOP_TIMEOUT_S)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    stderr = live_err.read_text(errors="replace")
    assert returncode == EXIT_SIGINT, f"listen exited {returncode} after SIGINT: {stderr[-2000:]}"
    live = parse_lines(live_out.read_text(), "live")

    # the live run was healthy: ended by the signal, nothing dropped or skipped, latency bounded
    assert live[-1]["type"] == "end" and live[-1]["reason"] == "stopped", live[-1]
    statuses = of_type(live, "status")
    assert statuses, "no status events in the live run"
    assert live[-1]["dropped_blocks"] == 0 and live[-1]["skipped_windows"] == 0, live[-1]
    latencies = [e["latency_ms"] for e in of_type(live, "prediction") if e.get("latency_ms") is not None]
    assert latencies and max(latencies) < MAX_LATENCY_MS, f"live latencies (ms): max {max(latencies, default=None)}"
    live_measurements["live latency max (ms)"] = max(latencies)
    callback_max = [s["callback_max_ms"] for s in statuses if s.get("callback_max_ms") is not None]
    if callback_max:  # the runtime measures its audio callback's longest run and reports it
        live_measurements["audio callback max (ms)"] = max(callback_max)
        assert max(callback_max) < MAX_CALLBACK_MS, f"the audio callback ran for {max(callback_max)} ms"

    # align (phase and whole hops), then compare the smoothed emotions and when they changed
    k, t0, mismatch = align(live, phase_runs, hop_s)
    pad_s, reference = phase_runs[k]
    live_measurements["file start in the live stream (s)"] = t0
    live_measurements["window level mismatch live vs replay (dB)"] = round(mismatch, 2)
    assert mismatch <= MAX_LEVEL_MISMATCH_DB, (
        f"live window levels differ from the replay's by {mismatch:.1f} dB on average at the best alignment "
        f"(file starting at {t0:.3f} s of the live stream): the live audio is not the file")
    assert of_type(live, "prediction")[0]["t_end"] <= t0, "the file began before the live stream?"
    live_changes, replay_changes = changes(live, t0), changes(reference, pad_s)
    assert [em for _, em in live_changes] == [em for _, em in replay_changes], (
        f"smoothed emotions differ (file at {t0:.3f} s of the live stream)\n"
        f" live:   {live_changes}\n replay: {replay_changes}")
    for (t_live, emotion), (t_replay, _) in zip(live_changes, replay_changes, strict=False):
        assert abs(t_live - t_replay) <= hop_s + TIME_TOLERANCE_S, (
            f"change to {emotion}: live at {t_live:.3f} s, replay at {t_replay:.3f} s of the file "
            f"(more than one hop apart)")
    assert len(replay_changes) >= 2, f"expected at least silence -> emotion -> silence: {replay_changes}"
