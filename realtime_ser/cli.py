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
6     stdout cannot be written: closed (``>&-``), full (``> /dev/full``, a full disk), an I/O error;
      the lines written before stay whole
129   stopped by SIGHUP (the terminal closed); like SIGINT
130   stopped by SIGINT (Ctrl-C, also during start-up); every event produced was written, ``end`` last
141   stdout was closed by its reader (e.g. ``| head``); ends quietly
143   stopped by SIGTERM; like SIGINT
====  ==========================================================================

(The table with every case is docs/robustness.md.) Importing this module installs the program's
signal handling first, before anything else is imported, so that an interrupt during start-up ends
with the documented exit code and no traceback: this module is the program; embed ``realtime_ser.api``.
"""

from __future__ import annotations

import signal
import threading

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_pending_signal: list[int] = []
"""The first stop signal received before ``main()`` could act on it."""


def _record_signal(signum: int, frame: object) -> None:
    """Start-up handler: remember the first stop signal (``main()`` acts on it); a second one kills."""
    if _pending_signal:
        signal.signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)
        return
    _pending_signal.append(signum)


def _install_stop_handlers(handler: Callable[[int, FrameType | None], None]) -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in STOP_SIGNALS:
        signal.signal(sig, handler)


_install_stop_handlers(_record_signal)

import argparse  # noqa: E402
import contextlib  # noqa: E402
import importlib  # noqa: E402
import importlib.util  # noqa: E402
import io  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from typing import TYPE_CHECKING, Any, TextIO  # noqa: E402

# One BLAS / OpenMP thread unless the user set these: read once, when numpy / onnxruntime load
# (nothing above imports them). The work per window is small matrices; a multi-threaded BLAS on
# a busy 2-core machine only adds contention (see docs/performance.md).
NATIVE_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
for _name in NATIVE_THREAD_VARS:
    os.environ.setdefault(_name, "1")
# onnxruntime writes a telemetry device id under $HOME/.cache/Microsoft/DeveloperTools when it is
# imported (1.32: in its native library, before any Python call could turn telemetry off), unless
# this is set. A voice tool writes nothing the user did not ask for.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from . import __version__  # noqa: E402 (after the thread settings on purpose)
from .errors import ConfigError, ModelError, OutputError, SerError  # noqa: E402
from .sinks.jsonl import OutputClosed, silence_stdout  # noqa: E402
from .smoothing import (  # noqa: E402
    DEFAULT_ENTER,
    DEFAULT_EXIT,
    DEFAULT_FULL_VOICED_S,
    DEFAULT_MIN_DWELL_S,
    DEFAULT_ONSET_S,
    DEFAULT_SILENCE_HOLD_S,
    DEFAULT_TAU_S,
    MAX_FULL_VOICED_S,
    MAX_ONSET_S,
    MAX_TAU_S,
)

if TYPE_CHECKING:  # for annotations only: the command modules load lazily
    from types import FrameType

    from rich.console import Console
    from rich.live import Live

    from .core import ModelLike, StreamConfig
    from .profiles import Profile
    from .runner import Pipeline
    from .sinks.dashboard import Dashboard

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
STDOUT_COMMANDS = ("listen", "predict", "devices")
"""Subcommands whose product is stdout: started with stdout closed, they refuse at once (exit 6)."""
STD_FDS = (0, 1, 2)


class _Interrupted(BaseException):
    """A stop signal before the stream started. A BaseException, like KeyboardInterrupt, so that no
    ``except Exception`` on the way (model loading, device opening) turns it into another error."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


# ---------------------------------------------------------------- parser


def _say(line: str) -> None:
    """One line on stderr, whatever stderr is: closed, full or gone, the exit code must not change."""
    stream = sys.stderr
    if stream is None:
        return
    try:
        stream.write(line.replace("\n", " ") + "\n")
        stream.flush()
    except (OSError, ValueError):  # stderr full or closed: nowhere left to say it
        silence_stdout(stream)


