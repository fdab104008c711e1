"""Device faults and live overload on the PulseAudio virtual microphone (issue 5, parts 4 and 5).

Device faults: ``realtime-ser listen --device pulse`` as a subprocess, each fault on a PulseAudio
server of its own (``private_pulse``: its own runtime directory, started with scripts/vmic.sh), so
that unloading its source or killing it never disturbs the shared virtual microphone other tests use.

1. ``test_no_audio_server_exits_5_with_one_line``: no server at all (``PULSE_SERVER`` names a socket
   that does not exist, autospawn off): one line on stderr naming ``realtime-ser devices`` /
   ``--replay``, exit 5, no traceback.
2. ``test_device_fault_while_listening`` with ``--device-timeout 0`` (give up at once, the behaviour
   before devices were waited for; recovery is tests/test_device_recovery.py), for: source unloaded
   with ``pactl unload-module``, server ended
   with ``pulseaudio --kill``, server killed with SIGKILL): while ``paplay`` plays speech into the
   microphone and predictions are coming, the fault; then every stdout line is JSON, every analysed
   window was written (the ``end`` event's ``windows`` equals the prediction lines), the last line is
   ``end`` with reason ``error``, stderr is one line, exit 5, within 2 s of the fault.

Overload: ``test_live_overload_60s`` runs ``realtime_ser.api.Tracker`` in-process on the shared
virtual microphone for 60 s of audio with inference slowed to twice the hop, while speech plays.

The measured figures go to the run's "live measurements" summary (tests/conftest.py).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from helpers import HIGH_F0, LOW_F0, MID_F0, SlowModel, cli_command, of_type, parse_lines, voice, write_audio

REPO_ROOT = Path(__file__).resolve().parent.parent
VMIC_SCRIPT = REPO_ROOT / "scripts" / "vmic.sh"
VMIC_SINK = "vmic"
NULL_SINK_MODULE = "module-null-sink"
PULSE_TOOLS = ("pulseaudio", "pactl", "paplay")
PORTAUDIO_DEVICE = "pulse"  # PortAudio's ALSA "pulse" device: the server's default source (vmic.monitor)

EXIT_DEVICE = 5  # documented in docs/runtime.md: no input device, or one that vanished mid-stream
ERROR_PREFIX = "realtime-ser: error: "
WHAT_TO_DO = ("realtime-ser devices", "--replay")  # the error line names at least one of these

FAULT_TO_EXIT_MAX_S = 2.0  # the bound: the process exits within 2 s of the fault
HANG_TIMEOUT_S = 30.0  # past this the process is hung: kill it and fail
STARTUP_TIMEOUT_S = 120.0  # model load and the first predictions, on a slow CI machine
MIN_PREDICTIONS_BEFORE_FAULT = 3
POLL_S = 0.05
VMIC_START_TIMEOUT_S = 30.0
PACTL_TIMEOUT_S = 5.0
PRIVATE_SERVER_EXIT_IDLE_S = 120  # a leaked private server exits this long after its last client
SPEECH_FILE_S = 30.0  # longer than any fault test runs: the speech is still playing at the fault
STATUS_EVERY_S = 1.0


def assert_one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, f"a traceback on stderr:\n{stderr}"
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{stderr}"
    line = lines[0]
    assert line.startswith(ERROR_PREFIX), line
    assert any(hint in line for hint in WHAT_TO_DO), f"the error line does not say what to do: {line}"
    return line


def no_autospawn_config(directory: Path) -> Path:
    """A libpulse client.conf that never starts a server on its own (a fault must stay a fault)."""
    conf = directory / "client.conf"
    conf.write_text("autospawn = no\n", encoding="utf-8")
    return conf


def base_env(directory: Path) -> dict[str, str]:
    env = dict(os.environ, PULSE_CLIENTCONFIG=str(no_autospawn_config(directory)))
    env.pop("PULSE_SERVER", None)
    return env


# ------------------------------------------------------------------ a private PulseAudio server


@dataclass
class PrivatePulse:
    """A PulseAudio server with the vmic null sink on its own runtime directory."""

    runtime: Path
    env: dict[str, str]

    def pactl(self, *args: str) -> str:
        result = subprocess.run(["pactl", *args], capture_output=True, text=True, env=self.env,
                                timeout=PACTL_TIMEOUT_S)
        assert result.returncode == 0, f"pactl {' '.join(args)}: {result.stderr.strip()}"
        return result.stdout

    def null_sink_module(self) -> str:
        """The index of the module that provides the vmic sink (and so the microphone)."""
        for line in self.pactl("list", "short", "modules").splitlines():
            fields = line.split("\t")
            if len(fields) >= 3 and fields[1] == NULL_SINK_MODULE and f"sink_name={VMIC_SINK}" in fields[2]:
                return fields[0]
        raise AssertionError(f"no {NULL_SINK_MODULE} for sink {VMIC_SINK} on the private server")

    def pid(self) -> int:
        return int((self.runtime / "pid").read_text().split()[0])

    def alive(self) -> bool:
        return subprocess.run(["pulseaudio", "--check"], env=self.env, capture_output=True,
                              timeout=PACTL_TIMEOUT_S).returncode == 0


@pytest.fixture
def private_pulse(missing) -> Iterator[PrivatePulse]:
    """Started for one test and stopped after it, whatever happened (killed if need be)."""
    absent = [tool for tool in PULSE_TOOLS if shutil.which(tool) is None]
    if absent:  # the shared microphone may be someone else's server; a private one needs these
        missing(f"a private PulseAudio server needs {', '.join(absent)} (apt-get install pulseaudio "
                "pulseaudio-utils libasound2-plugins)")
    # mkdtemp, not tmp_path: the server's socket path must stay short (unix sockets: 108 bytes)
    runtime = Path(tempfile.mkdtemp(prefix="rser-fault-"))
    env = base_env(runtime)
    env.update(PULSE_RUNTIME_PATH=str(runtime), VMIC_LOG=str(runtime / "pulseaudio.log"),
               VMIC_EXIT_IDLE_S=str(PRIVATE_SERVER_EXIT_IDLE_S))
    server = PrivatePulse(runtime, env)
    pid: int | None = None
    try:
        result = subprocess.run(["bash", str(VMIC_SCRIPT), "start"], capture_output=True, text=True, env=env,
                                timeout=VMIC_START_TIMEOUT_S)
        assert result.returncode == 0, f"could not start a private PulseAudio server: {result.stderr.strip()}"
        pid = server.pid()
        yield server
    finally:
        if server.alive():
            subprocess.run(["bash", str(VMIC_SCRIPT), "stop"], capture_output=True, env=env,
                           timeout=VMIC_START_TIMEOUT_S)
        if pid is not None and server.alive():  # `stop` did not end it
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(runtime, ignore_errors=True)


@pytest.fixture(scope="module")
def speech_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Speech-like audio: a middle, a low and a high voice."""
    third = SPEECH_FILE_S / 3
    audio = np.concatenate([voice(f0, third, seed=i) for i, f0 in enumerate((MID_F0, LOW_F0, HIGH_F0))])
    return write_audio(tmp_path_factory.mktemp("speech") / "speech.wav", audio, subtype="PCM_16")


