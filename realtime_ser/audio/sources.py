"""Audio sources: the microphone (a sounddevice callback) and a replayed file.

Both put the same items into the same bounded ``queue.Queue``: ``Block`` (raw samples
at the source's own rate and channel count, with the index of their first frame and
the monotonic time they arrived), then ``END`` or a ``SourceFailure``. Conversion to
16 kHz mono happens in one place, downstream (``convert.Converter`` in the worker).
Time is counted in frames: a dropped block leaves a gap in the frame index that the
worker fills with silence, so event times stay on the audio clock.

This module creates no threads. ``MicSource`` lets PortAudio call ``CallbackCapture``;
``FileSource.run`` is a blocking loop the pipeline runs in its own thread at ``realtime``
pace; a ``fast`` replay is read by the pipeline itself, through ``FileSource.blocks``.

``sounddevice`` is imported lazily (``realtime-ser --help`` does not load PortAudio).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import queue
import stat
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import AudioDeviceError, ConfigError, InputAudioError, SerError
from .convert import MAX_RATE, MIN_RATE, check_rate

log = logging.getLogger(__name__)

BLOCK_S = 0.05  # default block: 50 ms of audio at the source's rate
FAST_READ_S = 2.0  # a fast replay without --block-size reads this much per block: nothing waits for it
MAX_CAPTURE_CHANNELS = 2  # a mic is mono or stereo; more channels are mixed down anyway
STARTUP_TIMEOUT_S = 5.0  # a device that gives no audio at all within this is reported
STALL_TIMEOUT_S = 1.0  # a running device silent for this long has gone away...
STALL_BLOCKS = 3  # ...or for this many blocks, when blocks are long
PUT_POLL_S = 0.1  # how often a blocking put re-checks the stop event
FILE_FORMATS_HINT = "WAV, FLAC or OGG"


@dataclass(frozen=True)
class Block:
    """Raw samples ``(frames, channels)`` starting at frame ``start`` of the source's stream."""

    start: int
    data: np.ndarray
    arrival: float  # time.monotonic() when the block became available


class DeviceLost(AudioDeviceError):
    """The input device stopped delivering audio; the pipeline may wait for it and re-open it."""


@dataclass(frozen=True)
class SourceFailure:
    """Put in the queue when a source fails; the worker raises ``error`` after what came before."""

    error: SerError


class _End:
    def __repr__(self) -> str:
        return "END"


END = _End()
"""Put in the queue after a finite source's last block."""


class CaptureCounters:
    """Counts kept by the producing side (plain ints: one writer, readers tolerate staleness)."""

    def __init__(self) -> None:
        self.blocks = 0
        self.dropped_blocks = 0
        self.dropped_frames = 0
        self.input_overflows = 0
        self.other_status_flags = 0


class CallbackCapture:
    """The whole job of the audio callback: copy the block into the bounded queue.

    Never blocks (``put_nowait``), never logs or prints, allocates only the copy of one
    block. A full queue is counted as a dropped block; PortAudio status flags are counted.
    ``callback`` has the signature sounddevice expects, so tests can call it directly.
    A re-opened device gets a new capture that continues the old one's ``counters`` and
    frame index (``next_frame``).
    """

    def __init__(self, q: queue.Queue, *, counters: CaptureCounters | None = None, next_frame: int = 0) -> None:
        self.queue = q
        self.counters = counters if counters is not None else CaptureCounters()
        self.next_frame = next_frame
        self.last_arrival: float | None = None
        self.max_callback_s: float | None = None  # longest callback run, measured inside it
        self.finished = False

    def callback(self, indata: np.ndarray, frames: int, time_info: object, status: object) -> None:
        now = time.monotonic()
        if status:
            if getattr(status, "input_overflow", False):
                self.counters.input_overflows += 1
            else:
                self.counters.other_status_flags += 1
        start = self.next_frame
        self.next_frame = start + frames
        self.last_arrival = now
        self.counters.blocks += 1
        try:
            self.queue.put_nowait(Block(start, indata.copy(), now))
        except queue.Full:
            self.counters.dropped_blocks += 1
            self.counters.dropped_frames += frames
        took = time.monotonic() - now
        if self.max_callback_s is None or took > self.max_callback_s:
            self.max_callback_s = took

    def on_finished(self) -> None:
        self.finished = True


