"""measure the runtime path against the seed pipeline (window cost, replay speed, CPU, start-up, memory)

``realtime-ser bench`` times, in one run on the same audio:

* ``window_ms_median`` / ``window_ms_p95``: speech gate, features and ONNX inference for one
  window on the runtime path (``StreamProcessor.classify``: incremental frame analysis, speech
  gate, functionals, normaliser, model), windows fed in stream order, after warm-up windows,
  onnxruntime and BLAS at one thread; wall clock (``time.perf_counter``) per window;
* ``gate_ms_median``: the speech gate alone (``gate.SpeechGate.decide``: energy stage, then
  Silero VAD on the 512-sample frames each hop adds), same windows, same order;
* ``seed_window_ms_median``: the same windows through the seed pipeline (librosa 40 MFCC +
  12 chroma_stft + 128 mel-band means, then a fitted scikit-learn ``MLPClassifier`` with
  one hidden layer of 300 in memory); needs the ``train`` extra, otherwise left out;
* ``replay_x_realtime``: seconds of audio per second of wall time of a whole
  ``realtime-ser listen --replay FILE --pace fast`` process on a generated 10-minute file
  (pinned to one core with ``taskset`` when available), start-up included;
* ``cpu_percent_realtime``: user + system CPU of a whole ``listen --replay`` process at
  ``--pace realtime`` on 60 s of audio, over its wall time, in percent of one core;
* ``first_event_s``: process start to the first prediction line, ``--pace realtime``;
* ``cold_start_help_s``: wall time of ``realtime-ser --help``;
* ``rss_peak_mb``: peak resident memory (``VmHWM``) of the 10-minute ``listen --replay`` process;
* ``machine``: processor, cores, load, library versions.

Audio is a generated speech-like signal (``formant_voice``: a gliding F0 through moving vowel
formants, fricatives, syllables, a pause every 7 s; the neural gate takes it for speech) unless
``--file`` is given. Timings are medians over repeated runs; the output says how
each figure was taken. This module is imported for ``realtime-ser --help``: it imports
nothing heavy at the top.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import SerError  # light: the error classes only

if TYPE_CHECKING:
    import numpy as np

    from .audio.windowing import Window
    from .core import ModelLike

SAMPLE_RATE = 16_000
MS_PER_S = 1000.0
KB_PER_MB = 1024.0
PERCENT = 100.0
HWM_EVERY_LINES = 100  # run_child reads the child's VmHWM on its first lines, then every this many
P95 = 95

# Full run / --quick.
REPLAY_S, QUICK_REPLAY_S = 600.0, 20.0  # the fast replay (and memory) file
REALTIME_S, QUICK_REALTIME_S = 60.0, 4.0  # the real-time replay (CPU) file
WINDOW_AUDIO_S, QUICK_WINDOW_AUDIO_S = 60.0, 8.0  # audio for the in-process window timings
REPEATS, QUICK_REPEATS = 3, 1  # subprocess runs per figure
HELP_RUNS, QUICK_HELP_RUNS = 7, 3
WARMUP_WINDOWS = 4  # per pass, not timed (the first is a whole-window analysis)
WINDOW_PASSES = 3  # passes over the window audio (fresh stream state each)
FIRST_EVENT_DURATION_S = 3.0  # --duration of the first-event runs

# Seed pipeline (the project's starting point).
SEED_N_MFCC, SEED_N_CHROMA, SEED_N_MELS = 40, 12, 128
SEED_HIDDEN = (300,)
SEED_CLASSES = 8
SEED_FIT_ROWS = 400
SEED_FIT_ITER = 20

# Synthetic voice.
VOICE_F0_HZ = 140.0
VOICE_F0_GLIDE = 0.25  # +-25 % slow F0 movement
VOICE_GLIDE_HZ = 0.3
VOICE_SYLLABLE_HZ = 4.0
VOICE_HARMONIC_MAX_HZ = 4000.0
VOICE_PAUSE_EVERY_S = 7.0  # a 1 s pause every few seconds
VOICE_PAUSE_S = 1.0
VOICE_PEAK = 0.3
VOICE_NOISE = 0.002
VOICE_NOISE_MAX_HZ = 7000.0  # the noise floor stays below the resamplers' transition band
VOICE_VIBRATO, VOICE_VIBRATO_HZ = 0.03, 5.0
VOICE_VOICED_SHARE = 0.7  # of each syllable
# vowels a, e, i, o, u, ae: F1-F3 (Peterson & Barney averages, rounded)
VOWEL_FORMANTS_HZ = ((730, 1090, 2440), (530, 1840, 2480), (270, 2290, 3010), (570, 840, 2410), (300, 870, 2240),
                     (660, 1720, 2410))
FORMANT_BW_HZ = (80.0, 100.0, 150.0)
FORMANT_WEIGHT = 0.5  # F2 at half F1's weight, F3 at a quarter
VOWEL_HOLD = 0.3  # share of a syllable at each end where the vowel holds before gliding to the next
FRICATIVE_LOW_HZ, FRICATIVE_HIGH_HZ = 3000.0, 6000.0
FRICATIVE_S = 0.04  # of a syllable period
FRICATIVE_SHARE = 1.0  # of syllable edges
FRICATIVE_LEVEL = 0.4
CHUNK_S = 30.0  # generate long files in pieces (bounded memory)

TARGETS = {  # issue 4; window_ms_median (now gate + features + inference): issue 9
    "window_ms_median": ("<=", 1.0),
    "speedup_vs_seed": (">=", 20.0),
    "replay_x_realtime": (">=", 500.0),
    "cpu_percent_realtime": ("<=", 3.0),
    "cold_start_help_s": ("<=", 0.3),
    "first_event_s": ("<=", 2.5),
    "rss_peak_mb": ("<=", 200.0),
}
REQUIRED_KEYS = ("window_ms_median", "window_ms_p95", "seed_window_ms_median", "speedup_vs_seed",
                 "replay_x_realtime", "cpu_percent_realtime", "first_event_s", "cold_start_help_s",
                 "rss_peak_mb", "gate_ms_median", "machine")


class BenchError(SerError):
    """A measured child process failed or printed no events (exit code 1)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--file", metavar="FILE", help="benchmark on this audio file instead of generated speech-like audio "
                   "(its first minute is used for the window timings; it is looped to fill the replay files)")
    p.add_argument("--model", metavar="PATH", help="an .onnx model with its card (default: the shipped model)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--quick", action="store_true", help="short files and single runs (for tests; figures are rougher)")
    p.add_argument("--no-seed", action="store_true", help="skip the seed pipeline (librosa + scikit-learn) timing")
    p.add_argument("--no-subprocess", action="store_true",
                   help="only the in-process window timings (no replay, CPU, start-up or memory figures)")


