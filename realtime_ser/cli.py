"""The command line: the only place that reads argv, sets up logging and maps errors to
exit codes. Heavy modules (onnxruntime, sounddevice, rich, the model) are imported only
by the subcommand that needs them, so ``realtime-ser --help`` and ``realtime-ser
devices`` stay fast.

Exit codes:

====  ==========================================================================
0     success (end of input, ``--duration`` reached, every ``predict`` file read)
1     an internal error (a bug: the only case with a traceback)
2     bad arguments or configuration
3     bad input audio (``predict``: at least one file failed, the others are printed)
4     missing, corrupted or mismatched model
5     no input device, device cannot be opened, or the device vanished
130   stopped by SIGINT (Ctrl-C); every event produced was written, ``end`` last
141   stdout was closed by its reader (e.g. ``| head``); ends quietly
143   stopped by SIGTERM; like SIGINT
====  ==========================================================================
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import io
import logging
import os
import signal
import sys
import tempfile
from typing import Sequence

# One BLAS / OpenMP thread unless the user set these: read once, when numpy / onnxruntime load
# (nothing above imports them). The work per window is small matrices; a multi-threaded BLAS on
# a busy 2-core machine only adds contention (see docs/performance.md).
NATIVE_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
for _name in NATIVE_THREAD_VARS:
    os.environ.setdefault(_name, "1")

from . import __version__  # noqa: E402 (after the thread settings on purpose)
from .errors import ConfigError, SerError  # noqa: E402
from .sinks.jsonl import OutputClosed, silence_stdout  # noqa: E402
from .smoothing import (DEFAULT_ENTER, DEFAULT_EXIT, DEFAULT_FULL_VOICED_S, DEFAULT_MIN_DWELL_S,  # noqa: E402
                        DEFAULT_ONSET_S, DEFAULT_SILENCE_HOLD_S, DEFAULT_TAU_S)

log = logging.getLogger("realtime_ser")

PROG = "realtime-ser"
EXIT_OK = 0
EXIT_USAGE = 2
SIGNAL_EXIT_BASE = 128
EXIT_OUTPUT_CLOSED = SIGNAL_EXIT_BASE + 13  # 141, as if killed by SIGPIPE
DASHBOARD_REFRESH_PER_SECOND = 8
OPTIONAL_COMMANDS = ("bench", "calibrate", "profiles")
"""Subcommands contributed by optional modules ``realtime_ser.<name>``: each defines
``add_arguments(parser)`` and ``run(args) -> int`` and must be light to import (import
heavy modules inside ``run``). The module docstring's first line is the help text."""

DEFAULT_STATUS_EVERY_S = 5.0