class Processes:
    """Processes started by a test; all are killed (if still running) and reaped at teardown."""

    def __init__(self) -> None:
        self._started: list[subprocess.Popen] = []

    def start(self, args: list[str], **kwargs) -> subprocess.Popen:
        process = subprocess.Popen(args, **kwargs)
        self._started.append(process)
        return process

    def cleanup(self) -> None:
        for process in self._started:
            if process.poll() is None:
                process.kill()
            process.wait()


@pytest.fixture
def processes() -> Iterator[Processes]:
    started = Processes()
    try:
        yield started
    finally:
        started.cleanup()


# ------------------------------------------------------------------ 1. no audio server at all


@pytest.mark.live
def test_no_audio_server_exits_5_with_one_line(tiny_model_path: Path, tmp_path: Path,
                                               live_measurements: dict) -> None:
    env = base_env(tmp_path)
    empty_runtime = tmp_path / "no-server"
    empty_runtime.mkdir(mode=0o700)
    env.update(PULSE_RUNTIME_PATH=str(empty_runtime), PULSE_SERVER=f"unix:{empty_runtime / 'native'}")
    began = time.monotonic()
    run = subprocess.run(cli_command() + ["listen", "--device", PORTAUDIO_DEVICE, "--no-dashboard",
                                          "--model", str(tiny_model_path)],
                         capture_output=True, text=True, env=env, timeout=HANG_TIMEOUT_S)
    took = time.monotonic() - began
    live_measurements["device fault no_server: run time, start to exit 5 (s)"] = round(took, 2)
    line = assert_one_error_line(run.stderr)
    assert run.returncode == EXIT_DEVICE, f"exit {run.returncode}: {line}"
    assert not of_type(parse_lines(run.stdout), "prediction")
    assert not (empty_runtime / "native").exists(), "a PulseAudio server was spawned for the client"


# ------------------------------------------------------------------ 2. faults while listening