class _Parser(argparse.ArgumentParser):
    """argparse with the program's error contract: exactly one line ``realtime-ser: error: ...`` on
    stderr and exit 2 (argparse's own prints the usage over several lines first)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        _say(f"{PROG}: error: {message}; see `{self.prog} --help`")
        sys.exit(EXIT_USAGE)


# Every numeric flag is checked here, in one place, when it is parsed: a value that parses as a
# number either works or is refused with exit 2. NaN and infinities are never accepted; the ranges
# keep the arithmetic downstream finite (a sample count from --duration, a status step from
# --status-every that must advance the audio clock). Flags not listed (other subcommands') still
# get the finite-number check. Relations between values (--hop <= --window, --exit <= --enter) and
# the model-dependent limits are checked where the configuration is built (exit 2 as well).
MAX_SECONDS = 1e9
"""The largest number of seconds any flag takes (31 years of audio: the sample counts stay exact)."""
MIN_TIME_STEP_S = 0.01
"""The shortest --duration or --status-every (0 turns status events off): a smaller step would not
advance the audio clock (it is far below the hop, so a status event per window is still possible)."""
MAX_BLOCK_FRAMES = 1 << 20
"""The largest --block-size: 22 s at 48 kHz; more would only be one huge read or a refused device buffer."""


class NumberRange:
    """The accepted values of a numeric flag: ``low``..``high`` (bounds included), ``0`` also when ``zero_ok``."""

    def __init__(self, *, low: float, high: float, zero_ok: bool = False, above_low: bool = False,
                 unit: str = "s") -> None:
        self.low = low
        self.high = high
        self.zero_ok = zero_ok
        self.above_low = above_low  # ``low`` itself excluded
        self.unit = unit

    def accepts(self, value: float) -> bool:
        if self.zero_ok and value == 0:
            return True
        return (self.low < value if self.above_low else self.low <= value) and value <= self.high

    def describe(self) -> str:
        low = f"above {self.low:g} and up to" if self.above_low else f"between {self.low:g} and"
        return f"{low} {self.high:g}" + (f" {self.unit}" if self.unit else "") + (" (or 0)" if self.zero_ok else "")


NUMBER_RANGES = {
    "--status-every": NumberRange(low=MIN_TIME_STEP_S, high=MAX_SECONDS, zero_ok=True),
    "--duration": NumberRange(low=MIN_TIME_STEP_S, high=MAX_SECONDS),
    "--block-size": NumberRange(low=1, high=MAX_BLOCK_FRAMES, unit="frames"),
    "--window": NumberRange(low=0.0, high=MAX_SECONDS, above_low=True),  # the framing's own limits: StreamConfig
    "--hop": NumberRange(low=0.0, high=MAX_SECONDS, above_low=True),
    "--smooth-tau": NumberRange(low=0.0, high=MAX_TAU_S, above_low=True),
    "--enter": NumberRange(low=0.0, high=1.0, above_low=True, unit=""),
    "--exit": NumberRange(low=0.0, high=1.0, unit=""),
    "--min-dwell": NumberRange(low=0.0, high=MAX_SECONDS),
    "--silence-hold": NumberRange(low=0.0, high=MAX_SECONDS),
    "--onset": NumberRange(low=0.0, high=MAX_ONSET_S),
    "--full-voiced": NumberRange(low=0.0, high=MAX_FULL_VOICED_S, above_low=True),
    "--device-timeout": NumberRange(low=0.0, high=MAX_SECONDS),  # (the `robust` branch's flag; 0: exit at once)
}
ANY_NUMBER = NumberRange(low=-MAX_SECONDS, high=MAX_SECONDS, unit="")
"""What a numeric flag not in ``NUMBER_RANGES`` accepts: any finite number of a sane size."""


def _checked_number(kind: type, limits: NumberRange) -> Callable[[str], float]:
    """An argparse ``type`` for ``kind`` (int or float) that refuses what ``limits`` do not allow."""

    def convert(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") \
                from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number; give a value {limits.describe()}")
        if not limits.accepts(value):
            raise argparse.ArgumentTypeError(f"{text} is out of range; give a value {limits.describe()}")
        return value

    convert.__name__ = kind.__name__
    return convert


def _check_numbers(parser: argparse.ArgumentParser) -> None:
    """Give every int/float flag of ``parser`` and its subcommands its range check."""
    for action in parser._actions:  # argparse keeps every action here (groups included)
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _check_numbers(sub)
        elif action.type in (int, float):
            limits = next((NUMBER_RANGES[o] for o in action.option_strings if o in NUMBER_RANGES), ANY_NUMBER)
            action.type = _checked_number(action.type, limits)


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


def _save_profile(profile: Profile, pipeline: Pipeline) -> None:
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


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG, description="Real-time speech-emotion tracking: audio in, JSON lines out (stdout), "
                               "a live dashboard on stderr.",
        epilog="exit codes: 0 ok, 2 usage, 3 bad audio, 4 model, 5 audio device, 6 stdout not writable, "
               "129 SIGHUP, 130 SIGINT, 141 stdout closed by its reader, 143 SIGTERM (docs/robustness.md)")
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
                     "instead of a microphone; '-' reads standard input (a WAV or OGG pipe, or a redirected file)")
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
                        help="a status event every S seconds of audio, 0 for none "
                             f"(default {DEFAULT_STATUS_EVERY_S:g})")
    listen.add_argument("--duration", type=float, metavar="S", help="stop after S seconds of audio")
    listen.add_argument("--device-timeout", type=float, metavar="S",
                        help="a lost input device is waited for and re-opened; give up after S seconds with exit 5 "
                             "(default: wait until stopped; 0: exit at once, as before)")
    listen.add_argument("--dashboard", action=argparse.BooleanOptionalAction, default=None,
                        help="the live dashboard on stderr (default: on when stderr is a terminal)")
    _add_profile_args(listen, saves=True)
    from .outputs import add_arguments as add_output_arguments  # light: no network library is imported

    add_output_arguments(listen)

    devices = sub.add_parser("devices", help="list audio input devices (* marks the default)")
    devices.add_argument("--json", action="store_true", help="one JSON object per device instead of a table")

    predict = sub.add_parser("predict", help="one JSON line per file: its overall emotion",
                             description="For each file: the mean probabilities over its speech windows, "
                                         "or an error for that file while the others still go through.")
    predict.add_argument("files", nargs="+", metavar="FILE", help="audio files; '-' is standard input")
    _add_model_args(predict)
    _add_profile_args(predict, saves=False)
    predict.add_argument("--same-speaker", action="store_true",
                         help="the files are one speaker: normalise them together (two passes: the speaker's "
                              "statistics from every file first, then each file's prediction)")

    words = set(sys.argv[1:] if argv is None else argv)
    for name in OPTIONAL_COMMANDS:
        module_name = f"{__package__}.{name}"
        found = importlib.util.find_spec(module_name)
        if found is None:
            continue
        if name not in words and found.origin:  # not this run's command: its help line, read, not imported
            with open(found.origin, encoding="utf-8") as source:
                sub.add_parser(name, help=source.readline().strip().strip('"').strip())
            continue
        module = importlib.import_module(module_name)
        doc = (module.__doc__ or name).strip().splitlines()[0]
        p = sub.add_parser(name, help=doc, description=module.__doc__)
        module.add_arguments(p)
        p.set_defaults(run=module.run)
    _check_numbers(parser)
    return parser


# ---------------------------------------------------------------- commands


def _stream_config(args: argparse.Namespace, model: ModelLike) -> StreamConfig:
    from .api import stream_config
    from .smoothing import SmoothingParams

    if hasattr(args, "smooth_tau") and args.exit > args.enter:
        raise ConfigError(f"--exit {args.exit:g} is above --enter {args.enter:g}; the exit threshold must not "
                          f"exceed the enter threshold")
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


CARD_SNIFF_BYTES = 64
"""How much of a --model file is read to tell a JSON card from an ONNX model (protobuf, never ``{``)."""


def _check_model_arg(model: str | None) -> None:
    """``--model`` given a model card (the JSON beside the .onnx) instead of the model: say so (the
    loader would read the card as its own card and report a checksum mismatch)."""
    if not model:
        return
    from pathlib import Path

    path = Path(model)
    try:
        with open(path, "rb") as f:
            head = f.read(CARD_SNIFF_BYTES).lstrip()
    except OSError:
        return  # the model loader reports a missing or unreadable file
    if path.suffix.lower() == ".json" or head.startswith(b"{"):
        onnx = path.with_suffix(".onnx")
        hint = f"give the model beside it, {onnx}" if onnx.exists() else "give the path of the .onnx model"
        raise ModelError(f"--model {model} is a model card (JSON), not an ONNX model; {hint}")


def cmd_devices(args: argparse.Namespace) -> int:
    from .audio.sources import NO_DEVICE_HINT, list_input_devices
    from .errors import AudioDeviceError
    from .sinks.jsonl import JsonlSink, write_text

    devices = list_input_devices()
    if not devices:
        raise AudioDeviceError(f"no audio input device found; {NO_DEVICE_HINT}")
    sink = JsonlSink()
    if args.json:
        for d in devices:
            sink.write(d.to_json())
        return EXIT_OK
    width = max(len(d.name) for d in devices)
    lines = [f"  {'#':>3}  {'name':<{width}}  {'channels':>8}  {'rate':>7}  host API"]
    for d in devices:
        mark = "*" if d.is_default else " "
        lines.append(f"{mark} {d.index:>3}  {d.name:<{width}}  {d.channels:>8}  {d.default_rate:>7.0f}  {d.hostapi}")
    lines.append("(* = default input; use `realtime-ser listen --device INDEX` or part of the name)")
    write_text(sink, "\n".join(lines) + "\n")
    return EXIT_OK


def cmd_predict(args: argparse.Namespace) -> int:
    from .api import load_model, load_profile, speaker_state, summarize_file
    from .audio.sources import display_path
    from .sinks.jsonl import JsonlSink

    _check_model_arg(args.model)
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
            result["file"] = display_path(path)
        except SerError as e:
            log.error("%s", e)
            result = {"file": display_path(path), "error": str(e)}
            if exit_code == EXIT_OK:
                exit_code = e.exit_code
        sink.write(result)
    return exit_code


def _make_dashboard(model: ModelLike, source_name: str) -> tuple[Dashboard, Live] | tuple[None, None]:
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
    from .runner import Pipeline, PipelineConfig
    from .sinks.jsonl import JsonlSink

    state: dict[str, Any] = {"pipeline": None, "signum": None}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if state["signum"] is not None or _pending_signal:  # a second signal: stop waiting, die by it
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)
            return
        state["signum"] = signum
        if state["pipeline"] is None:  # still starting (model, device): unwind to main()
            _pending_signal.append(signum)
            _deliver_interrupt(frame)
            return
        state["pipeline"].stop("stopped")

    _install_stop_handlers(on_signal)  # SIGINT, SIGTERM and SIGHUP (the terminal closed): the same stop

    from .api import load_profile

    _check_model_arg(args.model)
    model = load_model(args.model)
    profile = load_profile(args.profile, model) if args.profile else None
    from .outputs import TeeSink, outputs_for  # --osc, --vts, --serve: each in its own thread, never waited for

    outputs = outputs_for(args, list(model.labels))  # binds --serve now: a busy port is a usage error
    try:
        cfg = PipelineConfig(stream=_stream_config(args, model), status_every_s=args.status_every,
                             duration_s=args.duration, device_timeout_s=args.device_timeout)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    source: FileSource | MicSource
    if args.replay is not None:
        source = FileSource(args.replay, pace=args.pace, block_frames=args.block_size)
    else:
        source = MicSource(args.device, block_frames=args.block_size)
    pipeline = Pipeline(source, model, cfg)
    pipeline.start()  # opens the device or file: errors here have produced nothing yet
    if profile is not None:
        assert pipeline.processor is not None  # start() made it
        profile.apply(pipeline.processor)
    state["pipeline"] = pipeline
    signal.setitimer(signal.ITIMER_REAL, 0)  # an interrupt deferred during an import: handled just below
    if state["signum"] is None and _pending_signal:  # it arrived before this command's handler was installed
        state["signum"] = _pending_signal[0]
    if state["signum"] is not None:
        pipeline.stop("stopped")

    show = args.dashboard if args.dashboard is not None else sys.stderr.isatty()
    dashboard, live = _make_dashboard(model, source.name) if show else (None, None)
    terminal = live is not None and _same_terminal(sys.stdout, sys.stderr)
    lines = _TerminalLines(live.console) if terminal and live is not None else JsonlSink()  # stdout: the JSON lines
    sink = TeeSink(lines, outputs) if outputs else lines
    events = pipeline.events()
    try:
        try:
            if live is not None:
                live.start()
            for event in events:
                sink.write(event)
                if dashboard is not None:
                    dashboard.update(event)
        finally:
            events.close()
            if live is not None:
                _stop_live(live)
            if profile is not None and not args.no_save_profile:
                _save_profile(profile, pipeline)
    except OutputClosed:
        pipeline.stop("stopped")
        return EXIT_OUTPUT_CLOSED if state["signum"] is None else SIGNAL_EXIT_BASE + state["signum"]
    except OutputError:
        if state["signum"] is None:
            raise
        # stopped by a signal (SIGHUP: the terminal is gone, so writing to it fails): the signal's code
    if state["signum"] is not None:
        return SIGNAL_EXIT_BASE + state["signum"]
    return EXIT_OK


def _same_terminal(out: TextIO, err: TextIO) -> bool:
    """True when stdout and stderr are the same terminal (the JSON lines would run through the dashboard)."""
    try:
        return out.isatty() and err.isatty() and os.path.samestat(os.fstat(out.fileno()), os.fstat(err.fileno()))
    except (AttributeError, OSError, ValueError):
        return False


TERMINAL_EVENT_TYPES = ("start", "change", "end")
"""With stdout on the dashboard's terminal, the events printed above the live view (a prediction
every hop would scroll the dashboard away; redirect stdout for every event)."""


class _TerminalLines:
    """The sink when stdout is the dashboard's own terminal: the start, change and end lines are
    printed above the live view through Rich (``Console.print`` inside ``Live``), so lines and dashboard
    never overwrite each other. A pipe or a file on stdout gets every line, as always (``JsonlSink``)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.lines = 0
        self._hinted = False

    def _print(self, text: str, style: str | None = None) -> None:
        from rich.text import Text

        try:
            self.console.print(Text(text, style=style or ""), soft_wrap=True, highlight=False)
        except (OSError, ValueError) as e:
            raise OutputError(f"cannot write to the terminal ({getattr(e, 'strerror', None) or e})") from None

    def hint(self) -> None:
        self._print(f"stdout is this terminal: only {', '.join(TERMINAL_EVENT_TYPES)} events are shown above the "
                    f"dashboard; redirect stdout (> events.jsonl, or | jq) for every event", style="dim")

    def write(self, event: dict) -> None:
        from .sinks.jsonl import encode

        if not self._hinted:
            self._hinted = True
            self.hint()
        if event.get("type") in TERMINAL_EVENT_TYPES:
            self._print(encode(event))
            self.lines += 1


