"""The Rich dashboard: rendered text for known events, and stdout left alone by Live."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import textwrap
import threading

import numpy as np
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


def read_terminal(master: int) -> tuple[bytearray, threading.Thread]:
    """Everything written to a pseudo-terminal, read by a thread (so its buffer never fills up and blocks
    the dashboard) until the terminal closes: the bytes so far, and the thread to join."""
    screen = bytearray()

    def drain() -> None:
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
    return screen, reader


def test_cli_dashboard_on_a_terminal_leaves_stdout_json(tiny_model_path, tmp_path) -> None:
    """The real CLI with its dashboard on a (pseudo-)terminal stderr: stdout still gets every JSON line."""
    import pty

    from helpers import MID_F0, voice, write_audio

    wav = write_audio(tmp_path / "voice.wav", voice(MID_F0, VOICE_S))
    base = [sys.executable, "-m", "realtime_ser", "listen", "--replay", str(wav), "--pace", "fast",
            "--model", str(tiny_model_path)]
    plain = subprocess.run(base + ["--no-dashboard"], capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
    assert plain.returncode == 0, plain.stderr

    master, slave = pty.openpty()
    screen, reader = read_terminal(master)
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


# ---------------------------------------------------------------- 80x24 and stdout on the terminal (issue 12 §2)

SHIPPED_LABELS = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised", "boredom")
FIT_WIDTH, FIT_HEIGHT = 80, 24


def busy_dashboard(labels=SHIPPED_LABELS) -> Dashboard:
    """Every field filled, every label in the timeline (the longest legend), an end reason."""
    console = Console(width=FIT_WIDTH, height=FIT_HEIGHT, record=True, file=io.StringIO())
    dashboard = Dashboard(console, labels, "default-model-name", "12: a USB headset with a long name")
    for k in range(TIMELINE_LENGTH):
        probs = {label: 0.01 for label in labels}
        probs[labels[k % len(labels)]] = 1.0 - 0.01 * (len(labels) - 1)
        dashboard.update({**prediction(k, labels[k % len(labels)], speech=True), "probabilities": probs,
                          "raw_probabilities": probs, "latency_ms": 1234.0})
    dashboard.update({"type": "status", "t": 15.0, "dropped_blocks": 12345, "skipped_windows": 678,
                      "normalizer_warmup": 0.42, "callback_max_ms": 12.34, "queue_depth": 99, "queue_capacity": 100})
    dashboard.update({"type": "end", "t": 15.0, "reason": "end_of_input"})
    return dashboard


@pytest.mark.parametrize("labels", [SHIPPED_LABELS, LABELS])
def test_the_whole_dashboard_fits_80x24_with_every_number(labels) -> None:
    dashboard = busy_dashboard(labels)
    console = dashboard.console
    console.print(dashboard)
    text = console.export_text()
    rows = text.rstrip("\n").splitlines()
    assert len(rows) <= FIT_HEIGHT and max(len(r) for r in rows) <= FIT_WIDTH, text
    assert "…" not in text, text  # nothing cut short
    for label in labels:
        assert re.search(rf"│ [A-Z] {label} +\S* +\d+% raw +\d+% │", text), (label, text)
    for words in ("latency 1234 ms (max 1234 ms)", "dropped blocks 12345", "skipped windows 678", "queue 99/100",
                  "callback max 12.34 ms", "normaliser warm-up 42%", "ended: end_of_input", "windows 30",
                  "default-model-name", "12: a USB headset with a long name", "SPEECH", "-20.0 dBFS"):
        assert words in " ".join(text.replace("│", " ").split()), (words, text)  # a long name may wrap
    assert FIT_HEIGHT - len(rows) >= 2, "no room left for a status line (e.g. 'waiting for <device>')"


def test_the_frame_script_renders_at_80_columns(tmp_path) -> None:
    """scripts/dashboard_frame.py (the docs' frame) renders at 80 columns by default."""
    from pathlib import Path

    events = tmp_path / "events.jsonl"
    start = {"type": "start", "labels": list(SHIPPED_LABELS), "model": "default", "device": "0: pulse"}
    events.write_text("\n".join(json.dumps(e) for e in [start] + [prediction(k, "happy", True) for k in range(8)]))
    script = Path(__file__).resolve().parent.parent / "scripts" / "dashboard_frame.py"
    r = subprocess.run([sys.executable, str(script), str(events)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    rows = r.stdout.rstrip("\n").splitlines()
    assert max(len(row) for row in rows) == FIT_WIDTH and len(rows) <= FIT_HEIGHT


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")


def run_on_a_terminal(argv: list[str], *, stdout_on_terminal: bool) -> tuple[int, str, str]:
    """Run ``argv`` with stderr (and stdout too if asked) on a real pseudo-terminal of 80x24; returns
    (exit code, what the terminal received, what a piped stdout received)."""
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", FIT_HEIGHT, FIT_WIDTH, 0, 0))
    screen, reader = read_terminal(master)
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env["TERM"] = "xterm-256color"
    try:
        r = subprocess.run(argv, stdout=slave if stdout_on_terminal else subprocess.PIPE, stderr=slave,
                           text=True, timeout=CHILD_TIMEOUT_S, env=env)
    finally:
        os.close(slave)
        reader.join(timeout=CHILD_TIMEOUT_S)
        os.close(master)
    return r.returncode, screen.decode("utf-8", errors="replace"), r.stdout or ""


def test_stdout_on_the_dashboards_terminal_prints_whole_lines_above_it(tiny_model_path, tmp_path) -> None:
    """Plain `realtime-ser listen` in a terminal: stdout and stderr are the same terminal. The dashboard
    is drawn and the start, change and end lines are printed above it, whole (they are not written
    into the middle of the live view, where its next refresh would overwrite them)."""
    from helpers import HIGH_F0, LOW_F0, voice, write_audio

    wav = write_audio(tmp_path / "voice.wav", np.concatenate([voice(LOW_F0, 3.0, seed=1), voice(HIGH_F0, 3.0, seed=2)]))
    base = [sys.executable, "-m", "realtime_ser", "listen", "--replay", str(wav), "--pace", "realtime",
            "--model", str(tiny_model_path)]
    code, screen, _ = run_on_a_terminal(base, stdout_on_terminal=True)
    assert code == 0, screen[-2000:]
    plain = ANSI.sub("", screen)
    assert "probabilities" in plain and "realtime-ser" in plain  # the dashboard
    json_lines = [json.loads(m.group(0)) for m in re.finditer(r'\{"schema".*\}(?=\n)', plain)]
    types = [e["type"] for e in json_lines]
    assert types[0] == "start" and types[-1] == "end" and "change" in types, types
    assert "prediction" not in types and "status" not in types, types
    assert "redirect stdout" in plain


def test_stdout_piped_with_the_dashboard_on_a_terminal_gets_every_line(tiny_model_path, tmp_path) -> None:
    from helpers import MID_F0, voice, write_audio

    wav = write_audio(tmp_path / "voice.wav", voice(MID_F0, 2.0))
    base = [sys.executable, "-m", "realtime_ser", "listen", "--replay", str(wav), "--pace", "fast",
            "--model", str(tiny_model_path)]
    code, screen, out = run_on_a_terminal(base, stdout_on_terminal=False)
    assert code == 0, screen[-2000:]
    types = [json.loads(line)["type"] for line in out.splitlines()]
    assert types.count("prediction") == 4 and types[0] == "start" and types[-1] == "end"
    assert '{"schema"' not in ANSI.sub("", screen)  # no event on the terminal: they all went to the pipe