# ---------------------------------------------------------------- devices


@dataclass(frozen=True)
class InputDevice:
    index: int
    name: str
    hostapi: str
    channels: int
    default_rate: float
    is_default: bool

    def to_json(self) -> dict:
        return {"index": self.index, "name": self.name, "hostapi": self.hostapi, "channels": self.channels,
                "default_samplerate": self.default_rate, "default": self.is_default}


def _sounddevice():
    try:
        import sounddevice
    except OSError as e:  # the PortAudio shared library is missing
        raise AudioDeviceError(f"cannot load PortAudio ({e}); install it (Debian/Ubuntu: apt install "
                               f"libportaudio2) or analyse a file with `realtime-ser listen --replay FILE`") from None
    return sounddevice


def list_input_devices() -> list[InputDevice]:
    """Every device with input channels; ``is_default`` marks PortAudio's default input."""
    sd = _sounddevice()
    try:
        devices = sd.query_devices()
        hostapis = sd.query_hostapis()
        default_in = sd.default.device[0]
    except sd.PortAudioError as e:
        raise AudioDeviceError(f"cannot query audio devices ({e}); check the audio system, "
                               "or use --replay FILE") from None
    if default_in is None or default_in < 0:
        try:
            default_in = sd.query_devices(kind="input")["index"]
        except (sd.PortAudioError, ValueError, KeyError, TypeError):
            default_in = -1
    out = []
    for d in devices:
        if d["max_input_channels"] > 0:
            out.append(InputDevice(index=int(d["index"]), name=str(d["name"]),
                                   hostapi=str(hostapis[d["hostapi"]]["name"]),
                                   channels=int(d["max_input_channels"]),
                                   default_rate=float(d["default_samplerate"]),
                                   is_default=int(d["index"]) == default_in))
    return out


NO_DEVICE_HINT = ("connect a microphone (or start the audio server), check `realtime-ser devices`, "
                  "or analyse a file with `realtime-ser listen --replay FILE`")


def resolve_device(spec: int | str | None, devices: list[InputDevice]) -> InputDevice:
    """``spec``: None (the default input), an index, or a case-insensitive name substring."""
    if not devices:
        raise AudioDeviceError(f"no audio input device found; {NO_DEVICE_HINT}")
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        for d in devices:
            if d.is_default:
                return d
        return devices[0]
    if isinstance(spec, int) or spec.strip().isdigit():
        idx = int(spec)
        for d in devices:
            if d.index == idx:
                return d
        raise AudioDeviceError(f"device {idx} is not an input device; pick an index or a name from "
                               f"`realtime-ser devices`")
    needle = spec.strip().lower()
    exact = [d for d in devices if d.name.lower() == needle]
    if len(exact) == 1:
        return exact[0]
    matches = [d for d in devices if needle in d.name.lower()]
    if not matches:
        raise AudioDeviceError(f"no input device name contains {spec!r}; pick one from `realtime-ser devices`")
    if len(matches) > 1:
        names = "; ".join(f"{d.index}: {d.name}" for d in matches)
        raise ConfigError(f"--device {spec!r} matches {len(matches)} input devices ({names}); give the index "
                          f"or a longer part of the name")
    return matches[0]


def same_device(previous: InputDevice, devices: list[InputDevice]) -> InputDevice | None:
    """The device called ``previous.name`` again (on the same host API when there are several)."""
    named = [d for d in devices if d.name == previous.name]
    same_api = [d for d in named if d.hostapi == previous.hostapi]
    candidates = same_api or named
    return candidates[0] if candidates else None


def stall_timeout(block_frames: int | None, rate: int) -> float:
    """No audio for this long from a running stream: a stall (a few blocks, at least 1 s)."""
    block_s = (block_frames or 0) / rate if rate else 0.0
    return max(STALL_TIMEOUT_S, STALL_BLOCKS * block_s)


def default_block_frames(rate: int) -> int:
    return max(1, int(round(rate * BLOCK_S)))