class _Interrupted(BaseException):
    """A stop signal before the stream started. A BaseException, like KeyboardInterrupt, so that no
    ``except Exception`` on the way (model loading, device opening) turns it into another error."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


# ---------------------------------------------------------------- parser


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", metavar="PATH", help="an .onnx model with its .json card beside it "
                   "(default: the shipped models/default.onnx)")
    p.add_argument("--window", type=float, metavar="S", help="analysis window in seconds (default: the model's, 2.0)")
    p.add_argument("--hop", type=float, metavar="S", help="hop between windows in seconds (default: the model's, 0.5)")


def _add_profile_args(p: argparse.ArgumentParser, saves: bool) -> None:
    p.add_argument("--profile", metavar="NAME", help="start from speaker profile NAME (made by `realtime-ser "
                   "calibrate`; a name in the user data dir, or a path ending in .json)" +
                   ("; the adapted statistics are saved into it on exit" if saves else ""))
    if saves:
        p.add_argument("--no-save-profile", action="store_true", help="keep the --profile as it is (do not save)")


def _save_profile(profile, pipeline) -> None:
    """After ``listen --profile``: the adapted statistics into the profile (atomic write)."""
    from . import profiles

    proc = getattr(pipeline, "processor", None)
    if proc is None or proc.normalizer is None:
        return
    profile.absorb(proc, proc.speech_windows * proc.config.hop_s)
    try:
        path = profiles.save(profile)
    except SerError as e:
        log.error("%s", e)
        return
    log.info("profile %s saved to %s", profile.name, path)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Real-time speech-emotion tracking: audio in, JSON lines out (stdout), "
                               "a live dashboard on stderr.",
        epilog="exit codes: 0 ok, 2 usage, 3 bad audio, 4 model, 5 audio device, 130 SIGINT, 141 stdout "
               "closed, 143 SIGTERM")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    listen = sub.add_parser("listen", help="track emotion live from a microphone or a replayed file",
                            description="Track emotion from a microphone (or --replay FILE): one JSON event "
                                        "per line on stdout; the dashboard on stderr when it is a terminal.")
    src = listen.add_mutually_exclusive_group()
    src.add_argument("--device", metavar="DEV", help="input device: index or part of its name "
                     "(see `realtime-ser devices`; default: the system's default input)")
    src.add_argument("--replay", metavar="FILE", help="analyse an audio file (WAV/FLAC/OGG, any rate and channels) "
                     "instead of a microphone")
    listen.add_argument("--pace", choices=("realtime", "fast"), default="realtime",
                        help="--replay speed: realtime behaves exactly like a microphone (windows may be skipped "
                             "if the machine is too slow); fast reads as fast as possible and loses nothing "
                             "(default: realtime)")
    listen.add_argument("--block-size", type=int, metavar="FRAMES",
                        help="frames per capture/read block at the source's own rate (default: 50 ms)")
    _add_model_args(listen)
    g = listen.add_argument_group("smoothing (seconds are seconds of audio)")
    g.add_argument("--smooth-tau", type=float, default=DEFAULT_TAU_S, metavar="S",
                   help=f"time constant of the probability average (default {DEFAULT_TAU_S:g})")
    g.add_argument("--enter", type=float, default=DEFAULT_ENTER, metavar="P",
                   help=f"smoothed probability at which another emotion takes over (default {DEFAULT_ENTER:g})")
    g.add_argument("--exit", type=float, default=DEFAULT_EXIT, metavar="P",
                   help=f"below this the current emotion is given up (default {DEFAULT_EXIT:g})")
    g.add_argument("--min-dwell", type=float, default=DEFAULT_MIN_DWELL_S, metavar="S",
                   help=f"minimum time between two emotion changes (default {DEFAULT_MIN_DWELL_S:g})")
    g.add_argument("--silence-hold", type=float, default=DEFAULT_SILENCE_HOLD_S, metavar="S",
                   help=f"no speech for this long after the last speech window -> state 'silence' "
                        f"(default {DEFAULT_SILENCE_HOLD_S:g})")
    g.add_argument("--onset", type=float, default=DEFAULT_ONSET_S, metavar="S",
                   help=f"after silence, seconds of speech evidence (speech weight x time) before the first "
                        f"emotion; until then the state stays 'silence' (default {DEFAULT_ONSET_S:g}, 0: at once)")
    g.add_argument("--full-voiced", type=float, default=DEFAULT_FULL_VOICED_S, metavar="S",
                   help=f"a window with this many seconds of voiced frames counts fully in the average; "
                        f"fewer count proportionally less (default {DEFAULT_FULL_VOICED_S:g})")
    listen.add_argument("--status-every", type=float, default=DEFAULT_STATUS_EVERY_S, metavar="S",
                        help=f"a status event every S seconds of audio, 0 for none (default {DEFAULT_STATUS_EVERY_S:g})")
    listen.add_argument("--duration", type=float, metavar="S", help="stop after S seconds of audio")
    listen.add_argument("--device-timeout", type=float, metavar="S",
                        help="a lost input device is waited for and re-opened; give up after S seconds with exit 5 "
                             "(default: wait until stopped; 0: exit at once, as before)")
    listen.add_argument("--dashboard", action=argparse.BooleanOptionalAction, default=None,
                        help="the live dashboard on stderr (default: on when stderr is a terminal)")
    _add_profile_args(listen, saves=True)

    devices = sub.add_parser("devices", help="list audio input devices (* marks the default)")
    devices.add_argument("--json", action="store_true", help="one JSON object per device instead of a table")

    predict = sub.add_parser("predict", help="one JSON line per file: its overall emotion",
                             description="For each file: the mean probabilities over its speech windows, "
                                         "or an error for that file while the others still go through.")
    predict.add_argument("files", nargs="+", metavar="FILE")
    _add_model_args(predict)
    _add_profile_args(predict, saves=False)
    predict.add_argument("--same-speaker", action="store_true",
                         help="the files are one speaker: normalise them together (two passes: the speaker's "
                              "statistics from every file first, then each file's prediction)")

    for name in OPTIONAL_COMMANDS:
        module_name = f"{__package__}.{name}"
        if importlib.util.find_spec(module_name) is None:
            continue
        module = importlib.import_module(module_name)
        doc = (module.__doc__ or name).strip().splitlines()[0]
        p = sub.add_parser(name, help=doc, description=module.__doc__)
        module.add_arguments(p)
        p.set_defaults(run=module.run)
    return parser


# ---------------------------------------------------------------- commands


def _stream_config(args: argparse.Namespace, model):
    from .api import stream_config
    from .smoothing import SmoothingParams

    try:
        smoothing = SmoothingParams(tau_s=args.smooth_tau, enter=args.enter, exit=args.exit,
                                    min_dwell_s=args.min_dwell, silence_hold_s=args.silence_hold,
                                    onset_s=args.onset, full_voiced_s=args.full_voiced) \
            if hasattr(args, "smooth_tau") else None
    except ValueError as e:
        raise ConfigError(str(e)) from None
    cfg = stream_config(model, args.window, args.hop, smoothing)
    card_window = getattr(model, "window_s", cfg.window_s)
    if abs(cfg.window_s - card_window) > 1e-9:
        log.warning("--window %.3g s differs from the %.3g s the model was trained on", cfg.window_s, card_window)
    return cfg


def cmd_devices(args: argparse.Namespace) -> int:
    import json

    from .audio.sources import NO_DEVICE_HINT, list_input_devices
    from .errors import AudioDeviceError

    devices = list_input_devices()
    if not devices:
        raise AudioDeviceError(f"no audio input device found; {NO_DEVICE_HINT}")
    out = sys.stdout
    if args.json:
        for d in devices:
            out.write(json.dumps(d.to_json()) + "\n")
    else:
        width = max(len(d.name) for d in devices)
        out.write(f"  {'#':>3}  {'name':<{width}}  {'channels':>8}  {'rate':>7}  host API\n")
        for d in devices:
            mark = "*" if d.is_default else " "
            out.write(f"{mark} {d.index:>3}  {d.name:<{width}}  {d.channels:>8}  {d.default_rate:>7.0f}  {d.hostapi}\n")
        out.write("(* = default input; use `realtime-ser listen --device INDEX` or part of the name)\n")
    out.flush()
    return EXIT_OK


def cmd_predict(args: argparse.Namespace) -> int:
    from .api import load_model, load_profile, speaker_state, summarize_file
    from .sinks.jsonl import JsonlSink

    model = load_model(args.model)
    cfg = _stream_config(args, model)
    if args.profile and args.same_speaker:
        raise ConfigError("--profile and --same-speaker both set the speaker's statistics; give one of them")
    profile = load_profile(args.profile, model) if args.profile else None
    state = None
    if args.same_speaker:
        if model.normalizer is None:
            log.warning("model %s has no speaker normaliser: --same-speaker changes nothing", model.name)
        else:
            try:
                state = speaker_state(args.files, model, cfg)
            except SerError as e:
                raise type(e)(f"--same-speaker reads every file first: {e}") from None
    sink = JsonlSink()
    exit_code = EXIT_OK
    for path in args.files:
        try:
            result = summarize_file(path, model, cfg, profile=profile, normalizer_state=state)
        except SerError as e:
            log.error("%s", e)
            result = {"file": path, "error": str(e)}
            if exit_code == EXIT_OK:
                exit_code = e.exit_code
        sink.write(result)
    return exit_code


def _make_dashboard(model, source_name: str):
    """The Rich dashboard and its Live display, or (None, None) if it cannot be shown."""
    try:
        from rich.console import Console
        from rich.live import Live

        from .sinks.dashboard import Dashboard
    except ImportError as e:
        log.warning("dashboard unavailable (%s); continuing without it", e)
        return None, None
    console = Console(stderr=True)
    dashboard = Dashboard(console, list(model.labels), model.name, source_name)
    live = Live(dashboard, console=console, redirect_stdout=False, redirect_stderr=False,
                refresh_per_second=DASHBOARD_REFRESH_PER_SECOND)
    return dashboard, live


def cmd_listen(args: argparse.Namespace) -> int:
    from .api import load_model
    from .audio.sources import FileSource, MicSource
    from .pipeline import Pipeline, PipelineConfig
    from .sinks.jsonl import JsonlSink

    state = {"pipeline": None, "signum": None}

    def on_signal(signum, frame) -> None:
        if state["signum"] is not None:  # a second signal: stop waiting, die by it
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        state["signum"] = signum
        if state["pipeline"] is None:
            raise _Interrupted(signum)
        state["pipeline"].stop("stopped")

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    from .api import load_profile

    model = load_model(args.model)
    profile = load_profile(args.profile, model) if args.profile else None
    try:
        cfg = PipelineConfig(stream=_stream_config(args, model), status_every_s=args.status_every,
                             duration_s=args.duration, device_timeout_s=args.device_timeout)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if args.replay is not None:
        source = FileSource(args.replay, pace=args.pace, block_frames=args.block_size)
    else:
        source = MicSource(args.device, block_frames=args.block_size)
    pipeline = Pipeline(source, model, cfg)
    pipeline.start()  # opens the device or file: errors here have produced nothing yet
    if profile is not None:
        profile.apply(pipeline.processor)
    state["pipeline"] = pipeline
    if state["signum"] is not None:
        pipeline.stop("stopped")

    show = args.dashboard if args.dashboard is not None else sys.stderr.isatty()
    dashboard, live = _make_dashboard(model, source.name) if show else (None, None)
    sink = JsonlSink()
    events = pipeline.events()
    try:
        if live is not None:
            live.start()
        for event in events:
            sink.write(event)
            if dashboard is not None:
                dashboard.update(event)
    except OutputClosed:
        pipeline.stop("stopped")
        return EXIT_OUTPUT_CLOSED
    finally:
        events.close()
        if live is not None:
            live.stop()
        if profile is not None and not args.no_save_profile:
            _save_profile(profile, pipeline)
    if state["signum"] is not None:
        return SIGNAL_EXIT_BASE + state["signum"]
    return EXIT_OK


COMMANDS = {"listen": cmd_listen, "devices": cmd_devices, "predict": cmd_predict}

C_NOISE_PREFIXES = ("Expression '", "ALSA lib ", "Cannot connect to server", "jack server", "JackShmReadWritePtr")
"""Lines that PortAudio, ALSA and JACK print on their own to file descriptor 2 (for example when a
device vanishes, PortAudio's ALSA layer prints three 'Expression ... failed' lines)."""


@contextlib.contextmanager
def divert_c_stderr():
    """While open: C libraries' writes to fd 2 go to a temporary file, Python's stderr (logging,
    the dashboard, the error line) still reaches the terminal. On exit, known PortAudio/ALSA noise
    is logged at debug level (-vv) and anything else is passed on to stderr, so a device fault
    ends with one clear line instead of the C libraries' diagnostics."""
    try:
        sys.stderr.flush()
        real_fd = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    old_stderr = sys.stderr
    handlers = [h for h in logging.getLogger("realtime_ser").handlers if isinstance(h, logging.StreamHandler)]
    new_stderr = io.TextIOWrapper(io.FileIO(real_fd, "w", closefd=False), encoding=getattr(old_stderr, "encoding", None)
                                  or "utf-8", errors="backslashreplace", line_buffering=True)
    with tempfile.TemporaryFile() as trap:
        os.dup2(trap.fileno(), 2)
        sys.stderr = new_stderr
        for h in handlers:
            h.setStream(new_stderr)
        try:
            yield
        finally:
            new_stderr.flush()
            os.dup2(real_fd, 2)
            os.close(real_fd)
            sys.stderr = old_stderr
            for h in handlers:
                h.setStream(old_stderr)
            trap.seek(0)
            for line in trap.read().decode("utf-8", "replace").splitlines():
                if not line.strip():
                    continue
                if line.lstrip().startswith(C_NOISE_PREFIXES):
                    log.debug("(audio library) %s", line)
                else:
                    old_stderr.write(line + "\n")
            old_stderr.flush()


# ---------------------------------------------------------------- entry point


class _Formatter(logging.Formatter):
    """``realtime-ser: warning: ...``, like the error line."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{PROG}: {record.levelname.lower()}: {record.getMessage()}"


def _setup_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    root = logging.getLogger("realtime_ser")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    run = getattr(args, "run", None) or COMMANDS[args.command]
    uses_portaudio = args.command == "devices" or (args.command in ("listen", "calibrate") and args.replay is None)
    try:
        with divert_c_stderr() if uses_portaudio else contextlib.nullcontext():
            return int(run(args) or EXIT_OK)
    except SerError as e:
        sys.stderr.write(f"{PROG}: error: {e}\n")
        sys.stderr.flush()
        return e.exit_code
    except OutputClosed:
        return EXIT_OUTPUT_CLOSED
    except BrokenPipeError:
        silence_stdout(sys.stdout)
        return EXIT_OUTPUT_CLOSED
    except _Interrupted as e:
        return SIGNAL_EXIT_BASE + e.signum
    except KeyboardInterrupt:
        return SIGNAL_EXIT_BASE + signal.SIGINT


def entry() -> None:
    """The ``realtime-ser`` program (console script and ``python -m realtime_ser``): ``main()``, then exit.

    When ``main()`` returns, everything the program owes has been written: each event line was
    flushed as it was written, the dashboard stopped, files closed; stdout and stderr are flushed once
    more here. The process then ends with ``os._exit``: the interpreter's own teardown (freeing every
    numpy and onnxruntime object one by one: 30-40 ms, some 3 % of a 10-minute fast replay at its
    target speed) has nothing left to do for us. Not when PortAudio is loaded (``sounddevice``
    terminates it in an exit handler), and not when the final flush fails: those exit normally, as
    does an exception escaping ``main()`` (exit code 1 with its traceback).
    """
    code = main()
    if "sounddevice" not in sys.modules:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except (OSError, ValueError) as e:  # let the interpreter's exit deal with it, as before
            log.debug("final flush: %s", e)
        else:
            os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