# ---------------------------------------------------------------- audio


def formant_voice(f0: float, seconds: float, *, amplitude: float = VOICE_PEAK, seed: int = 0,
                  syllable_hz: float = VOICE_SYLLABLE_HZ, f0_glide: float = VOICE_F0_GLIDE,
                  sr: int = SAMPLE_RATE) -> np.ndarray:
    """A synthetic talker: harmonics of a gliding ``f0`` through three formants that move from vowel to
    vowel every syllable, with fricative noise at some syllable edges. Speech-like enough for the neural
    speech gate (which refuses plain harmonic tones and hums, as it should)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    n = int(round(seconds * sr))
    t = np.arange(n) / sr
    inst = f0 * (1.0 + VOICE_VIBRATO * np.sin(2 * np.pi * VOICE_VIBRATO_HZ * t + rng.uniform(0, 2 * np.pi))
                 + f0_glide * np.sin(2 * np.pi * VOICE_GLIDE_HZ * t + rng.uniform(0, 2 * np.pi)))
    phase = 2 * np.pi * np.cumsum(inst) / sr
    vowels = np.asarray(VOWEL_FORMANTS_HZ, dtype=np.float64)
    n_syl = int(np.ceil(seconds * syllable_hz)) + 2
    seq = vowels[rng.integers(len(vowels), size=n_syl)]
    pos = t * syllable_hz
    i0 = np.floor(pos).astype(int)
    w = 0.5 - 0.5 * np.cos(np.pi * np.clip((pos - i0 - VOWEL_HOLD) / (1 - 2 * VOWEL_HOLD), 0, 1))
    formants = seq[i0] * (1 - w)[:, None] + seq[i0 + 1] * w[:, None]
    x = np.zeros(n)
    for k in range(1, int(VOICE_HARMONIC_MAX_HZ // (f0 * (1 + f0_glide))) + 1):
        gain = sum(FORMANT_WEIGHT ** j / (1 + ((k * inst - formants[:, j]) / FORMANT_BW_HZ[j]) ** 2)
                   for j in range(len(FORMANT_BW_HZ)))
        x += np.sin(k * phase) * gain / k
    syllables = 0.5 - 0.5 * np.cos(2 * np.pi * syllable_hz * t)
    x *= np.clip((syllables - (1 - VOICE_VOICED_SHARE)) / VOICE_VOICED_SHARE, 0, 1) ** 0.5
    spec = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / sr)
    spec[(freqs < FRICATIVE_LOW_HZ) | (freqs > FRICATIVE_HIGH_HZ)] = 0  # below the resamplers' transition bands
    fricative = np.fft.irfft(spec, n)
    edge = np.exp(-(((pos % 1.0) + 0.5) % 1.0 - 0.5) ** 2 / (2 * FRICATIVE_S ** 2))
    with_fricative = rng.random(n_syl)[np.minimum(i0, n_syl - 1)] < FRICATIVE_SHARE
    x += FRICATIVE_LEVEL * np.std(x) / max(float(np.std(fricative)), 1e-9) * fricative * edge * with_fricative
    spec = np.fft.rfft(rng.standard_normal(n))
    spec[freqs > VOICE_NOISE_MAX_HZ] = 0
    x += VOICE_NOISE * np.max(np.abs(x)) * np.fft.irfft(spec, n)
    return (amplitude * x / max(float(np.max(np.abs(x))), 1e-9)).astype(np.float32)


def speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    """The bench's talker (``formant_voice`` at 140 Hz), with a 1 s pause every 7 s."""
    import numpy as np

    x = formant_voice(VOICE_F0_HZ, seconds, seed=seed)
    t = np.arange(len(x)) / SAMPLE_RATE
    return (x * ((t % VOICE_PAUSE_EVERY_S) < VOICE_PAUSE_EVERY_S - VOICE_PAUSE_S)).astype(np.float32)


