"""Stop signals as a user sends them (real subprocesses, real signals): Ctrl-C at any moment of
start-up, SIGHUP when the terminal closes (issue 12 §2)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import LOW_F0, cli_command, voice, write_audio

SR = 16_000
TIMEOUT_S = 60
STARTUP_STEPS = 20  # SIGINT at 21 moments from 0 to the first event line (imports, model, file, stream)
PACKAGE_DIR = str(Path(__file__).resolve().parent.parent / "realtime_ser")
EXIT_SIGHUP, EXIT_SIGINT, EXIT_SIGTERM = 129, 130, 143


@pytest.fixture(scope="module")
def long_wav(tmp_path_factory) -> Path:
    x = np.concatenate([voice(LOW_F0, 5.0, seed=11), np.zeros(15 * SR, np.float32)])
    return write_audio(tmp_path_factory.mktemp("signals") / "long.wav", x)


def listen(model: Path, wav: Path) -> subprocess.Popen:
    return subprocess.Popen([*cli_command(), "listen", "--replay", str(wav), "--model", str(model), "--no-dashboard"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def seconds_to_first_line(model: Path, wav: Path) -> float:
    """How long start-up takes on this machine now (until the start event is out)."""
    t0 = time.monotonic()
    p = listen(model, wav)
    assert p.stdout is not None and p.stderr is not None  # piped
    try:
        assert p.stdout.readline(), p.stderr.read()
        return time.monotonic() - t0
    finally:
        p.kill()
        p.communicate(timeout=TIMEOUT_S)


def test_interrupt_at_any_moment_of_start_up_exits_130_without_traceback(tiny_model_path, long_wav):
    """Ctrl-C at 21 moments from 0 to the first event (0.3-0.5 s on an idle machine): exit 130 (or, before
    Python itself has started, killed by SIGINT, which a shell also reports as 130), nothing on stderr.
    A KeyboardInterrupt that CPython prints while it is still starting up (site, .pth files: before any
    realtime_ser code runs) is the only other outcome allowed: its traceback goes through no file of
    the package. The moments scale with the machine's current speed (a busy machine starts slower)."""
    start_up_s = seconds_to_first_line(tiny_model_path, long_wav)
    outcomes = []
    for delay in [start_up_s * k / STARTUP_STEPS for k in range(STARTUP_STEPS + 1)]:
        p = listen(tiny_model_path, long_wav)
        time.sleep(delay)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=TIMEOUT_S)
        outcomes.append((delay, p.returncode, err))
        in_python_start_up = "Traceback" in err and PACKAGE_DIR not in err and "realtime_ser/" not in err \
            and "ImportError" not in err
        if in_python_start_up:
            continue
        assert p.returncode in (EXIT_SIGINT, -signal.SIGINT), (delay, p.returncode, err)
        assert err == "", (delay, err)
        events = [json.loads(line) for line in out.splitlines()]
        if events:  # interrupted after the stream started: the end event is last
            assert events[-1]["type"] == "end" and events[-1]["reason"] == "stopped", (delay, events[-1])
    ours = [o for o in outcomes if o[1] == EXIT_SIGINT]
    assert len(ours) >= len(outcomes) // 4, [(round(d, 3), c) for d, c, _ in outcomes]  # the program's own window


def stop_after_first_prediction(model: Path, wav: Path, sig: int) -> tuple[int, list[dict], str]:
    p = listen(model, wav)
    assert p.stdout is not None and p.stderr is not None  # piped
    try:
        lines = [p.stdout.readline()]
        while '"prediction"' not in lines[-1]:
            lines.append(p.stdout.readline())
            assert lines[-1], "no prediction before the stream ended"
        p.send_signal(sig)
        out = p.stdout.read()
        err = p.stderr.read()
        p.wait(timeout=TIMEOUT_S)
    finally:
        if p.poll() is None:
            p.kill()
    return p.returncode, [json.loads(line) for line in ("".join(lines) + out).splitlines()], err


def test_sighup_ends_like_sigterm_with_129_and_an_end_event(tiny_model_path, long_wav):
    code, events, err = stop_after_first_prediction(tiny_model_path, long_wav, signal.SIGHUP)
    assert code == EXIT_SIGHUP, err
    assert err == ""
    assert events[-1]["type"] == "end" and events[-1]["reason"] == "stopped" and events[-1]["t"] < 20.0


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, EXIT_SIGTERM), (signal.SIGHUP, EXIT_SIGHUP)])
def test_stop_signals_during_start_up_give_their_code(tiny_model_path, long_wav, sig, code):
    """A signal while the model loads (about 0.1-0.3 s in): the signal's code, no traceback."""
    p = listen(tiny_model_path, long_wav)
    time.sleep(0.15)
    p.send_signal(sig)
    _, err = p.communicate(timeout=TIMEOUT_S)
    if "Traceback" in err and "realtime_ser/" not in err:
        pytest.skip("the signal arrived while CPython itself was still starting up (machine busy)")
    assert p.returncode in (code, -sig) and err == "", (p.returncode, err)


def test_python_m_entry_handles_an_early_interrupt(tiny_model_path, long_wav):
    """``python -m realtime_ser`` goes through the same start-up handling."""
    p = subprocess.Popen([sys.executable, "-m", "realtime_ser", "listen", "--replay", str(long_wav), "--model",
                          str(tiny_model_path), "--no-dashboard"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    time.sleep(0.3)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=TIMEOUT_S)
    if "Traceback" in err and "realtime_ser/" not in err:
        pytest.skip("the signal arrived while CPython itself was still starting up (machine busy)")
    assert p.returncode == EXIT_SIGINT and err == "", (p.returncode, err)
