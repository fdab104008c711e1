"""Soaks, marked slow.

1. The one-hour replay (issue 5 §2): a generated one-hour file replayed at fast pace through the whole
   runtime keeps resident memory flat (growth under 10 MB from minute 5 to minute 60) and gives exactly
   the prediction events the window and hop imply. Several minutes on a small machine.
2. The live soak (issue 12 §3): ``listen`` on a private PulseAudio virtual microphone, speech in a loop,
   with a process stall (SIGSTOP 3 s) and a device re-plug (3 s) in the middle: memory flat after the
   first minute (< 10 MB), no thread left behind, latency bounded and not growing, every window
   analysed, skipped or in the gap, no block dropped. ``REALTIME_SER_SOAK_S`` seconds (default 180;
   at most 600 with CI set; 1800 is the documented manual run).
"""

from __future__ import annotations

import math
import os
import signal
import time

import numpy as np
import pytest
import soundfile as sf

from realtime_ser.api import Tracker

from helpers import HIGH_F0, LOW_F0, cli_command, noise, of_type, parse_lines, voice
from test_device_faults import private_pulse, processes, speech_file  # noqa: F401 (fixtures)
from test_device_recovery import play, reload_source, unload_source

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
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
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


# ------------------------------------------------------------------ live soak (issue 12 §3)
#
# ``realtime-ser listen`` on a private PulseAudio virtual microphone for REALTIME_SER_SOAK_S seconds of
# audio (default 180: a CI run; the documented manual run is 1800, see docs/device-recovery.md), speech
# playing in a loop, with a process stall (SIGSTOP 3 s) and a device re-plug (source unloaded for 3 s,
# then loaded again) in the middle. Sampled every few seconds from /proc: resident memory and threads.