def unload_source(server: PrivatePulse) -> None:
    server.pactl("unload-module", server.null_sink_module())


def end_server(server: PrivatePulse) -> None:
    subprocess.run(["pulseaudio", "--kill"], env=server.env, check=True, timeout=PACTL_TIMEOUT_S)


def sigkill_server(server: PrivatePulse) -> None:
    os.kill(server.pid(), signal.SIGKILL)


FAULTS = {"source_unloaded": unload_source, "server_ended": end_server, "server_sigkilled": sigkill_server}


def wait_for_predictions(process: subprocess.Popen, stdout_path: Path, stderr_path: Path, count: int) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"listen exited early with {process.returncode}: "
                                 f"{stderr_path.read_text(errors='replace')[-2000:]}")
        if stdout_path.read_text(errors="replace").count('"type":"prediction"') >= count:
            return
        time.sleep(POLL_S)
    raise AssertionError(f"listen gave fewer than {count} predictions in {STARTUP_TIMEOUT_S} s: "
                         f"{stderr_path.read_text(errors='replace')[-2000:]}")


@pytest.mark.live
@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_device_fault_while_listening(fault: str, private_pulse: PrivatePulse, processes: Processes,
                                      speech_file: Path, tiny_model_path: Path, tmp_path: Path,
                                      live_measurements: dict) -> None:
    out_path, err_path = tmp_path / "listen.jsonl", tmp_path / "listen.err"
    with open(out_path, "w") as out, open(err_path, "w") as err:
        listen = processes.start(cli_command() + ["listen", "--device", PORTAUDIO_DEVICE, "--no-dashboard",
                                                  "--status-every", str(STATUS_EVERY_S), "--device-timeout", "0",
                                                  "--model", str(tiny_model_path)],
                                 stdout=out, stderr=err, env=private_pulse.env)
    processes.start(["paplay", f"--device={VMIC_SINK}", str(speech_file)], env=private_pulse.env,
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_predictions(listen, out_path, err_path, MIN_PREDICTIONS_BEFORE_FAULT)
    seen_before = out_path.read_text().count('"type":"prediction"')

    fault_at = time.monotonic()
    FAULTS[fault](private_pulse)
    try:
        returncode = listen.wait(timeout=HANG_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"listen still running {HANG_TIMEOUT_S} s after the fault ({fault}): it hangs") from None
    fault_to_exit = time.monotonic() - fault_at
    live_measurements[f"device fault {fault}: fault to exit (s)"] = round(fault_to_exit, 3)

    stderr = err_path.read_text(errors="replace")
    line = assert_one_error_line(stderr)
    assert returncode == EXIT_DEVICE, f"exit {returncode} after {fault}: {line}"
    stdout = out_path.read_text()
    assert stdout.endswith("\n"), "the last stdout line is incomplete"
    events = parse_lines(stdout)
    assert events[0]["type"] == "start"
    end = events[-1]
    assert end["type"] == "end" and end["reason"] == "error", end
    states = [e["device_state"] for e in of_type(events, "status")]
    assert "lost" in states and not {"waiting", "back"} & set(states), states  # reported, not waited for
    assert end["error"] and end["error"] in line, (end["error"], line)
    predictions = of_type(events, "prediction")
    assert len(predictions) >= seen_before  # nothing written before the fault was lost...
    assert end["windows"] == len(predictions), (  # ...and every analysed window was written
        f"{end['windows']} windows analysed, {len(predictions)} prediction lines written")
    assert fault_to_exit < FAULT_TO_EXIT_MAX_S, (
        f"listen exited {fault_to_exit:.2f} s after the fault ({fault}); the bound is {FAULT_TO_EXIT_MAX_S} s")


# ------------------------------------------------------------------ 3. overload, live, 60 s

OVERLOAD_AUDIO_S = 60.0  # the 60 s of live capture
OVERLOAD_SPEECH_MARGIN_S = 10.0  # speech plays a little longer than the capture
HOP_S = 0.5  # the tiny model card's window and hop (tests/helpers.py build_model)
INFERENCE_S = 2 * HOP_S  # inference slowed to twice the hop
BLOCK_S = 0.05  # the runtime's default capture block
# A window is processed when at most one hop plus one block newer audio has arrived; a drained batch
# may hold two such windows, so the later waits for two inferences: hop + 2 blocks + 2 inferences,
# plus a scheduling allowance on a shared machine.
SCHEDULING_ALLOWANCE_S = 0.5
MAX_LATENCY_MS = (HOP_S + 2 * BLOCK_S + 2 * INFERENCE_S + SCHEDULING_ALLOWANCE_S) * 1000
# A callback that blocked on the slow worker would run for about an inference (1 s). One that only
# copies runs for well under a millisecond, but under this overload it also waits for the GIL, and
# the interpreter hands the GIL over every 5 ms (sys.getswitchinterval): a 5 ms bound measured that
# scheduler, not the callback, and failed on CI at 5.4 ms. The bound that matters is the block: a
# callback that ran past it would lose audio. Keep well under it (the same bound as test_live.py).
MAX_CALLBACK_MS = 0.4 * BLOCK_S * 1000
OVERLOAD_WATCHDOG_S = OVERLOAD_AUDIO_S + STARTUP_TIMEOUT_S


@pytest.fixture(scope="module")
def long_speech_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    segment = (OVERLOAD_AUDIO_S + OVERLOAD_SPEECH_MARGIN_S) / 3
    audio = np.concatenate([voice(f0, segment, seed=i) for i, f0 in enumerate((MID_F0, HIGH_F0, LOW_F0))])
    return write_audio(tmp_path_factory.mktemp("speech") / "speech70.wav", audio, subtype="PCM_16")


@pytest.mark.live
@pytest.mark.slow
def test_live_overload_60s(virtual_mic, tiny_model, long_speech_file: Path, processes: Processes,
                           live_measurements: dict) -> None:
    import sounddevice as sd

    from realtime_ser.api import Tracker

    # PortAudio lists devices once, at initialisation: rescan, the server may have started after.
    sd._terminate()
    sd._initialize()
    slow = SlowModel(tiny_model, INFERENCE_S)
    tracker = Tracker(model=slow, status_every_s=STATUS_EVERY_S)
    assert tracker.config.stream.hop_s == HOP_S
    watchdog = threading.Timer(OVERLOAD_WATCHDOG_S, tracker.stop)
    events: list[dict] = []
    processes.start(["paplay", f"--device={virtual_mic.sink}", str(long_speech_file)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    watchdog.start()
    try:
        with tracker:
            tracker.listen(device=PORTAUDIO_DEVICE, duration_s=OVERLOAD_AUDIO_S, callback=events.append)
    finally:
        watchdog.cancel()

    end = events[-1]
    assert end["type"] == "end" and end["reason"] == "duration", f"the stream did not run its 60 s: {end}"
    statuses = of_type(events, "status")
    predictions = of_type(events, "prediction")
    assert len(statuses) >= OVERLOAD_AUDIO_S / STATUS_EVERY_S - 1

    callback_max_ms = max(s["callback_max_ms"] for s in statuses)
    latencies = [p["latency_ms"] for p in predictions]
    assert all(lat is not None for lat in latencies), "a live prediction without latency"
    latency_max_ms = max(latencies)
    live_measurements["overload 60 s: audio callback max (ms)"] = callback_max_ms
    live_measurements["overload 60 s: latency max (ms)"] = latency_max_ms
    live_measurements["overload 60 s: windows analysed / skipped"] = f"{end['windows']} / {end['skipped_windows']}"
    live_measurements["overload 60 s: dropped blocks, input overflows"] = (
        f"{end['dropped_blocks']}, {statuses[-1]['input_overflows']}")
    live_measurements["overload 60 s: max queue depth / capacity (blocks)"] = (
        f"{max(s['queue_depth'] for s in statuses)} / {statuses[0]['queue_capacity']}")

    # the model really ran on speech, slowly: the worker could not keep up
    speech = [p for p in predictions if p["raw_probabilities"] is not None]
    assert slow.calls == len(speech) > 0
    # every window of the 60 s was either analysed or counted as skipped; skips appear in status events
    assert end["windows"] + end["skipped_windows"] == round(OVERLOAD_AUDIO_S / HOP_S)
    assert end["windows"] == len(predictions)
    assert statuses[-1]["skipped_windows"] > 0
    assert [s["skipped_windows"] for s in statuses] == sorted(s["skipped_windows"] for s in statuses)
    # the audio callback never blocked
    assert callback_max_ms < MAX_CALLBACK_MS, f"the audio callback ran for {callback_max_ms} ms"
    # the capture queue stayed bounded and absorbed the stalls: no block was lost
    assert all(s["queue_depth"] <= s["queue_capacity"] for s in statuses)
    assert end["dropped_blocks"] == 0 and all(s["dropped_blocks"] == 0 for s in statuses)
    # latency stayed bounded (without skipping it would grow by a hop every window: 60 s by the end)
    assert latency_max_ms < MAX_LATENCY_MS, f"latency reached {latency_max_ms} ms (bound {MAX_LATENCY_MS} ms)"