class MicSource:
    """Live capture from a sounddevice ``InputStream`` at the device's own rate.

    ``open()`` resolves the device and checks the settings; ``start(q)`` starts PortAudio
    calling ``CallbackCapture.callback``; ``check()`` raises ``AudioDeviceError`` when the
    device stops delivering audio; ``stop()`` closes the stream.
    """

    live = True

    def __init__(self, device: int | str | None = None, *, block_frames: int | None = None) -> None:
        if block_frames is not None and block_frames <= 0:
            raise ConfigError(f"--block-size must be a positive number of frames, got {block_frames}")
        self.device_spec = device
        self.block_frames = block_frames
        self.sample_rate = 0
        self.channels = 0
        self.name = "microphone"
        self.capture: CallbackCapture | None = None
        self._device: InputDevice | None = None
        self._stream: Any = None  # a sounddevice.InputStream (sounddevice has no type stubs)
        self._started_at = 0.0
        self._idle_counters = CaptureCounters()

    @property
    def counters(self) -> CaptureCounters:
        return self.capture.counters if self.capture is not None else self._idle_counters

    def open(self) -> None:
        sd = _sounddevice()
        dev = resolve_device(self.device_spec, list_input_devices())
        rate = int(round(dev.default_rate))
        if not MIN_RATE <= rate <= MAX_RATE:
            raise AudioDeviceError(f"input device {dev.name!r} runs at {rate} Hz; supported are {MIN_RATE}-{MAX_RATE} "
                                   f"Hz: pick another with --device (see `realtime-ser devices`)")
        channels = min(dev.channels, MAX_CAPTURE_CHANNELS)
        try:
            sd.check_input_settings(device=dev.index, channels=channels, samplerate=rate, dtype="float32")
        except (sd.PortAudioError, ValueError) as e:
            raise AudioDeviceError(f"input device {dev.index} ({dev.name!r}) refuses {rate} Hz, {channels} channel(s) "
                                   f"({e}); pick another with --device (see `realtime-ser devices`) or use "
                                   f"--replay FILE") from None
        self._device = dev
        self.sample_rate = rate
        self.channels = channels
        self.name = f"{dev.index}: {dev.name}"
        if self.block_frames is None:
            self.block_frames = default_block_frames(rate)

    def start(self, q: queue.Queue) -> None:
        assert self._device is not None, "open() first"
        self._start_stream(q, CallbackCapture(q))

    def _start_stream(self, q: queue.Queue, capture: CallbackCapture) -> None:
        sd = _sounddevice()
        self.capture = capture
        assert self._device is not None, "open() first"
        try:
            self._stream = sd.InputStream(device=self._device.index, samplerate=self.sample_rate,
                                          channels=self.channels, dtype="float32", blocksize=self.block_frames,
                                          callback=capture.callback, finished_callback=capture.on_finished)
            self._stream.start()
        except (sd.PortAudioError, ValueError) as e:
            raise AudioDeviceError(f"cannot open input device {self.name!r} at {self.sample_rate} Hz ({e}); pick "
                                   f"another with --device (see `realtime-ser devices`) or use --replay FILE") from None
        self._started_at = time.monotonic()

    @property
    def stall_timeout_s(self) -> float:
        """Silence from the device longer than this means it is gone (a few blocks, at least 1 s)."""
        return stall_timeout(self.block_frames, self.sample_rate)

    @property
    def last_arrival(self) -> float | None:
        """``time.monotonic()`` of the last block the device delivered (None before the first)."""
        return self.capture.last_arrival if self.capture is not None else None

    def check(self, since: float | None = None) -> None:
        """Raise ``DeviceLost`` if the device has stopped delivering audio.

        ``since``: the caller has been watching, without being held up itself, from this
        ``time.monotonic()`` on; silence is measured from it at the earliest, so that a stall
        of the whole process (SIGSTOP, Ctrl-Z, a starved machine), during which the audio
        callback could not run either, is not taken for a lost device.
        """
        cap = self.capture
        if cap is None or self._stream is None:
            return
        now = time.monotonic()
        if cap.finished or not self._stream.active:
            raise DeviceLost(f"input device {self.name!r} stopped (unplugged, or the audio server went away); "
                             f"reconnect it and check `realtime-ser devices`")
        heard = cap.last_arrival if cap.last_arrival is not None else self._started_at
        silent_s = now - max(heard, since if since is not None else heard)
        if cap.last_arrival is None:
            if silent_s > STARTUP_TIMEOUT_S:
                raise DeviceLost(f"input device {self.name!r} delivered no audio in {STARTUP_TIMEOUT_S:g} s; "
                                 f"pick another with --device (see `realtime-ser devices`)")
        elif silent_s > self.stall_timeout_s:
            raise DeviceLost(f"input device {self.name!r} stopped delivering audio for {self.stall_timeout_s:g} s "
                             f"(unplugged, or the audio server went away); reconnect it and check "
                             f"`realtime-ser devices`")

    def reopen(self, q: queue.Queue) -> bool:
        """Close the stream, look the device up again by its name (indices change when devices come
        and go; PortAudio is re-initialised to see them) and start it at the same rate and channels,
        continuing the frame index and counters. False when it is not there (yet)."""
        sd = _sounddevice()
        assert self._device is not None, "open() first"
        old = self.capture
        self.stop()
        try:
            sd._terminate()  # PortAudio lists devices only when it initialises
            sd._initialize()
            devices = list_input_devices()
        except (sd.PortAudioError, AudioDeviceError) as e:
            log.debug("re-scanning audio devices: %s", e)
            return False
        dev = same_device(self._device, devices)
        if dev is None:
            return False
        try:
            sd.check_input_settings(device=dev.index, channels=self.channels, samplerate=self.sample_rate,
                                    dtype="float32")
            self._device = dev
            self.name = f"{dev.index}: {dev.name}"
            self._start_stream(q, CallbackCapture(q, counters=old.counters if old is not None else None,
                                                  next_frame=old.next_frame if old is not None else 0))
        except (sd.PortAudioError, ValueError, AudioDeviceError) as e:
            log.debug("re-opening %r: %s", dev.name, e)
            self.stop()
            return False
        return True

    def stop(self) -> None:
        stream, self._stream = self._stream, None
        if stream is None:
            return
        sd = _sounddevice()
        try:
            stream.abort(ignore_errors=True)
            stream.close(ignore_errors=True)
        except sd.PortAudioError as e:  # a device that vanished may refuse even to close
            log.debug("closing the input stream: %s", e)


