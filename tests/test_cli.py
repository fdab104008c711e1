"""The command line as a user runs it (subprocesses): exit codes, signals, closed stdout, lazy
imports, `predict` with good and bad files, and every stdout line validated against the schema."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from helpers import HIGH_F0, LOW_F0, load_schema, voice, write_audio

SR = 16_000
TIMEOUT_S = 60
REPO = Path(__file__).resolve().parent.parent


def cli(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "realtime_ser", *args], capture_output=True, text=True,
                          timeout=TIMEOUT_S, **kw)


def parse_lines(stdout: str) -> list[dict]:
    validator = jsonschema.Draft202012Validator(load_schema())
    events = [json.loads(line) for line in stdout.splitlines()]
    for e in events:
        validator.validate(e)
    return events


def assert_one_line_error(stderr: str, *words: str) -> None:
    assert "Traceback" not in stderr
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("realtime-ser: error: "), stderr
    for w in words:
        assert w in lines[0]


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory) -> Path:
    x = np.concatenate([voice(LOW_F0, 3.0, seed=3), voice(HIGH_F0, 3.0, seed=4)])
    return write_audio(tmp_path_factory.mktemp("cli") / "speech.wav", x)


@pytest.fixture(scope="module")
def long_wav(tmp_path_factory) -> Path:
    x = np.concatenate([voice(LOW_F0, 10.0, seed=5), np.zeros(10 * SR, np.float32)])
    return write_audio(tmp_path_factory.mktemp("cli_long") / "long.wav", x)


def test_help_and_devices_import_no_heavy_modules():
    code = (
        "import sys\n"
        "from realtime_ser import cli\n"
        "for argv in (['--help'], ['listen', '--help'], ['predict', '--help']):\n"
        "    try:\n"
        "        cli.main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "assert 'sounddevice' not in sys.modules, 'help loaded PortAudio'\n"
        "cli.main(['devices'])\n"
        "heavy = sorted(m for m in ('onnxruntime', 'scipy', 'librosa', 'rich', 'sklearn', 'numba')"
        " if m in sys.modules)\n"
        "print(heavy)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT_S)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"


def test_replay_stdout_is_json_lines_that_validate(tiny_model_path, speech_wav):
    r = cli("listen", "--replay", str(speech_wav), "--pace", "fast", "--model", str(tiny_model_path),
            "--no-dashboard", "--status-every", "1")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    events = parse_lines(r.stdout)
    assert events[0]["type"] == "start" and events[-1] == {**events[-1], "type": "end", "reason": "end_of_input"}
    assert sum(e["type"] == "prediction" for e in events) == 12
    assert [e["emotion"] for e in events if e["type"] == "change"][:1] == ["sad"]


def signal_after_first_prediction(wav: Path, pace: str, model: Path, sig: int) -> tuple[int, list[dict], str]:
    """Replay ``wav``, send ``sig`` once a prediction line is out; (exit code, every stdout event, stderr)."""
    p = subprocess.Popen([sys.executable, "-m", "realtime_ser", "listen", "--replay", str(wav), "--pace", pace,
                          "--model", str(model), "--no-dashboard"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stderr is not None  # piped
    try:
        lines = [p.stdout.readline()]
        while '"prediction"' not in lines[-1]:  # the stream is running
            lines.append(p.stdout.readline())
            assert lines[-1], "no prediction before the stream ended"
        p.send_signal(sig)
        out = p.stdout.read()  # not communicate(): it would skip what readline() has buffered already
        err = p.stderr.read()
        p.wait(timeout=TIMEOUT_S)
    finally:
        if p.poll() is None:
            p.kill()
    return p.returncode, parse_lines("".join(lines) + out), err


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signals_stop_cleanly_with_documented_codes(tiny_model_path, long_wav, sig, code):
    returncode, events, err = signal_after_first_prediction(long_wav, "realtime", tiny_model_path, sig)
    assert returncode == code, err
    assert "Traceback" not in err and err.strip() == ""
    assert events[-1]["type"] == "end" and events[-1]["reason"] == "stopped"
    assert events[-1]["t"] < 20.0  # it stopped early, not at the end of the file


@pytest.mark.parametrize("pace, wav", [("realtime", "long_wav"), ("fast", "five_minute_wav")])
def test_closed_stdout_ends_quietly(tiny_model_path, pace, wav, request):
    """Like `| head -3`: exit 141, nothing on stderr, at real-time pace and in a fast replay."""
    p = subprocess.Popen([sys.executable, "-m", "realtime_ser", "listen", "--replay", str(request.getfixturevalue(wav)),
                          "--pace", pace, "--model", str(tiny_model_path), "--no-dashboard"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        head = [p.stdout.readline() for _ in range(3)]
        p.stdout.close()
        err = p.stderr.read()
        p.wait(timeout=TIMEOUT_S)
    finally:
        if p.poll() is None:
            p.kill()
    assert all(json.loads(line) for line in head)
    assert p.returncode == 141
    assert err == ""


@pytest.fixture(scope="module")
def five_minute_wav(tmp_path_factory) -> Path:
    x = np.concatenate([voice(LOW_F0, 4.0, seed=8), np.zeros(SR, np.float32)])
    return write_audio(tmp_path_factory.mktemp("cli_5min") / "five.wav", np.tile(x, 60))


def test_fast_replay_through_the_program_entry_writes_what_main_writes(tiny_model_path, speech_wav):
    """``python -m realtime_ser`` ends with a quick exit after main(): not a line may be lost."""
    args = ["listen", "--replay", str(speech_wav), "--pace", "fast", "--model", str(tiny_model_path),
            "--no-dashboard", "--status-every", "1"]
    via_entry = cli(*args)
    via_main = subprocess.run([sys.executable, "-c", "import sys\nfrom realtime_ser.cli import main\n"
                               "sys.exit(main(sys.argv[1:]))", *args], capture_output=True, text=True,
                              timeout=TIMEOUT_S)
    assert via_entry.returncode == via_main.returncode == 0, via_entry.stderr + via_main.stderr
    volatile = ("queue_depth",)
    assert [{k: v for k, v in e.items() if k not in volatile} for e in parse_lines(via_entry.stdout)] == \
        [{k: v for k, v in e.items() if k not in volatile} for e in parse_lines(via_main.stdout)]
    assert via_entry.stderr == via_main.stderr == ""


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signals_stop_a_fast_replay_cleanly(tiny_model_path, five_minute_wav, sig, code):
    returncode, events, err = signal_after_first_prediction(five_minute_wav, "fast", tiny_model_path, sig)
    assert returncode == code, err
    assert "Traceback" not in err and err.strip() == ""
    assert events[-1]["type"] == "end" and events[-1]["reason"] == "stopped"
    predictions = [e for e in events if e["type"] == "prediction"]
    assert [e["t_end"] for e in predictions] == [0.5 * (k + 1) for k in range(len(predictions))]  # none lost
    assert events[-1]["t"] < 300.0 and events[-1]["windows"] == len(predictions)


def test_predict_mixes_good_and_bad_files(tiny_model_path, speech_wav, tmp_path):
    low = write_audio(tmp_path / "low.wav", voice(LOW_F0, 2.5, seed=7))
    silent = write_audio(tmp_path / "silent.wav", np.zeros(SR, np.float32))
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    junk = tmp_path / "junk.wav"
    junk.write_bytes(np.random.default_rng(1).bytes(4096))
    files = [low, tmp_path / "missing.wav", tmp_path, junk, empty, silent, speech_wav]
    r = cli("predict", *map(str, files), "--model", str(tiny_model_path))
    assert r.returncode == 3
    assert "Traceback" not in r.stderr
    out = [json.loads(line) for line in r.stdout.splitlines()]
    validator = jsonschema.Draft202012Validator(load_schema("predict"))
    for o in out:
        validator.validate(o)
    assert [o["file"] for o in out] == [str(f) for f in files]
    ok = [o for o in out if "error" not in o]
    bad = [o for o in out if "error" in o]
    assert [o["file"] for o in bad] == [str(f) for f in files[1:5]]
    assert len(r.stderr.strip().splitlines()) == len(bad)
    by_file = {o["file"]: o for o in ok}
    assert by_file[str(low)]["emotion"] == "sad" and by_file[str(low)]["speech_s"] > 1.0
    assert abs(sum(by_file[str(low)]["probabilities"].values()) - 1) < 1e-3
    assert by_file[str(silent)] == {**by_file[str(silent)], "emotion": "silence", "probabilities": None,
                                    "speech_s": 0.0}
    assert set(by_file[str(speech_wav)]["probabilities"]) == {"neutral", "happy", "sad"}


def test_predict_all_good_exits_zero(tiny_model_path, speech_wav):
    r = cli("predict", str(speech_wav), "--model", str(tiny_model_path))
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 1


@pytest.mark.parametrize("case, code, words", [
    ("missing model", 4, ["not found", "--model"]),
    ("corrupt model", 4, ["does not match its card"]),
    ("missing replay", 3, ["no such file"]),
    ("no such device", 5, ["realtime-ser devices"]),
    ("bad smoothing", 2, ["enter"]),
    ("bad window", 2, ["--window"]),
])
def test_errors_are_one_line_with_their_exit_code(tiny_model_path, speech_wav, tmp_path, case, code, words):
    model = str(tiny_model_path)
    args = ["listen", "--no-dashboard", "--model", model, "--replay", str(speech_wav), "--pace", "fast"]
    if case == "missing model":
        args[3] = str(tmp_path / "none.onnx")
    elif case == "corrupt model":
        bad = tmp_path / "bad.onnx"
        bad.write_bytes(tiny_model_path.read_bytes()[:-10])
        (tmp_path / "bad.json").write_text(tiny_model_path.with_suffix(".json").read_text())
        args[3] = str(bad)
    elif case == "missing replay":
        args[5] = str(tmp_path / "none.wav")
    elif case == "no such device":
        args = ["listen", "--no-dashboard", "--model", model, "--device", "no-such-device-xyz"]
    elif case == "bad smoothing":
        args += ["--enter", "0.2", "--exit", "0.3"]
    elif case == "bad window":
        args += ["--window", "0.1"]
    r = cli(*args)
    assert r.returncode == code, r.stderr
    assert r.stdout == ""
    assert_one_line_error(r.stderr, *words)


def test_usage_errors_exit_2():
    r = cli("listen", "--replay", "a.wav", "--device", "1")
    assert r.returncode == 2 and "not allowed with" in r.stderr
    assert cli().returncode == 2


# ---------------------------------------------------------------- found by trying to break it (issue 12 §2)


def test_predict_goes_on_after_names_too_long_or_not_utf8(tiny_model_path, speech_wav, tmp_path):
    """A component over 255 bytes: one line for that file, the others still predicted; a name whose bytes
    are not UTF-8 (passed as bytes, as a shell passes it) is read and shown with \\xNN escapes."""
    odd = os.fsencode(tmp_path) + b"/voix \xe9\xff.wav"
    os.rename(write_audio(tmp_path / "odd.wav", voice(LOW_F0, 2.5, seed=9)), odd)
    too_long = str(tmp_path / ("x" * 300 + ".wav"))
    argv = [os.fsencode(a) for a in (sys.executable, "-m", "realtime_ser", "predict")] + \
        [os.fsencode(str(speech_wav)), os.fsencode(too_long), odd, b"--model", os.fsencode(str(tiny_model_path))]
    r = subprocess.run(argv, capture_output=True, timeout=TIMEOUT_S)
    out = [json.loads(line) for line in r.stdout.decode().splitlines()]
    err = r.stderr.decode()
    assert r.returncode == 3, err
    assert [o.get("error") is None for o in out] == [True, False, True]
    assert "file name too long" in out[1]["error"] and "not an audio file" not in out[1]["error"]
    assert out[2]["file"].endswith("voix \\xe9\\xff.wav") and out[2]["emotion"] == "sad"
    assert_one_line_error(err, "file name too long")


@pytest.mark.parametrize("args, words", [
    (["listen", "--bogus"], ["unrecognized arguments: --bogus"]),
    (["listen", "--duration"], ["--duration", "expected one argument"]),
    (["listen", "--pace", "slow"], ["invalid choice"]),
    ([], ["required: COMMAND"]),
    (["nonsense"], ["invalid choice"]),
    (["listen", "--replay", "a.wav", "--device", "1"], ["not allowed with"]),
    (["predict"], ["required: FILE"]),
    (["listen", "--block-size", "1.5"], ["--block-size", "not an integer"]),
])
def test_usage_errors_are_one_line(args, words):
    r = cli(*args)
    assert r.returncode == 2 and r.stdout == ""
    assert_one_line_error(r.stderr, *words)


NUMERIC_FLAGS = ["--block-size", "--window", "--hop", "--smooth-tau", "--enter", "--exit", "--min-dwell",
                 "--silence-hold", "--onset", "--full-voiced", "--status-every", "--duration"]
ODD_NUMBERS = ["nan", "inf", "-inf", "-1", "0", "1e-17", "1e-300", "1e308", "3"]
CASE_TIMEOUT_S = 30

HARNESS = r"""
import contextlib, faulthandler, io, json, sys
from realtime_ser import cli
results = []
for argv in json.loads(sys.argv[1]):
    faulthandler.dump_traceback_later(CASE_TIMEOUT_S, exit=True)  # a spinning value fails the test
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(argv)
        except SystemExit as e:
            code = e.code
    faulthandler.cancel_dump_traceback_later()
    results.append([argv, code, err.getvalue()])