def _source_audio(file: str | None, seconds: float) -> np.ndarray:
    """``seconds`` of 16 kHz mono float32: the file (resampled, looped) or the generated voice."""
    import numpy as np

    if file is None:
        return speech_like(seconds)
    import soundfile as sf

    from .audio.convert import Converter
    from .errors import InputAudioError

    try:
        data, rate = sf.read(file, dtype="float32", always_2d=True)
    except (OSError, RuntimeError) as e:
        raise InputAudioError(f"cannot read {file}: {e}") from None
    if len(data) == 0:
        raise InputAudioError(f"{file} holds no audio")
    conv = Converter(rate)
    x = np.concatenate([conv.process(data), conv.flush()])
    reps = int(math.ceil(seconds * SAMPLE_RATE / len(x)))
    return np.tile(x, reps)[: int(round(seconds * SAMPLE_RATE))]


def _write_audio(path: Path, seconds: float, file: str | None) -> Path:
    import soundfile as sf

    with sf.SoundFile(str(path), "w", samplerate=SAMPLE_RATE, channels=1, subtype="PCM_16") as f:
        if file is None:
            chunk = speech_like(min(CHUNK_S, seconds))  # repeated: bounded memory and time
            left = int(round(seconds * SAMPLE_RATE))
            while left > 0:
                f.write(chunk[:left])
                left -= min(left, len(chunk))
        else:
            f.write(_source_audio(file, seconds))
    return path


# ---------------------------------------------------------------- in-process timings


def _median(xs: list[float]) -> float:
    import statistics

    return float(statistics.median(xs))


def _p95(xs: list[float]) -> float:
    import numpy as np

    return float(np.percentile(xs, P95))