# ---------------------------------------------------------------- files

PACES = ("realtime", "fast")


def display_path(path: str | os.PathLike) -> str:
    """``path`` as it can be shown and written as JSON: a name whose bytes are not UTF-8 (decoded by
    Python with surrogate escapes) gets its odd bytes as ``\\xNN`` instead of lone surrogates."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


_FILE_KINDS = ((stat.S_ISFIFO, "a FIFO or pipe"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
_OPEN_HINTS = {
    errno.ENOENT: "no such file",
    errno.EACCES: "permission denied; make the file readable (chmod +r)",
    errno.EPERM: "permission denied; make the file readable (chmod +r)",
    errno.ENAMETOOLONG: "file name too long (a name over 255 bytes, or a path over the system's limit)",
    errno.ENOTDIR: "a part of the path is not a directory",
    errno.ELOOP: "too many levels of symbolic links",
}


STDIN_NAME = "-"
"""``--replay -`` / ``predict -``: the audio comes on standard input (a pipe or a redirected file)."""
STDIN_SHOWN = "<stdin>"
PIPE_FORMATS_HINT = "WAV or OGG (FLAC and MP3 need a file: their decoders seek)"


def _open_stdin():
    """Standard input as a sound file: a redirected file (any format) or a pipe (WAV or OGG)."""
    import soundfile as sf

    try:
        fd = os.dup(0)
        piped = stat.S_ISFIFO(os.fstat(fd).st_mode)
    except OSError as e:
        raise InputAudioError(f"{STDIN_SHOWN}: cannot read standard input ({e.strerror or e})") from None
    try:
        with _quiet_c_stderr():
            return sf.SoundFile(fd, closefd=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        log.debug("libsndfile on stdin: %s", e)
        expected = PIPE_FORMATS_HINT if piped else FILE_FORMATS_HINT
        raise InputAudioError(f"{STDIN_SHOWN} is not audio libsndfile can read from "
                              f"{'a pipe' if piped else 'there'}; expected {expected}") from None


def _open_soundfile(path: str | Path, shown: str | None = None) -> Any:
    """``path`` opened with libsndfile, or an ``InputAudioError`` that names the true reason.

    The file is opened here (``os.open``), so the system's reason is the one reported (no such file,
    permission, a name too long...), a name with any bytes works (libsndfile gets the descriptor, not
    the name, whatever its encoding or length), and a FIFO, pipe or device is refused as what it is
    before anything waits on it."""
    import soundfile as sf

    if os.fspath(path) == STDIN_NAME:
        return _open_stdin()
    shown = shown if shown is not None else display_path(path)
    if not os.access(path, os.R_OK) and os.path.lexists(path):
        raise InputAudioError(f"{shown}: {_OPEN_HINTS[errno.EACCES]}")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        if e.errno == errno.ENOENT:
            raise InputAudioError(f"{shown}: no such file; give the path of a {FILE_FORMATS_HINT} file") from None
        if e.errno == errno.EISDIR:
            raise InputAudioError(f"{shown} is a directory; give the path of a {FILE_FORMATS_HINT} file") from None
        reason = _OPEN_HINTS.get(e.errno if e.errno is not None else -1, f"cannot open ({e.strerror or e})")
        raise InputAudioError(f"{shown}: {reason}") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise InputAudioError(f"{shown} is a directory; give the path of a {FILE_FORMATS_HINT} file")
        for is_kind, kind in _FILE_KINDS:
            if is_kind(info.st_mode):
                raise InputAudioError(f"{shown} is not a regular file ({kind}); give the path of a "
                                      f"{FILE_FORMATS_HINT} file, or pipe WAV or OGG into `--replay -`")
        if info.st_size == 0:
            raise InputAudioError(f"{shown} is empty (0 bytes); expected a {FILE_FORMATS_HINT} file")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    try:
        with _quiet_c_stderr():
            f = sf.SoundFile(fd, closefd=True)  # libsndfile owns the descriptor now, and closes it on failure
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        # libsndfile's own text is misleading here (for unknown content it may say the file does
        # not exist, after its last probe, mpg123, failed); our checks above already passed.
        log.debug("libsndfile on %s: %s", shown, e)
        raise InputAudioError(f"{shown} is not an audio file libsndfile can read (unknown or damaged format); "
                              f"expected {FILE_FORMATS_HINT}") from None
    except OSError as e:
        raise InputAudioError(f"{shown}: cannot read ({e.strerror or e})") from None
    return f


@contextlib.contextmanager
def _quiet_c_stderr() -> Iterator[None]:
    """Silence C-level writes to fd 2 for a moment: libsndfile's mpg123 probe prints warnings for
    content that is not MP3, which would break the one-line error contract. Only the opening of a
    file is wrapped (milliseconds, before any stream thread writes to stderr)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class FileSource:
    """A file read in blocks (never whole): bounded memory whatever its length.

    ``pace="fast"``: blocks are put with a blocking put, as fast as the worker takes
    them; nothing is lost. ``pace="realtime"``: blocks are released on the wall clock
    and go through the same ``CallbackCapture`` as a microphone (a full queue drops and
    counts), so a realtime replay behaves exactly like live capture.

    ``block_frames`` is the block of the pace's contract (queue capacity, staleness);
    ``read_frames`` is what one read returns: the same, except in a fast replay without
    an explicit block size, which reads ``FAST_READ_S`` at a time (events do not depend
    on the block size; per-read costs do). A read error in a long read is retried in
    ``block_frames`` reads, so the audio kept before a fault is the same either way.
    """

    def __init__(self, path: str | Path, *, pace: str = "fast", block_frames: int | None = None) -> None:
        if pace not in PACES:
            raise ConfigError(f"--pace must be one of {', '.join(PACES)}, got {pace!r}")
        if block_frames is not None and block_frames <= 0:
            raise ConfigError(f"--block-size must be a positive number of frames, got {block_frames}")
        if not os.fspath(path):
            raise InputAudioError(f"the file name is empty (''); give the path of a {FILE_FORMATS_HINT} file")
        self.path = Path(path)  # "-": standard input
        self.pace = pace
        self.live = pace == "realtime"
        self.block_frames = block_frames
        self.read_frames = block_frames
        self.sample_rate = 0
        self.channels = 0
        self.frames = 0
        self.name = STDIN_SHOWN if os.fspath(path) == STDIN_NAME else display_path(self.path)
        self.capture: CallbackCapture | None = None
        self.counters = CaptureCounters()
        self._file: Any = None  # a soundfile.SoundFile (soundfile has no type stubs)

    def open(self) -> None:
        f = _open_soundfile(STDIN_NAME if self.name == STDIN_SHOWN else self.path, self.name)
        try:
            rate = check_rate(f.samplerate, self.name)
            if f.channels < 1:
                raise InputAudioError(f"{self.name} has no audio channels")
            if f.frames == 0:
                raise InputAudioError(f"{self.name} holds no audio samples (a header only); expected a "
                                      f"{FILE_FORMATS_HINT} file with audio")
        except InputAudioError:
            f.close()
            raise
        self._file = f
        self.sample_rate = rate
        self.channels = f.channels
        self.frames = f.frames
        if self.block_frames is None:
            self.block_frames = default_block_frames(rate)
            self.read_frames = self.block_frames if self.live else max(self.block_frames,
                                                                       int(round(FAST_READ_S * rate)))
        else:
            self.read_frames = self.block_frames

    def blocks(self) -> Iterator[np.ndarray]:
        """``(frames, channels)`` float32 blocks of ``read_frames`` (the last may be shorter)."""
        import soundfile as sf

        if self._file is None:
            if self.name == STDIN_SHOWN and self.sample_rate:
                return  # standard input was opened and closed already (stopped): it cannot be read again
            self.open()
        f = self._file
        done = 0
        size, block_frames = self.read_frames, self.block_frames
        assert size is not None and block_frames is not None  # open() chose them
        while True:
            try:
                data = f.read(size, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError, OSError) as e:
                if size > block_frames and self._rewind(done):
                    size = block_frames  # keep every block that reads before the fault
                    continue
                raise InputAudioError(f"{self.name}: read failed after {done / self.sample_rate:.2f} s of audio "
                                      f"({str(e).strip() or type(e).__name__}); "
                                      "the file is damaged or truncated") from None
            if len(data) == 0:
                break
            done += len(data)
            yield data
        if done == 0:
            raise InputAudioError(f"{self.name} holds no readable audio samples; the file is damaged or truncated")

    def _rewind(self, frame: int) -> bool:
        """Seek back to ``frame`` after a failed read; False when even that fails."""
        import soundfile as sf

        try:
            self._file.seek(frame)
        except (sf.LibsndfileError, RuntimeError, OSError) as e:
            log.debug("seek to frame %d of %s after a read error: %s", frame, self.path, e)
            return False
        return True

    def run(self, q: queue.Queue, stop: threading.Event) -> None:
        """Put every block into ``q`` (paced or fast), then ``END``; a failure becomes a ``SourceFailure``."""
        try:
            if self.pace == "realtime":
                self._run_realtime(q, stop)
            else:
                self._run_fast(q, stop)
            item: object = END
        except SerError as e:
            item = SourceFailure(e)
        finally:
            self.close()
        if item is END and stop.is_set():
            return  # stopped early: this is not the end of the input
        _put_blocking(q, item, stop)

    def _run_fast(self, q: queue.Queue, stop: threading.Event) -> None:
        start = 0
        for data in self.blocks():
            if not _put_blocking(q, Block(start, data, time.monotonic()), stop):
                return
            start += len(data)
            self.counters.blocks += 1

    def _run_realtime(self, q: queue.Queue, stop: threading.Event) -> None:
        self.capture = cap = CallbackCapture(q)
        self.counters = cap.counters
        t0 = time.monotonic()
        for data in self.blocks():
            due = t0 + (cap.next_frame + len(data)) / self.sample_rate  # its last sample has been "recorded"
            if stop.wait(max(0.0, due - time.monotonic())):
                return
            cap.callback(data, len(data), None, None)

    @property
    def stall_timeout_s(self) -> float:
        """A realtime replay's blocks arriving this much apart mean the process stalled (as for a mic)."""
        return stall_timeout(self.block_frames, self.sample_rate)

    def check(self, since: float | None = None) -> None:
        """A file cannot vanish mid-stream in a way worth polling: read errors arrive as failures."""

    def stop(self) -> None:
        """The pipeline's stop event ends ``run``; nothing to do here."""

    def close(self) -> None:
        f, self._file = self._file, None
        if f is not None:
            f.close()


def _put_blocking(q: queue.Queue, item: object, stop: threading.Event) -> bool:
    """Put, waiting for room but giving up when ``stop`` is set; True when the item went in."""
    while True:
        try:
            q.put(item, timeout=PUT_POLL_S)
            return True
        except queue.Full:
            if stop.is_set():
                return False