print(json.dumps(results))
""".replace("CASE_TIMEOUT_S", str(CASE_TIMEOUT_S))


def test_every_number_that_parses_works_or_exits_2(tiny_model_path, tmp_path):
    """NaN, infinities, negatives, tiny and huge values for every numeric flag: exit 0 (it works) or 2
    with one line, never a traceback, a hang (``--status-every 1e-17`` spun forever) or another code."""
    short = write_audio(tmp_path / "short.wav", voice(LOW_F0, 1.5, seed=2))
    base = ["listen", "--replay", str(short), "--pace", "fast", "--model", str(tiny_model_path), "--no-dashboard"]
    cases = [base + [flag, value] for flag in NUMERIC_FLAGS for value in ODD_NUMBERS]
    r = subprocess.run([sys.executable, "-c", HARNESS, json.dumps(cases)], capture_output=True, text=True,
                       timeout=TIMEOUT_S * 4)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    results = json.loads(r.stdout.splitlines()[-1])
    assert len(results) == len(cases)
    worked = 0
    for argv, code, err in results:
        flag, value = argv[-2:]
        assert code in (0, 2), (flag, value, code, err)
        if code == 2:
            lines = err.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("realtime-ser: error: ") and flag in lines[0], \
                (flag, value, err)
        else:
            worked += 1
            assert value not in ("nan", "inf", "-inf"), (flag, value)
    assert worked >= len(NUMERIC_FLAGS)  # the sane values do work


def test_a_card_given_as_the_model_says_so(tiny_model_path, speech_wav):
    r = cli("predict", str(speech_wav), "--model", str(tiny_model_path.with_suffix(".json")))
    assert r.returncode == 4
    assert_one_line_error(r.stderr, "is a model card (JSON), not an ONNX model", str(tiny_model_path))


def test_fifo_and_devices_are_not_called_empty(tiny_model_path, tmp_path):
    fifo = tmp_path / "live.wav"
    os.mkfifo(fifo)
    r = cli("listen", "--replay", str(fifo), "--model", str(tiny_model_path), "--no-dashboard")
    assert r.returncode == 3
    assert_one_line_error(r.stderr, "not a regular file (a FIFO or pipe)")
    r = cli("listen", "--replay", "", "--model", str(tiny_model_path), "--no-dashboard")
    assert r.returncode == 3
    assert_one_line_error(r.stderr, "file name is empty")


def test_a_valid_mp3_decodes_without_library_noise(tiny_model_path, tmp_path):
    """libmpg123 reports recoverable bit-reservoir issues of valid MP3s on fd 2 (`error: part2_3_length
    ...`): the one-line contract holds, and a good file gives nothing at all on stderr."""
    import soundfile as sf

    if "MP3" not in sf.available_formats():
        pytest.skip(f"this libsndfile ({sf.__libsndfile_version__}) has no MP3 support")
    t = np.arange(4 * SR) / SR
    x = (0.3 * np.sin(2 * np.pi * 220 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
         + 0.05 * np.random.default_rng(0).standard_normal(len(t))).astype(np.float32)
    mp3 = tmp_path / "tone.mp3"
    sf.write(str(mp3), x, SR, format="MP3")
    read_in_blocks = (f"import soundfile as sf\nf = sf.SoundFile({str(mp3)!r})\n"
                      f"while len(f.read({2 * SR}, dtype='float32')):\n    pass\n")  # as the file source reads
    probe = subprocess.run([sys.executable, "-c", read_in_blocks], capture_output=True, text=True, timeout=TIMEOUT_S)
    if "mpg123" not in probe.stderr:
        pytest.skip("this libmpg123 decodes the test file silently: nothing to hide")
    for args in (["predict", str(mp3)], ["listen", "--replay", str(mp3), "--pace", "fast", "--no-dashboard"]):
        r = cli(*args, "--model", str(tiny_model_path))
        assert r.returncode == 0 and r.stderr == "", r.stderr
        assert r.stdout.strip()


def test_a_run_writes_nothing_under_home(tiny_model_path, speech_wav, tmp_path):
    """onnxruntime writes a telemetry device id under $HOME/.cache on import unless told not to."""
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home)}
    env.pop("XDG_CACHE_HOME", None)
    env.pop("ORT_DISABLE_TELEMETRY", None)
    for args in (["predict", str(speech_wav)], ["listen", "--replay", str(speech_wav), "--pace", "fast",
                                                "--no-dashboard"]):
        r = cli(*args, "--model", str(tiny_model_path), env=env)
        assert r.returncode == 0 and r.stderr == "", r.stderr
    assert sorted(str(p.relative_to(home)) for p in home.rglob("*")) == []


def test_replay_and_predict_read_standard_input(tiny_model_path, speech_wav, tmp_path):
    """``-`` is standard input: a pipe of WAV or OGG, or any file redirected with ``<``."""
    import soundfile as sf

    x, sr = sf.read(str(speech_wav), dtype="float32")
    ogg, flac = tmp_path / "s.ogg", tmp_path / "s.flac"
    sf.write(str(ogg), x, sr)
    sf.write(str(flac), x, sr)
    model = ["--model", str(tiny_model_path)]
    piped_wav = subprocess.run([sys.executable, "-m", "realtime_ser", "predict", "-", *model],
                               input=speech_wav.read_bytes(), capture_output=True, timeout=TIMEOUT_S)
    direct = cli("predict", str(speech_wav), *model)
    assert piped_wav.returncode == 0, piped_wav.stderr
    assert {**json.loads(piped_wav.stdout), "file": "x"} == {**json.loads(direct.stdout), "file": "x"}
    r = subprocess.run([sys.executable, "-m", "realtime_ser", "listen", "--replay", "-", "--pace", "fast",
                        "--no-dashboard", *model], input=ogg.read_bytes(), capture_output=True, timeout=TIMEOUT_S)
    events = parse_lines(r.stdout.decode())
    assert r.returncode == 0 and events[0]["device"] == "<stdin>" and events[-1]["reason"] == "end_of_input"
    assert sum(e["type"] == "prediction" for e in events) == 12
    with open(flac, "rb") as f:  # a redirected file may be any format (it can seek)
        r = subprocess.run([sys.executable, "-m", "realtime_ser", "predict", "-", *model], stdin=f,
                           capture_output=True, timeout=TIMEOUT_S)
    assert r.returncode == 0 and json.loads(r.stdout)["emotion"], r.stderr
    r = subprocess.run([sys.executable, "-m", "realtime_ser", "predict", "-", *model], input=flac.read_bytes(),
                       capture_output=True, timeout=TIMEOUT_S)  # a FLAC pipe: its decoder needs to seek
    assert r.returncode == 3
    assert_one_line_error(r.stderr.decode(), "<stdin>", "pipe", "WAV or OGG")


def test_an_unusable_home_gives_no_warning(tiny_model_path, speech_wav, tmp_path):
    """HOME that cannot hold a directory: onnxruntime used to print an ANSI-coloured telemetry warning."""
    home = tmp_path / "a-file"
    home.write_text("")
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_CACHE_HOME", "ORT_DISABLE_TELEMETRY")}
    r = cli("predict", str(speech_wav), "--model", str(tiny_model_path), env={**env, "HOME": str(home)})
    assert r.returncode == 0 and r.stderr == "", r.stderr
