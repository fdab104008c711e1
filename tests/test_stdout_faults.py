"""stdout and stderr that cannot be written (issue 12 §2), for `listen`, `predict` and `devices --json`
run as a user runs them: `> /dev/full`, `>&-`, a file that fills up, a reader that leaves (`| head`),
`2>&-` and `2>/dev/full`. Expected: one line on stderr (when there is a stderr), the documented exit
code, every event written before the fault kept whole."""

from __future__ import annotations

import json
import resource
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest

from helpers import LOW_F0, cli_command, voice, write_audio

SR = 16_000
TIMEOUT_S = 60
EXIT_BAD_AUDIO, EXIT_OUTPUT, EXIT_PIPE_CLOSED = 3, 6, 141
FILE_LIMIT_BYTES = 4096  # RLIMIT_FSIZE of the child: its stdout file "fills up" here


@pytest.fixture(scope="module")
def wavs(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("stdout_faults")
    x = np.concatenate([voice(LOW_F0, 3.0, seed=21), np.zeros(SR, np.float32)])
    return [write_audio(d / f"clip{k}.wav", x) for k in range(3)]


@pytest.fixture(scope="module")
def long_wav(tmp_path_factory) -> Path:
    x = np.concatenate([voice(LOW_F0, 4.0, seed=22), np.zeros(SR, np.float32)])
    return write_audio(tmp_path_factory.mktemp("stdout_faults_long") / "long.wav", np.tile(x, 12))


def command(kind: str, model: Path, wavs: list[Path], long_wav: Path) -> list[str]:
    if kind == "listen":
        return [*cli_command(), "listen", "--replay", str(long_wav), "--pace", "fast", "--model", str(model),
                "--no-dashboard", "--status-every", "1"]
    if kind == "predict":
        return [*cli_command(), "predict", *map(str, wavs), "--model", str(model)]
    return [*cli_command(), "devices", "--json"]


COMMANDS = ["listen", "predict", pytest.param("devices", marks=pytest.mark.live)]


def the_error_line(stderr: str, *words: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("realtime-ser: error: "), stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("kind", COMMANDS)
def test_stdout_full(kind, tiny_model_path, wavs, long_wav):
    with open("/dev/full", "w") as full:
        r = subprocess.run(command(kind, tiny_model_path, wavs, long_wav), stdout=full, stderr=subprocess.PIPE,
                           text=True, timeout=TIMEOUT_S)
    assert r.returncode == EXIT_OUTPUT, r.stderr
    the_error_line(r.stderr, "cannot write to stdout", "No space left on device")


@pytest.mark.parametrize("kind", COMMANDS)
def test_stdout_closed(kind, tiny_model_path, wavs, long_wav):
    """``>&-``: the program starts without a file descriptor 1 and says so at once."""
    argv = command(kind, tiny_model_path, wavs, long_wav)
    r = subprocess.run(["bash", "-c", 'exec "$@" >&-', "bash", *argv], stderr=subprocess.PIPE, text=True,
                       timeout=TIMEOUT_S)
    assert r.returncode == EXIT_OUTPUT, r.stderr
    the_error_line(r.stderr, "stdout is closed")


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_LIMIT_BYTES, FILE_LIMIT_BYTES))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead


@pytest.mark.parametrize("kind", ["listen", "predict"])
def test_a_file_that_fills_up_keeps_every_whole_event(kind, tiny_model_path, wavs, long_wav, tmp_path):
    out_path = tmp_path / "events.jsonl"
    files = wavs * 12 if kind == "predict" else wavs  # enough lines to pass the limit
    with open(out_path, "w") as out:
        r = subprocess.run(command(kind, tiny_model_path, files, long_wav), stdout=out, stderr=subprocess.PIPE,
                           text=True, timeout=TIMEOUT_S, preexec_fn=_limit_file_size)
    assert r.returncode == EXIT_OUTPUT, r.stderr
    line = the_error_line(r.stderr, "cannot write to stdout", "File too large")
    text = out_path.read_text()
    assert text.endswith("\n"), "a torn last line was left in the file"
    events = [json.loads(ln) for ln in text.splitlines()]
    assert len(events) >= 5 and len(text) <= FILE_LIMIT_BYTES
    assert f"the {len(events)} line(s) before were written" in line
    if kind == "listen":
        assert events[0]["type"] == "start" and any(e["type"] == "prediction" for e in events)


@pytest.mark.parametrize("kind", COMMANDS)
def test_reader_leaves_at_once_exit_141_quietly(kind, tiny_model_path, wavs, long_wav):
    """Like ``| head -0``: the pipe is closed before the first line; the conventional 141, nothing on stderr."""
    p = subprocess.Popen(command(kind, tiny_model_path, wavs, long_wav), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    p.stdout.close()
    err = p.stderr.read()
    p.wait(timeout=TIMEOUT_S)
    assert p.returncode == EXIT_PIPE_CLOSED, err
    assert err == ""


def test_predict_into_head_1(tiny_model_path, wavs, long_wav):
    r = subprocess.run(["bash", "-c", '"$@" | head -1; exit "${PIPESTATUS[0]}"', "bash",
                        *command("predict", tiny_model_path, wavs * 200, long_wav)],
                       capture_output=True, text=True, timeout=TIMEOUT_S)
    assert r.returncode == EXIT_PIPE_CLOSED, r.stderr
    assert r.stderr == "" and len(r.stdout.splitlines()) == 1 and json.loads(r.stdout)["emotion"]


STDERR_CASES = [
    ("missing file", 3, lambda m, w: ["predict", str(w[0].parent / "none.wav"), "--model", str(m)]),
    ("bad arguments", 2, lambda m, w: ["listen", "--bogus"]),
    ("bad number", 2, lambda m, w: ["listen", "--duration", "nan"]),
    ("missing model", 4, lambda m, w: ["predict", str(w[0]), "--model", str(w[0].parent / "none.onnx")]),
    ("good run", 0, lambda m, w: ["predict", str(w[0]), "--model", str(m)]),
]


@pytest.mark.parametrize("redirect", ["2>&-", "2>/dev/full"])
@pytest.mark.parametrize("case, code, args", STDERR_CASES, ids=[c[0] for c in STDERR_CASES])
def test_exit_codes_stay_with_stderr_closed_or_full(redirect, case, code, args, tiny_model_path, wavs):
    argv = [*cli_command(), *args(tiny_model_path, wavs)]
    r = subprocess.run(["bash", "-c", f'exec "$@" {redirect}', "bash", *argv], stdout=subprocess.PIPE, text=True,
                       timeout=TIMEOUT_S)
    assert r.returncode == code, (case, redirect, r.returncode)
    if case in ("missing file", "good run"):  # stdout still gets its line
        assert len(r.stdout.splitlines()) == 1 and "file" in json.loads(r.stdout)
