"""The Rich dashboard: rendered text for known events, and stdout left alone by Live."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap

import pytest
from rich.console import Console

from realtime_ser.sinks.dashboard import (
    SILENCE,
    SILENCE_CELL,
    TIMELINE_LENGTH,
    Dashboard,
    abbreviations,
    bar,
    big_text_lines,
)

LABELS = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")
CONSOLE_WIDTH = 100
HOP_S = 0.5
WINDOW_S = 2.0


def capture_console(width: int = CONSOLE_WIDTH) -> Console:
    return Console(record=True, width=width, file=io.StringIO(), color_system="truecolor")


def render(dashboard: Dashboard, console: Console) -> str:
    console.print(dashboard)
    return console.export_text()


def prediction(k: int, emotion: str, speech: bool, **extra) -> dict:
    """The k-th window's prediction event, shaped like the runtime's JSON events."""
    probs = {label: 0.02 for label in LABELS}
    if speech:
        probs[emotion] = 1.0 - 0.02 * (len(LABELS) - 1)
    event = {
        "type": "prediction",
        "t_start": max(0.0, (k + 1) * HOP_S - WINDOW_S),
        "t_end": (k + 1) * HOP_S,
        "emotion": emotion if speech else SILENCE,
        "confidence": probs.get(emotion) if speech else None,
        "probabilities": probs if speech else None,  # the runtime sends null in silence
        "raw_probabilities": probs if speech else None,
        "speech": speech,
        "level_dbfs": -20.0 if speech else -70.0,
        "valence": -0.5,
        "arousal": 0.75,
        "latency_ms": 30.0 + k,
        "dropped_blocks": 0,
        "skipped_windows": 0,
    }
    event.update(extra)
    return event


@pytest.fixture
def dashboard() -> Dashboard:
    return Dashboard(capture_console(), LABELS, "test-model-v1", "virtual-mic-7")


def test_waiting_state_before_any_event(dashboard: Dashboard) -> None:
    text = render(dashboard, capture_console())
    assert "waiting for audio" in text
    assert "test-model-v1" in text and "virtual-mic-7" in text
    assert "latency —" in text


def test_speech_events_show_emotion_bars_latency_and_counters(dashboard: Dashboard) -> None:
    for k in range(6):
        dashboard.update(prediction(k, "angry", speech=True))
    dashboard.update({"type": "change", "t_start": 1.0, "t_end": 3.0, "emotion": "angry", "confidence": 0.86})
    dashboard.update({"type": "status", "t": 3.25, "dropped_blocks": 3, "skipped_windows": 2,
                      "normalizer_warmup": 0.25, "latency_ms": 41.0, "callback_max_ms": 0.12,
                      "queue_depth": 1, "queue_capacity": 64})
    text = render(dashboard, capture_console())

    for row in big_text_lines("angry"):
        assert row in text  # the big block-letter rendering
    assert "confidence 86%" in text
    for label in LABELS:
        assert label in text
    assert "86%" in text and "raw" in text
    assert "SPEECH" in text
    assert "-20.0 dBFS" in text
    assert "latency 41 ms (max 41 ms)" in text
    assert "dropped blocks 3" in text
    assert "skipped windows 2" in text
    assert "normaliser warm-up 25%" in text
    assert "audio 3.2 s" in text  # status events carry "t"
    assert "callback max 0.12 ms" in text
    assert "queue 1/64" in text
    assert "valence -0.50" in text and "arousal +0.75" in text
    assert "windows 6 · changes 1" in text
    assert "test-model-v1" in text and "virtual-mic-7" in text


def test_silence_state_after_speech(dashboard: Dashboard) -> None:
    for k in range(4):
        dashboard.update(prediction(k, "happy", speech=True))
    for k in range(4, 7):
        dashboard.update(prediction(k, "happy", speech=False))
    text = render(dashboard, capture_console())

    for row in big_text_lines(SILENCE):
        assert row in text
    assert "SPEECH" not in text
    assert "○ silence" in text
    assert "confidence" not in text  # no emotion is claimed on silence
    assert "%" not in text.split("probabilities")[1].split("input")[0]  # no stale bars in silence
    letter = abbreviations(LABELS)["happy"]
    assert f"{letter} {letter} {letter} {letter} {SILENCE_CELL} {SILENCE_CELL} {SILENCE_CELL}" in text


def test_timeline_keeps_the_last_windows_only() -> None:
    console = capture_console()
    dashboard = Dashboard(console, LABELS, "m", "d")
    letters = abbreviations(LABELS)
    extra = 7
    for k in range(TIMELINE_LENGTH + extra):
        emotion = "sad" if k < extra else "calm"
        dashboard.update(prediction(k, emotion, speech=True))
    text = render(dashboard, console)
    timeline_row = " ".join([letters["calm"]] * TIMELINE_LENGTH)
    assert timeline_row in text
    assert " ".join([letters["calm"]] * (TIMELINE_LENGTH + 1)) not in text


def test_abbreviations_are_distinct() -> None:
    letters = abbreviations(LABELS + ("boredom", "sadness"))
    assert len(set(letters.values())) == len(letters)
    assert letters["sad"] == "S" and letters["surprised"] != "S"


def test_bar_fill_is_proportional_and_clamped() -> None:
    width = 10
    assert bar(0.0, width) == " " * width
    assert bar(1.0, width) == "█" * width
    assert bar(2.0, width) == "█" * width
    assert bar(-1.0, width) == " " * width
    assert bar(float("nan"), width) == " " * width
    assert bar(0.5, width).startswith("█" * (width // 2))
    assert len(bar(0.37, width)) == width


def test_narrow_console_falls_back_to_plain_emotion_name() -> None:
    narrow = 70  # the emotion panel gets about 30 columns, the big word needs 43
    console = capture_console(width=narrow)
    dashboard = Dashboard(console, LABELS, "m", "d")
    dashboard.update(prediction(0, "surprised", speech=True))
    text = render(dashboard, console)
    assert "SURPRISED" in text
    assert big_text_lines("surprised")[0] not in text


def test_malformed_and_unknown_events_do_not_break_rendering(dashboard: Dashboard) -> None:
    dashboard.update({"type": "something-new", "foo": 1})
    dashboard.update({"type": "prediction", "emotion": "angry", "latency_ms": float("nan"),
                      "probabilities": {"angry": "high", "sad": 0.5}, "level_dbfs": None})
    dashboard.update({"type": "status", "normalizer_warmup": True})
    text = render(dashboard, capture_console())
    assert "angry" in text
    assert "latency —" in text
    assert "normaliser warming up" in text


def test_dashboard_never_writes_to_stdout(dashboard: Dashboard, capsys: pytest.CaptureFixture[str]) -> None:
    console = capture_console()
    dashboard.update(prediction(0, "angry", speech=True))
    render(dashboard, console)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == ""


# A child process runs a Live dashboard on a (forced) terminal stderr while printing
# JSON lines to stdout, as the CLI does. Rich only redirects stdout when its console is
# a terminal, hence force_terminal.
_LIVE_CHILD = textwrap.dedent(
    """
    import json, sys, time
    from rich.console import Console
    from rich.live import Live
    from realtime_ser.sinks.dashboard import Dashboard, live_display

    mode, n_lines = sys.argv[1], int(sys.argv[2])
    console = Console(stderr=True, force_terminal=True, width=100)
    dashboard = Dashboard(console, ["angry", "happy"], "m", "d")
    live = live_display(dashboard) if mode == "ours" else Live(dashboard, console=console)
    with live:
        for k in range(n_lines):
            event = {"type": "prediction", "t_end": k * 0.5, "emotion": "angry", "speech": True}
            dashboard.update(event)
            print(json.dumps(event), flush=True)
            live.refresh()
    """
)
N_LINES = 5
CHILD_TIMEOUT_S = 120


def _run_live_child(mode: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _LIVE_CHILD, mode, str(N_LINES)], capture_output=True,
                          text=True, timeout=CHILD_TIMEOUT_S, check=True)


def test_live_display_leaves_stdout_to_the_json_lines() -> None:
    result = _run_live_child("ours")
    lines = result.stdout.splitlines()
    assert len(lines) == N_LINES
    assert [json.loads(line)["t_end"] for line in lines] == [k * HOP_S for k in range(N_LINES)]
    assert "realtime-ser" in result.stderr  # the dashboard itself went to stderr


def test_rich_default_live_would_swallow_stdout() -> None:
    """The control for the test above: Rich's default redirect takes the JSON lines off stdout."""
    result = _run_live_child("rich-default")
    assert result.stdout.count('"type"') < N_LINES