def _stop_live(live: Live) -> None:
    """Stop the dashboard; a terminal that went away (SIGHUP) cannot take the last frame."""
    try:
        live.stop()
    except (OSError, ValueError) as e:
        log.debug("stopping the dashboard: %s", e)


COMMANDS = {"listen": cmd_listen, "devices": cmd_devices, "predict": cmd_predict}

C_NOISE_PREFIXES = ("Expression '", "ALSA lib ", "Cannot connect to server", "jack server", "JackShmReadWritePtr")
"""Lines that PortAudio, ALSA and JACK print on their own to file descriptor 2 (for example when a
device vanishes, PortAudio's ALSA layer prints three 'Expression ... failed' lines)."""
C_NOISE_MARKERS = ("libmpg123/",)
"""Lines containing these are noise as well: libsndfile's MP3 decoder (libmpg123) reports recoverable
bit-reservoir issues of valid MP3 files, ``[src/libmpg123/layer3.c:...] error: part2_3_length ...``."""
DIVERTED_COMMANDS = ("listen", "predict", "devices", "calibrate")
"""Subcommands that run PortAudio or libsndfile, whose C-level stderr goes through ``divert_c_stderr``."""


def _is_c_noise(line: str) -> bool:
    return line.lstrip().startswith(C_NOISE_PREFIXES) or any(marker in line for marker in C_NOISE_MARKERS)