def time_runtime_windows(model: ModelLike, audio: np.ndarray) -> dict:
    """Per-window wall time of the runtime's features + inference (``StreamProcessor.classify``)."""
    from . import features
    from .core import StreamConfig, StreamProcessor

    cfg = StreamConfig(window_s=getattr(model, "window_s", 2.0), hop_s=getattr(model, "hop_s", 0.5))
    total, cpu, speech, windows = [], [], 0, []
    for _ in range(WINDOW_PASSES):
        proc = StreamProcessor(model, SAMPLE_RATE, cfg)
        windows = [p.window for p in proc.ingest(0, audio[:, None]) if not p.window.final]
        for i, w in enumerate(windows):
            c0, t0 = time.thread_time(), time.perf_counter()
            decision, _ = proc.classify(w)
            dt, dc = time.perf_counter() - t0, time.thread_time() - c0
            if i >= WARMUP_WINDOWS:
                total.append(dt * MS_PER_S)
                cpu.append(dc * MS_PER_S)
                speech += int(decision.speech)
    if not total:
        raise BenchError("the audio is too short for the window timings; give a longer --file")
    # inference alone, on the feature vectors of the same windows
    vectors = [features.extract(w.samples)[None, :] for w in windows[WARMUP_WINDOWS:]]
    infer = []
    for x in vectors:
        t0 = time.perf_counter()
        model.predict_proba(x)
        infer.append((time.perf_counter() - t0) * MS_PER_S)
    return {"window_ms_median": _median(total), "window_ms_p95": _p95(total), "window_cpu_ms_median": _median(cpu),
            "window_cpu_ms_p95": _p95(cpu), "inference_ms_median": _median(infer), "timed_windows": len(total),
            "speech_share": speech / len(total), **time_gate(model, windows), "windows": windows}


def time_gate(model: ModelLike, windows: list[Window]) -> dict:
    """The speech gate alone (``SpeechGate.decide``: the energy stage and Silero on the hop's new frames),
    on the same windows in stream order, their frame analyses computed beforehand (not timed)."""
    from . import features
    from .gate import SpeechGate

    analyses = [features.analyze(w.samples) for w in windows]
    wall, cpu, neural = [], [], 0
    for _ in range(WINDOW_PASSES):
        gate = SpeechGate(model.vad)
        for i, (w, a) in enumerate(zip(windows, analyses, strict=True)):
            c0, t0 = time.thread_time(), time.perf_counter()
            gate.decide(w, a)
            dt, dc = time.perf_counter() - t0, time.thread_time() - c0
            if i >= WARMUP_WINDOWS:
                wall.append(dt * MS_PER_S)
                cpu.append(dc * MS_PER_S)
        neural = gate.neural_windows
    return {"gate_ms_median": _median(wall), "gate_ms_p95": _p95(wall), "gate_cpu_ms_median": _median(cpu),
            "gate_neural_share": neural / max(1, len(windows))}