def test_start_and_end_events_update_names_and_state(dashboard: Dashboard) -> None:
    dashboard.update({"type": "start", "model": "ravdess-8 v2", "device": "pulse (16000 Hz, 1 ch)",
                      "labels": list(LABELS)})
    dashboard.update(prediction(0, "calm", speech=True))
    dashboard.update({"type": "end", "t": 0.75, "reason": "end_of_input", "windows": 1})
    text = render(dashboard, capture_console())
    assert "ravdess-8 v2" in text and "pulse (16000 Hz, 1 ch)" in text
    assert "test-model-v1" not in text
    assert "ended: end_of_input" in text
    assert "audio 0.8 s" in text


VOICE_S = 4.0
READ_CHUNK = 4096


def test_cli_dashboard_on_a_terminal_leaves_stdout_json(tiny_model_path, tmp_path) -> None:
    """The real CLI with its dashboard on a (pseudo-)terminal stderr: stdout still gets every JSON line."""
    import os
    import pty
    import threading

    from helpers import MID_F0, voice, write_audio

    wav = write_audio(tmp_path / "voice.wav", voice(MID_F0, VOICE_S))
    base = [sys.executable, "-m", "realtime_ser", "listen", "--replay", str(wav), "--pace", "fast",
            "--model", str(tiny_model_path)]
    plain = subprocess.run(base + ["--no-dashboard"], capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
    assert plain.returncode == 0, plain.stderr

    master, slave = pty.openpty()
    screen = bytearray()

    def drain() -> None:  # keep the terminal's buffer from filling up and blocking the dashboard
        while True:
            try:
                chunk = os.read(master, READ_CHUNK)
            except OSError:  # the terminal closed
                return
            if not chunk:
                return
            screen.extend(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        with_dashboard = subprocess.run(base + ["--dashboard"], stdout=subprocess.PIPE, stderr=slave,
                                        text=True, timeout=CHILD_TIMEOUT_S)
    finally:
        os.close(slave)
        reader.join(timeout=CHILD_TIMEOUT_S)
        os.close(master)
    assert with_dashboard.returncode == 0, screen.decode(errors="replace")[-2000:]
    events = [json.loads(line) for line in with_dashboard.stdout.splitlines()]
    expected = [json.loads(line) for line in plain.stdout.splitlines()]
    assert [e["type"] for e in events] == [e["type"] for e in expected]
    assert "realtime-ser" in screen.decode(errors="replace")  # the dashboard was drawn, on stderr