@contextlib.contextmanager
def divert_c_stderr():
    """While open: C libraries' writes to fd 2 go to a temporary file, Python's stderr (logging,
    the dashboard, the error line) still reaches the terminal. On exit, known PortAudio/ALSA/mpg123
    noise is logged at debug level (-vv) and anything else is passed on to stderr, so a device fault
    ends with one clear line instead of the C libraries' diagnostics, and a valid MP3 with none."""
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
            try:
                new_stderr.flush()
            except (OSError, ValueError):  # stderr full: what it held is lost either way
                silence_stdout(new_stderr)
            os.dup2(real_fd, 2)
            os.close(real_fd)
            sys.stderr = old_stderr
            for h in handlers:
                h.setStream(old_stderr)
            trap.seek(0)
            for line in trap.read().decode("utf-8", "replace").splitlines():
                if not line.strip():
                    continue
                if _is_c_noise(line):
                    log.debug("(audio library) %s", line)
                else:
                    _say(line)


# ---------------------------------------------------------------- entry point


class _Formatter(logging.Formatter):
    """``realtime-ser: warning: ...``, like the error line."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{PROG}: {record.levelname.lower()}: {record.getMessage()}"


class _StderrHandler(logging.StreamHandler):
    """Logging to stderr that never turns a full or closed stderr into a traceback or another exit code."""

    def handleError(self, record: logging.LogRecord) -> None:
        silence_stdout(self.stream)


def _setup_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    handler = _StderrHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    root = logging.getLogger("realtime_ser")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def _reopen_closed_std_fds() -> frozenset[int]:
    """File descriptors 0-2 the program was started without (``>&-``, ``2>&-``): each is pointed at
    /dev/null (else the next file opened would take its number, and writes meant for stdout or C
    libraries' messages meant for stderr would land in it) and its Python stream rebuilt on it.
    Returns the numbers that were closed."""
    closed = set()
    for fd in STD_FDS:
        try:
            os.fstat(fd)
        except OSError:
            closed.add(fd)
            devnull = os.open(os.devnull, os.O_RDWR)
            if devnull != fd:
                os.dup2(devnull, fd)
                os.close(devnull)
    if 1 in closed and sys.stdout is None:
        sys.stdout = open(1, "w", encoding="utf-8", closefd=False)  # noqa: SIM115 (lives as long as the process)
    if 2 in closed and sys.stderr is None:
        sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115
    return frozenset(closed)


IMPORT_FRAME_PREFIX = "<frozen importlib"
REDELIVER_S = 0.01
"""How soon an interrupt deferred during an import is tried again."""


def _in_import(frame: FrameType | None) -> bool:
    """True when ``frame`` runs inside the import machinery (also when C code, numpy's for example,
    imports a module): an exception raised there can be turned into an ImportError."""
    while frame is not None:
        if frame.f_code.co_filename.startswith(IMPORT_FRAME_PREFIX):
            return True
        frame = frame.f_back
    return False


def _redeliver(signum: int, frame: FrameType | None) -> None:
    _deliver_interrupt(frame)


def _deliver_interrupt(frame: FrameType | None) -> None:
    """Unwind to ``main()`` with the pending stop signal, unless an import is running: then try again
    in ``REDELIVER_S`` (SIGALRM), so an interrupt never breaks a half-imported module."""
    if _in_import(frame):
        signal.signal(signal.SIGALRM, _redeliver)
        signal.setitimer(signal.ITIMER_REAL, REDELIVER_S)
        return
    raise _Interrupted(_pending_signal[0])


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    """The handler while ``main()`` runs a command: unwind to ``main()``, which exits 128 + signum;
    a second signal kills at once."""
    if _pending_signal:
        signal.signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)
        return
    _pending_signal.append(signum)
    _deliver_interrupt(frame)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except _Interrupted as e:
        return SIGNAL_EXIT_BASE + e.signum
    except KeyboardInterrupt:
        return SIGNAL_EXIT_BASE + signal.SIGINT
    finally:
        _install_stop_handlers(_record_signal)
        signal.setitimer(signal.ITIMER_REAL, 0)


def _main(argv: Sequence[str] | None) -> int:
    closed_fds = _reopen_closed_std_fds()
    _install_stop_handlers(_raise_interrupted)
    if _pending_signal:  # interrupted during start-up (imports): stop now, as documented
        return SIGNAL_EXIT_BASE + _pending_signal[0]
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    run = getattr(args, "run", None) or COMMANDS[args.command]
    try:
        if 1 in closed_fds and args.command in STDOUT_COMMANDS:
            raise OutputError("stdout is closed (started with >&-); the events are written to stdout: redirect it "
                              "to a file, a pipe or /dev/null")
        with divert_c_stderr() if args.command in DIVERTED_COMMANDS else contextlib.nullcontext():
            return int(run(args) or EXIT_OK)
    except SerError as e:
        _say(f"{PROG}: error: {e}")
        return e.exit_code
    except OutputClosed:
        return EXIT_OUTPUT_CLOSED
    except BrokenPipeError:
        silence_stdout(sys.stdout)
        return EXIT_OUTPUT_CLOSED


def _final_flush(code: int) -> int:
    """Flush stdout and stderr once more; a stream that cannot take it is pointed at /dev/null so that
    the interpreter's own flush at exit cannot fail (and change the exit code to 120). Unwritten
    stdout (not the event lines: each is flushed when written) is an output error when all else went well."""
    for stream in (sys.stdout, sys.stderr):
        if stream is None:
            continue
        try:
            stream.flush()
        except BrokenPipeError:
            silence_stdout(stream)
        except (OSError, ValueError) as e:
            silence_stdout(stream)
            if stream is sys.stdout and code == EXIT_OK:
                _say(f"{PROG}: error: cannot write to stdout ({getattr(e, 'strerror', None) or e})")
                code = OutputError.exit_code
    return code


def entry() -> None:
    """The ``realtime-ser`` program (console script and ``python -m realtime_ser``): ``main()``, then exit.

    When ``main()`` returns, everything the program owes has been written: each event line was
    flushed as it was written, the dashboard stopped, files closed; stdout and stderr are flushed once
    more here. The process then ends with ``os._exit``: the interpreter's own teardown (freeing every
    numpy and onnxruntime object one by one: 30-40 ms, some 3 % of a 10-minute fast replay at its
    target speed) has nothing left to do for us. Not when PortAudio is loaded (``sounddevice``
    terminates it in an exit handler): that exits normally, as does an exception escaping ``main()``
    (exit code 1 with its traceback).
    """
    code = _final_flush(main())
    if "sounddevice" not in sys.modules:
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