def time_seed(windows: list[Window]) -> dict:
    """The seed pipeline on the same windows: librosa features + a fitted MLPClassifier."""
    try:
        import librosa
        import numpy as np
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.neural_network import MLPClassifier
    except ImportError as e:
        return {"seed_window_ms_median": None, "seed_note": f"not measured: {e.name} is not installed "
                "(pip install 'realtime-ser[train]')"}
    import warnings

    def seed_vector(x):
        mfcc = librosa.feature.mfcc(y=x, sr=SAMPLE_RATE, n_mfcc=SEED_N_MFCC).mean(axis=1)
        chroma = librosa.feature.chroma_stft(y=x, sr=SAMPLE_RATE, n_chroma=SEED_N_CHROMA).mean(axis=1)
        mel = librosa.feature.melspectrogram(y=x, sr=SAMPLE_RATE, n_mels=SEED_N_MELS).mean(axis=1)
        return np.concatenate([mfcc, chroma, mel])

    rng = np.random.default_rng(0)
    n_in = SEED_N_MFCC + SEED_N_CHROMA + SEED_N_MELS
    clf = MLPClassifier(hidden_layer_sizes=SEED_HIDDEN, max_iter=SEED_FIT_ITER, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(rng.standard_normal((SEED_FIT_ROWS, n_in)), np.arange(SEED_FIT_ROWS) % SEED_CLASSES)
    times = []
    for i, w in enumerate(windows):
        t0 = time.perf_counter()
        clf.predict_proba(seed_vector(w.samples)[None, :])
        dt = time.perf_counter() - t0
        if i >= WARMUP_WINDOWS:  # the first calls compile librosa's numba code
            times.append(dt * MS_PER_S)
    return {"seed_window_ms_median": _median(times), "seed_timed_windows": len(times)}


# ---------------------------------------------------------------- subprocess timings


def _cli_command() -> tuple[list[str], str]:
    """How to start ``realtime-ser``: the console script next to this interpreter, else ``python -m``."""
    import shutil

    script = shutil.which("realtime-ser", path=str(Path(sys.executable).parent))
    if script is not None:
        return [script], script
    return [sys.executable, "-m", "realtime_ser"], f"{sys.executable} -m realtime_ser"


def _pin_prefix() -> list[str]:
    import shutil

    taskset = shutil.which("taskset")
    return [taskset, "-c", "0"] if taskset else []


@dataclass
class ChildRun:
    wall_s: float
    cpu_s: float
    maxrss_mb: float
    maxrss_from_hwm: bool  # False: the child ended before VmHWM could be read; ru_maxrss counts the parent too
    first_prediction_s: float | None
    first_line_s: float | None
    last_line_s: float | None
    cpu_at_first_s: float | None
    cpu_at_last_s: float | None
    lines: int


def _proc_cpu_s(pid: int) -> float | None:
    """utime + stime of a running process, from /proc (None where there is no /proc)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # fields 14 and 15 of stat(5)


def _proc_hwm_mb(pid: int) -> float | None:
    """Peak resident memory (VmHWM) of a running process. Not ``ru_maxrss``: after fork + exec it
    still counts the pages of the parent at fork time (this benchmark's own, with librosa loaded)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / KB_PER_MB
    except OSError:
        return None
    return None


def run_child(cmd: list[str]) -> ChildRun:
    """Run ``cmd``, reading its JSON lines as they come; its own rusage from ``os.wait4``."""
    import subprocess
    import tempfile

    # not a pipe: a chatty stderr cannot block the child
    with tempfile.TemporaryFile(mode="w+") as errfile:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errfile, text=True)
        first_pred = first_line = last_line = cpu_first = cpu_last = hwm = None
        lines = 0
        assert proc.stdout is not None
        for line in proc.stdout:
            now = time.perf_counter() - t0
            lines += 1
            if first_line is None:
                first_line, cpu_first = now, _proc_cpu_s(proc.pid)
            try:
                kind = json.loads(line).get("type")
            except ValueError:
                kind = None
            if kind == "prediction" and first_pred is None:
                first_pred = now
            # VmHWM only grows: read it on the first lines, then every HWM_EVERY_LINES lines and at the end line
            # (by the time the end line is read the process may be gone: the earlier reads stand)
            if lines <= HWM_EVERY_LINES or lines % HWM_EVERY_LINES == 0 or kind == "end":
                hwm = max(filter(None, (hwm, _proc_hwm_mb(proc.pid))), default=None)
            if kind == "end":  # its last line: the process is about to exit
                last_line, cpu_last = now, _proc_cpu_s(proc.pid)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        proc.stdout.close()
        errfile.seek(0)
        stderr = errfile.read()
    if proc.returncode != 0:
        tail = stderr.strip().splitlines()[-1:] or [""]
        raise BenchError(f"{' '.join(cmd)} exited with {proc.returncode}: {tail[0]}")
    return ChildRun(wall_s=wall, cpu_s=usage.ru_utime + usage.ru_stime,
                    maxrss_mb=hwm if hwm is not None else usage.ru_maxrss / KB_PER_MB, maxrss_from_hwm=hwm is not None,
                    first_prediction_s=first_pred, first_line_s=first_line, last_line_s=last_line,
                    cpu_at_first_s=cpu_first, cpu_at_last_s=cpu_last, lines=lines)


def subprocess_figures(args: argparse.Namespace, model_path: str | None, workdir: Path, quick: bool) -> dict:
    cli, cli_name = _cli_command()
    repeats = QUICK_REPEATS if quick else REPEATS
    replay_s = QUICK_REPLAY_S if quick else REPLAY_S
    realtime_s = QUICK_REALTIME_S if quick else REALTIME_S
    model_args = ["--model", model_path] if model_path else []
    listen = cli + ["listen", "--no-dashboard", *model_args]
    out: dict = {"cli": cli_name}

    help_runs = QUICK_HELP_RUNS if quick else HELP_RUNS
    out["cold_start_help_s"] = _median([run_child(cli + ["--help"]).wall_s for _ in range(help_runs)])
    out["python_start_s"] = _median([run_child([sys.executable, "-c", "pass"]).wall_s for _ in range(help_runs)])

    long_file = _write_audio(workdir / "replay.wav", replay_s, args.file)
    pin = _pin_prefix()
    runs = [run_child(pin + listen + ["--replay", str(long_file), "--pace", "fast"]) for _ in range(repeats)]
    out["replay_x_realtime"] = _median([replay_s / r.wall_s for r in runs])
    steady = [replay_s / (r.last_line_s - r.first_line_s) for r in runs
              if r.last_line_s is not None and r.first_line_s is not None and r.last_line_s > r.first_line_s]
    out["replay_x_realtime_after_start"] = _median(steady) if steady else None
    out["rss_peak_mb"] = max(r.maxrss_mb for r in runs)
    out["rss_from_vmhwm"] = all(r.maxrss_from_hwm for r in runs)
    out["replay_pinned"] = bool(pin)
    out["replay_audio_s"] = replay_s

    short_file = _write_audio(workdir / "realtime.wav", realtime_s, args.file)
    rt = [run_child(listen + ["--replay", str(short_file), "--pace", "realtime"]) for _ in range(repeats)]
    out["cpu_percent_realtime"] = _median([PERCENT * r.cpu_s / r.wall_s for r in rt])
    after = [PERCENT * (r.cpu_at_last_s - r.cpu_at_first_s) / (r.last_line_s - r.first_line_s) for r in rt
             if r.cpu_at_last_s is not None and r.cpu_at_first_s is not None and r.last_line_s is not None
             and r.first_line_s is not None and r.last_line_s > r.first_line_s]
    out["cpu_percent_realtime_after_start"] = _median(after) if after else None
    out["realtime_audio_s"] = realtime_s

    first_runs = [run_child(listen + ["--replay", str(short_file), "--pace", "realtime", "--duration",
                                      str(min(FIRST_EVENT_DURATION_S, realtime_s))]) for _ in range(repeats)]
    firsts = [r.first_prediction_s for r in first_runs + rt if r.first_prediction_s is not None]
    if not firsts:
        raise BenchError("listen --replay printed no prediction event")
    out["first_event_s"] = _median(firsts)
    out["repeats"] = repeats
    return out


# ---------------------------------------------------------------- machine


def machine_info() -> dict:
    import platform
    from importlib import metadata

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions: dict[str, str | None] = {}
    for dist in ("numpy", "onnxruntime", "soundfile", "soxr", "sounddevice", "rich", "librosa", "scikit-learn",
                 "scipy", "numba"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    try:
        usable: int | None = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    from . import features

    return {"cpu": cpu, "cores": os.cpu_count(), "usable_cores": usable, "python": platform.python_version(),
            "platform": platform.platform(), "features": features.IMPLEMENTATION, "libraries": versions,
            "blas_threads": {v: os.environ.get(v) for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                                            "MKL_NUM_THREADS")}}


# ---------------------------------------------------------------- report


def _verdict(key: str, value: float | None) -> str:
    if key not in TARGETS or value is None:
        return ""
    op, target = TARGETS[key]
    ok = value <= target if op == "<=" else value >= target
    return f"{'ok' if ok else 'MISSED'} ({op} {target:g})"


HOW = {
    "window_ms_median": "speech gate + features + ONNX inference per window, StreamProcessor.classify in stream "
                        "order, wall clock, after {warm} warm-up windows per pass, {passes} passes",
    "window_ms_p95": "95th percentile of the same",
    "window_cpu_ms_median": "the same windows in thread CPU time (time.thread_time): what the work costs "
                            "when the machine is busy and the wall clock waits for a core",
    "window_cpu_ms_p95": "95th percentile of the same",
    "inference_ms_median": "ONNX inference alone (part of window_ms), wall clock",
    "gate_ms_median": "the speech gate alone (part of window_ms): energy stage + Silero VAD on the hop's new "
                      "512-sample frames, SpeechGate.decide on the same windows, wall clock",
    "gate_ms_p95": "95th percentile of the same",
    "gate_cpu_ms_median": "the same in thread CPU time",
    "seed_window_ms_median": "librosa 40 MFCC + 12 chroma + 128 mel means + MLPClassifier(300), same windows",
    "speedup_vs_seed": "seed_window_ms_median / window_ms_median",
    "replay_x_realtime": "audio s / wall s of a whole `listen --replay --pace fast` process, start-up included, "
                         "median of {repeats}",
    "replay_x_realtime_after_start": "the same from the first to the last event line (start-up excluded)",
    "cpu_percent_realtime": "(user+sys CPU) / wall of a whole `listen --replay --pace realtime` process, "
                            "start-up included, median of {repeats}",
    "cpu_percent_realtime_after_start": "the same from the first to the end event line (/proc/<pid>/stat)",
    "first_event_s": "process start to the first prediction line, --pace realtime, median",
    "cold_start_help_s": "wall time of `realtime-ser --help`, median",
    "python_start_s": "wall time of `python -c pass` (the interpreter's own floor), median",
    "rss_peak_mb": "peak resident memory (VmHWM, read on the first 100 lines, then every 100 and at the end "
                   "event) of the fast replay process, max over runs",
}


def _fmt(v: object) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
    return str(v)


def print_table(result: dict) -> None:
    rows = [(k, _fmt(result.get(k)), _verdict(k, result.get(k)), HOW.get(k, "").format(**result.get("_how", {})))
            for k in HOW if k in result]
    m = result["machine"]
    machine = (f"{m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable), Python {m['python']}, "
               f"{m['platform']}; features: {m['features']}; "
               + ", ".join(f"{k} {v}" for k, v in m["libraries"].items() if v))
    load = f"load average {result['load_before']} before, {result['load_after']} after"
    notes = [n for n in (result.get("seed_note"), load) if n]
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        width = max(len(r[0]) for r in rows)
        for r in rows:
            sys.stdout.write(f"{r[0]:<{width}}  {r[1]:>8}  {r[2]:<16}  {r[3]}\n")
        sys.stdout.write(f"machine: {machine}\n" + "".join(f"note: {n}\n" for n in notes))
        return
    table = Table(title="realtime-ser bench", caption=f"machine: {machine}\n" + "\n".join(notes))
    for col in ("figure", "value", "target", "how"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(*r)
    Console(file=sys.stdout, width=160).print(table)


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def run(args: argparse.Namespace) -> int:
    from .api import load_model
    from .errors import ConfigError

    if args.file is not None and not Path(args.file).is_file():
        raise ConfigError(f"--file {args.file}: no such file")
    quick = args.quick
    load_before = _load()
    model = load_model(args.model)
    audio = _source_audio(args.file, QUICK_WINDOW_AUDIO_S if quick else WINDOW_AUDIO_S)
    result: dict = {"load_before": load_before}
    timed = time_runtime_windows(model, audio)
    windows = timed.pop("windows")
    result.update(timed)
    if args.no_seed:
        result.update(seed_window_ms_median=None, seed_note="not measured (--no-seed)")
    else:
        result.update(time_seed(windows))
    seed = result.get("seed_window_ms_median")
    result["speedup_vs_seed"] = seed / result["window_ms_median"] if seed else None
    if args.no_subprocess:
        for key in ("replay_x_realtime", "cpu_percent_realtime", "first_event_s", "cold_start_help_s",
                    "rss_peak_mb"):
            result[key] = None
    else:
        import tempfile

        from .model import Model  # load_model of a path is a Model: it knows its file

        model_path = str(model.path) if args.model is not None and isinstance(model, Model) else None
        with tempfile.TemporaryDirectory(prefix="realtime-ser-bench-") as tmp:
            result.update(subprocess_figures(args, model_path, Path(tmp), quick))
    result["machine"] = machine_info()
    result["load_after"] = _load()
    result["quick"] = quick
    result["audio"] = args.file or "generated speech-like voice"
    result["_how"] = {"warm": WARMUP_WINDOWS, "passes": WINDOW_PASSES, "repeats": result.get("repeats", 0)}
    if args.json:
        out = {k: v for k, v in result.items() if not k.startswith("_")}
        out["how"] = {k: HOW[k].format(**result["_how"]) for k in HOW if k in out}
        sys.stdout.write(json.dumps(out) + "\n")
    else:
        print_table(result)
    sys.stdout.flush()
    return 0