SOAK_ENV = "REALTIME_SER_SOAK_S"
SOAK_DEFAULT_S = 180.0
SOAK_CI_MAX_S = 600.0  # the CI bound
SOAK_STATUS_EVERY_S = 10.0
SOAK_SAMPLE_S = 2.0  # /proc sampling period (wall clock)
SOAK_WARMUP_S = 60.0  # memory and threads are compared with their values after the first minute
SOAK_STALL_AT = 0.4  # share of the run at which the process is stopped...
SOAK_STALL_S = 3.0
SOAK_OUTAGE_AT = 0.6  # ...and at which the device goes away
SOAK_OUTAGE_S = 3.0
SOAK_EXIT_MARGIN_S = 60.0  # past the audio duration plus the outage, the run is hung
SOAK_LATENCY_MAX_MS = 500.0  # outside the stall: one hop plus inference, with room for a loaded machine
SOAK_LATENCY_GROWTH_MS = 50.0  # the last minute's median against the first minute's
STALL_SETTLE_S = 5.0  # audio seconds after the stall and the re-plug where late windows are expected


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS (kB) and Threads of a running process."""
    out = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "Threads"):
                out[key] = int(value.split()[0])
    return out


def soak_seconds() -> float:
    value = float(os.environ.get(SOAK_ENV, SOAK_DEFAULT_S))
    assert value >= SOAK_WARMUP_S * 2, f"{SOAK_ENV} must be at least {SOAK_WARMUP_S * 2:g} s"
    if os.environ.get("CI"):
        assert value <= SOAK_CI_MAX_S, f"{SOAK_ENV}={value:g}: CI runs at most {SOAK_CI_MAX_S:g} s"
    return value


@pytest.mark.live
@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_live_soak_with_a_stall_and_a_replug(private_pulse, processes, speech_file, tiny_model_path, tmp_path,  # noqa: F811 (pytest fixtures imported from test_device_faults)
                                             live_measurements):
    duration = soak_seconds()
    out_path, err_path = tmp_path / "soak.jsonl", tmp_path / "soak.err"
    with open(out_path, "w") as out, open(err_path, "w") as err:
        listen = processes.start(cli_command() + ["listen", "--device", "pulse", "--no-dashboard",
                                                  "--model", str(tiny_model_path), "--duration", f"{duration:g}",
                                                  "--status-every", f"{SOAK_STATUS_EVERY_S:g}"],
                                 stdout=out, stderr=err, env=private_pulse.env)
    player = play(processes, private_pulse, speech_file)
    began = time.monotonic()
    samples: list[tuple[float, dict[str, int]]] = []
    stalled = outage = False
    source_gone = False
    deadline = began + duration + SOAK_OUTAGE_S + SOAK_EXIT_MARGIN_S
    while listen.poll() is None:
        now = time.monotonic()
        assert now < deadline, "the soak run does not end: hung"
        elapsed = now - began
        try:
            samples.append((elapsed, proc_status(listen.pid)))
        except FileNotFoundError:  # it has just exited
            break
        if not stalled and elapsed >= SOAK_STALL_AT * duration:
            stalled = True
            listen.send_signal(signal.SIGSTOP)
            time.sleep(SOAK_STALL_S)
            listen.send_signal(signal.SIGCONT)
        elif not outage and elapsed >= SOAK_OUTAGE_AT * duration:
            outage = source_gone = True
            unload_source(private_pulse)
            time.sleep(SOAK_OUTAGE_S)
            reload_source(private_pulse)
            source_gone = False
        if not source_gone and player.poll() is not None:
            player = play(processes, private_pulse, speech_file)  # speech in a loop
        time.sleep(SOAK_SAMPLE_S)
    returncode = listen.wait()
    stderr = err_path.read_text(errors="replace")
    assert returncode == 0, f"exit {returncode}: {stderr[-2000:]}"
    assert stderr.strip() == "", stderr
    events = parse_lines(out_path.read_text())
    end = events[-1]
    assert end["type"] == "end" and end["reason"] == "duration" and end["t"] == duration, end

    # every window accounted for: analysed + skipped + in the gap = the stream's windows
    hop = events[0]["hop_s"]
    predictions = of_type(events, "prediction")
    assert end["windows"] == len(predictions)
    assert end["windows"] + end["skipped_windows"] + end["gap_windows"] == math.floor(duration / hop), end
    assert end["dropped_blocks"] == 0
    statuses = of_type(events, "status")
    states = [s["device_state"] for s in statuses if s["device_state"] != "ok"]
    assert "stalled" in states and states.count("lost") == 1 and states.count("back") == 1, states
    back = next(s for s in statuses if s["device_state"] == "back")
    assert SOAK_OUTAGE_S - 1 <= back["gap_s"] <= SOAK_OUTAGE_S + 3, back
    # events kept coming: predictions in every status period of audio, except the one holding the gap
    gap_start = next(s["t"] for s in statuses if s["device_state"] == "lost")
    periods = {math.floor(p["t_end"] / SOAK_STATUS_EVERY_S) for p in predictions}
    expected_periods = set(range(math.floor(duration / SOAK_STATUS_EVERY_S)))
    gap_periods = {math.floor(gap_start / SOAK_STATUS_EVERY_S),
                   math.floor((gap_start + back["gap_s"]) / SOAK_STATUS_EVERY_S)}
    assert expected_periods - gap_periods <= periods, sorted(expected_periods - periods)
    assert statuses[-1]["input_overflows"] == 0 or statuses[-1]["input_overflows"] == statuses[1]["input_overflows"]

    # latency: bounded outside the stall and the re-plug, and not growing
    stall_t = [s["t"] for s in statuses if s["device_state"] in ("stalled", "back")]
    steady = [p for p in predictions if all(not (t <= p["t_end"] <= t + STALL_SETTLE_S) for t in stall_t)]
    latencies = [p["latency_ms"] for p in steady]
    assert max(latencies) < SOAK_LATENCY_MAX_MS, max(latencies)
    first = sorted(p["latency_ms"] for p in steady if p["t_end"] <= SOAK_WARMUP_S)
    last = sorted(p["latency_ms"] for p in steady if p["t_end"] >= duration - SOAK_WARMUP_S)
    first_median, last_median = first[len(first) // 2], last[len(last) // 2]
    assert last_median <= first_median + SOAK_LATENCY_GROWTH_MS, (first_median, last_median)

    # memory and threads after the first minute: flat (no growth beyond 10 MB, no thread left behind)
    after_warmup = [s for t, s in samples if t >= SOAK_WARMUP_S]
    base = after_warmup[0]
    rss_growth_mb = (max(s["VmRSS"] for s in after_warmup) - base["VmRSS"]) / KB_PER_MB
    threads = sorted({s["Threads"] for s in after_warmup})
    live_measurements[f"live soak {duration:g} s: RSS after 1 min / max / growth (MB)"] = (
        f"{base['VmRSS'] / KB_PER_MB:.1f} / {max(s['VmRSS'] for s in after_warmup) / KB_PER_MB:.1f} / "
        f"{rss_growth_mb:.1f}")
    live_measurements[f"live soak {duration:g} s: threads after 1 min / at the end"] = (
        f"{base['Threads']} / {after_warmup[-1]['Threads']}")
    live_measurements[f"live soak {duration:g} s: windows analysed / skipped / gap"] = (
        f"{end['windows']} / {end['skipped_windows']} / {end['gap_windows']}")
    live_measurements[f"live soak {duration:g} s: latency median first / last minute, max steady (ms)"] = (
        f"{first_median} / {last_median}, {max(latencies)}")
    assert rss_growth_mb < MAX_GROWTH_MB, f"resident memory grew {rss_growth_mb:.1f} MB after the first minute"
    assert after_warmup[-1]["Threads"] == base["Threads"], f"threads after the first minute: {threads}"
