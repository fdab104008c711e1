"""The only module with threads, queues, the stop event and the runtime counters.

::

    source (PortAudio callback, or a file feeder thread at realtime pace)
        -> capture queue (bounded; a live source drops and counts when it is full)
    worker thread: drain the queue -> StreamProcessor.ingest (convert, window)
        -> skip stale windows (live only) -> StreamProcessor.process (VAD, features,
           normaliser, model, smoothing) -> event queue
    main thread: Pipeline.events() yields the events in order, for the sinks.

A file replayed at ``fast`` pace has nothing to wait for, so it starts no thread:
``events()`` reads the file, converts, windows and processes in the caller's thread
(the same batch code as the worker's), one read block at a time. With one core, the
threads and queues only cost GIL and context switches (each block and each event
crossed two threads), and their order is the file's order anyway.

**Overload.** In a live stream (microphone, or a file replayed at ``realtime`` pace)
the worker first drains everything queued, then processes only windows that are
fresh: a window is *stale*, skipped and counted in ``skipped_windows``, when more than
one hop (plus one capture block) of newer audio has already arrived. So latency stays
around one inference plus one hop, however slow the model. The capture queue holds
``queue_s`` seconds of audio; beyond that the source drops whole blocks (counted in
``dropped_blocks``), which the worker replaces by silence to keep the audio clock. A
``fast`` replay skips nothing and drops nothing (the file is read only when the
previous block's windows are done).

**Stop and errors.** ``stop()`` (from a signal handler too: it only sets a flag)
makes the worker finish its current window and end the stream with an ``end`` event.
An error in the source or the worker ends the stream the same way; ``events()``
yields every event produced before it, then raises it in the main thread.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import SAMPLE_RATE
from .audio.sources import END, Block, DeviceLost, FileSource, MicSource, SourceFailure, stall_timeout
from .core import ModelLike, Pending, StreamConfig, StreamProcessor
from .errors import AudioDeviceError, ConfigError, SerError
from .events import CALLBACK_MS_DECIMALS, EndEvent, StatusEvent, t_round

if TYPE_CHECKING:  # for annotations only (the outputs load lazily)
    from .sinks.base import Output

log = logging.getLogger(__name__)

DEFAULT_QUEUE_S = 5.0  # capture queue capacity, in seconds of audio
DEFAULT_STATUS_EVERY_S = 5.0
MIN_QUEUE_BLOCKS = 4
EVENT_QUEUE_SIZE = 1024
POLL_S = 0.1  # how often waiting threads re-check the stop flag / the device
JOIN_TIMEOUT_S = 5.0
MS_PER_S = 1000.0
POLL_LATE_S = 0.5  # a poll this much later than its timeout: the process itself was held up (SIGSTOP...)
REOPEN_FIRST_DELAY_S = 0.1  # a lost device is looked for again after this, then twice as long each time...
REOPEN_MAX_DELAY_S = 0.5  # ...up to this (predictions must be back within 2 s of the device)
WAITING_REPORT_S = 5.0  # a "waiting" status event this often (wall clock) while the device is gone
LOST_AUDIO_MIN_S = 0.25  # after a stall, the audio clock this much further behind the wall clock: audio was lost
LAG_SETTLE_S = 1.0  # the lag is settled when it moved less than LAG_STEADY_S over this much wall time
LAG_STEADY_S = 0.05  # (a burst of audio the driver kept makes it fall fast)
LAG_FLOOR_WINDOW_S = 10.0  # the lag's baseline: its minimum over the last 10 to 20 s (clocks drift apart)


@dataclass(frozen=True)
class PipelineConfig:
    """Runtime settings beyond the stream's framing (CLI: ``--status-every``, ``--duration``)."""

    stream: StreamConfig = field(default_factory=StreamConfig)
    queue_s: float = DEFAULT_QUEUE_S
    status_every_s: float = DEFAULT_STATUS_EVERY_S  # 0: no status events
    duration_s: float | None = None  # stop after this much audio
    device_timeout_s: float | None = None  # a lost device: give up after this long (None: wait until stopped)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.queue_s) and self.queue_s > 0):
            raise ConfigError(f"queue length must be a positive number of seconds, got {self.queue_s}")
        if not (math.isfinite(self.status_every_s) and self.status_every_s >= 0):
            raise ConfigError(f"--status-every must be >= 0 seconds (0 = never), got {self.status_every_s}")
        if self.duration_s is not None and not (math.isfinite(self.duration_s) and self.duration_s > 0):
            raise ConfigError(f"--duration must be a positive number of seconds, got {self.duration_s}")
        timeout_s = self.device_timeout_s
        if timeout_s is not None and not (timeout_s >= 0 and not math.isnan(timeout_s)):
            raise ConfigError(f"--device-timeout must be >= 0 seconds (0 = give up at once), got {timeout_s}")


class _Lag:
    """How far a live source's audio runs behind the wall clock: a block's arrival minus the wall time
    its last frame would have if the frames had come at the nominal rate since the start. Its minimum
    over the last 10-20 s is the baseline; after a stall, a lag still above the baseline once it has
    settled is audio the driver lost (an overrun), which goes into the audio clock as silence."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._previous: float | None = None
        self._current: float | None = None
        self._bucket_end = -math.inf

    def add(self, now: float, lag: float) -> None:
        if now >= self._bucket_end:
            self._previous, self._current, self._bucket_end = self._current, lag, now + LAG_FLOOR_WINDOW_S
        else:  # a bucket is open: _current was set when it opened
            current = self._current
            self._current = lag if current is None else min(current, lag)

    @property
    def floor(self) -> float | None:
        known = [v for v in (self._previous, self._current) if v is not None]
        return min(known) if known else None


@dataclass
class _StallWatch:
    """A stall being watched until the lag settles: the baseline before it, the last checkpoint."""

    floor: float | None
    checkpoint_at: float
    checkpoint_lag: float


@dataclass
class _Outage:
    """A lost device being waited for: since when (monotonic) there has been no audio."""

    since: float
    next_report: float


class _Done:
    def __init__(self, error: BaseException | None) -> None:
        self.error = error


Source = MicSource | FileSource


class Pipeline:
    """Runs one source through the model. Use ``with Pipeline(...) as p: for ev in p.events(): ...``."""

    def __init__(self, source: Source, model: ModelLike, config: PipelineConfig | None = None) -> None:
        self.source = source
        self.model = model
        self.config = config if config is not None else PipelineConfig()
        self.processor: StreamProcessor | None = None
        self.audio_queue: queue.Queue | None = None
        self._events: queue.Queue = queue.Queue(maxsize=EVENT_QUEUE_SIZE)
        self._stop = threading.Event()
        self._stop_reason: str | None = None  # set by stop(), possibly from a signal handler
        self._abandoned = False  # the consumer went away: stop waiting for room in the event queue
        self._threads: list[threading.Thread] = []
        self._started = False
        self._inline = False  # a fast file replay: no threads, processed in events()
        self._queue_capacity = 0
        self._error: BaseException | None = None  # the stream's error, once it has ended
        self._next_status_s = self.config.status_every_s
        self._outage: _Outage | None = None  # the device is lost and being re-opened
        self._frame_offset = 0  # source frames of gaps inserted before the current capture's frames
        self._lag = _Lag()
        self._stall: _StallWatch | None = None

    # ------------------------------------------------------------ control

    def start(self) -> None:
        """Open the source and start the threads; ``SerError`` here means nothing started."""
        if self._started:
            return
        src = self.source
        src.open()
        try:
            self.processor = StreamProcessor(self.model, src.sample_rate, self.config.stream, live=src.live)
            block_frames = src.block_frames
            assert block_frames is not None  # open() chose it
            capacity = max(MIN_QUEUE_BLOCKS, math.ceil(self.config.queue_s * src.sample_rate / block_frames))
            self._queue_capacity = capacity
            if isinstance(src, FileSource) and not src.live:
                self._inline = True
            else:
                self.audio_queue = queue.Queue(maxsize=capacity)
                self._threads.append(threading.Thread(target=self._work, name="ser-worker", daemon=True))
                if isinstance(src, FileSource):
                    self._threads.append(threading.Thread(target=src.run, args=(self.audio_queue, self._stop),
                                                          name="ser-file", daemon=True))
                else:
                    src.start(self.audio_queue)
        except BaseException:
            self._threads.clear()
            src.stop()
            if isinstance(src, FileSource):
                src.close()
            raise
        self._started = True
        for t in self._threads:
            t.start()

    def stop(self, reason: str = "stopped") -> None:
        """Ask the stream to end. Safe to call from a signal handler (it only sets flags)."""
        if self._stop_reason is None:
            self._stop_reason = reason

    def close(self) -> None:
        """Stop, wait for the threads, release the device."""
        self.stop()
        self._abandoned = True
        self._stop.set()
        for t in self._threads:
            t.join(JOIN_TIMEOUT_S)
        self.source.stop()
        if self._inline and isinstance(self.source, FileSource):
            self.source.close()

    def __enter__(self) -> Pipeline:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ consumer (main thread)

    def events(self) -> Generator[dict, None, None]:
        """Every event as a JSON-ready dict, in order; raises the stream's error after the last one."""
        self.start()
        if self._inline:
            yield from self._inline_events()
            return
        error: BaseException | None = None
        try:
            while True:
                if self._stop_reason is not None and not self._stop.is_set():
                    self._stop.set()
                try:
                    item = self._events.get(timeout=POLL_S)
                except queue.Empty:
                    continue
                if isinstance(item, _Done):
                    error = item.error
                    break
                yield item
        finally:
            self.close()
        if error is not None:
            raise error

    # ------------------------------------------------------------ worker thread

    def _put(self, item: dict | _Done) -> None:
        """Blocking put into the event queue that gives up once the consumer has abandoned it."""
        while not self._abandoned:
            try:
                self._events.put(item, timeout=POLL_S)
                return
            except queue.Full:
                continue

    def _work(self) -> None:
        try:
            for event in self._produce(self._queued_batches()):
                self._put(event)
        finally:
            self._stop.set()
            self._put_done(self._error)

    def _put_done(self, error: BaseException | None) -> None:
        self._put(_Done(error))

    def _queued_batches(self) -> Iterator[list]:
        """Everything queued at once (stale windows are decided on the newest audio); polls the device."""
        q = self.audio_queue
        assert q is not None  # start() made it for a threaded stream
        watching_since: float | None = None  # start of the current run of empty polls, none of them late
        while not self._stopping():
            began = time.monotonic()
            try:
                items = [q.get(timeout=POLL_S)]
            except queue.Empty:
                now = time.monotonic()
                if watching_since is None or now - began > POLL_S + POLL_LATE_S:
                    watching_since = began if now - began <= POLL_S + POLL_LATE_S else now
                try:
                    self.source.check(since=watching_since)
                except DeviceLost as e:
                    watching_since = None
                    yield [e]
                continue
            watching_since = None
            while True:
                try:
                    items.append(q.get_nowait())
                except queue.Empty:
                    break
            yield items

    # ------------------------------------------------------------ fast file replay (no threads)

    def _file_batches(self) -> Iterator[list]:
        """The file's blocks one at a time, read on demand, then ``END`` (or a ``SourceFailure``)."""
        src = self.source
        assert isinstance(src, FileSource)
        start = 0
        blocks = src.blocks()
        while not self._stopping():
            try:
                data = next(blocks, None)
            except SerError as e:
                yield [SourceFailure(e)]
                return
            if data is None:
                yield [END]
                return
            yield [Block(start, data, time.monotonic())]
            start += len(data)
            src.counters.blocks += 1

    def _inline_events(self) -> Iterator[dict]:
        try:
            yield from self._produce(self._file_batches())
        finally:
            self.close()
        if self._error is not None:
            raise self._error

    # ------------------------------------------------------------ both: batches of source items -> events

    def _stopping(self) -> bool:
        """The stop event, set here too when ``stop()`` left its flag (it cannot set the event itself)."""
        if self._stop_reason is not None and not self._stop.is_set():
            self._stop.set()
        return self._stop.is_set()

    def _produce(self, batches: Iterator[list]) -> Iterator[dict]:
        """Yields the start event, every window's events, the end event; keeps the error in ``_error``."""
        proc = self.processor
        assert proc is not None  # start() made it
        src = self.source
        error: BaseException | None = None
        reason = "stopped"
        try:
            yield proc.start_event(src.name, src.sample_rate, src.channels).to_json()
            reason = yield from self._loop(batches)
        except SerError as e:
            error, reason = e, "error"
        except Exception as e:  # a bug: still end the stream cleanly, the main thread re-raises it
            log.debug("worker failed", exc_info=True)
            error, reason = e, "error"
        self._error = error
        t = proc.time_s if self.config.duration_s is None else min(proc.time_s, self.config.duration_s)
        yield EndEvent(t=t_round(t), reason=reason, windows=proc.windows, skipped_windows=proc.skipped,
                       dropped_blocks=src.counters.dropped_blocks,
                       error=str(error) if error is not None else None,
                       gap_s=t_round(proc.gap_samples / SAMPLE_RATE), gap_windows=proc.gap_windows).to_json()

    def _loop(self, batches: Iterator[list]) -> Generator[dict, None, str]:
        """Yields the events; returns the end reason; raises the source's or the model's error."""
        proc = self.processor
        assert proc is not None  # start() made it
        src = self.source
        limit = None if self.config.duration_s is None else int(round(self.config.duration_s * SAMPLE_RATE))
        last_arrival: float | None = None  # of the last block, across batches (a batch may hold only END)
        last_block: Block | None = None
        stall_s = stall_timeout(src.block_frames, src.sample_rate)
        for items in batches:
            pending: list[Pending] = []
            ended = False
            failure: BaseException | None = None
            notices: list[dict] = []
            for item in items:
                if item is END:
                    ended = True
                    break
                if isinstance(item, SourceFailure):
                    failure = item.error
                    break
                if isinstance(item, DeviceLost):
                    yield from self._run_windows(pending)
                    pending = []
                    yield from self._recover(item)
                    last_arrival = None
                    continue
                assert isinstance(item, Block)
                if self._outage is not None:  # the first audio of the re-opened device
                    yield from notices
                    yield from self._run_windows(pending)
                    notices, pending = [], []
                    yield from self._device_back(item)
                elif src.live and last_arrival is not None and item.arrival - last_arrival > stall_s:
                    # no audio for a while, yet the stream is alive: the process or the device stalled
                    notices.append(self._device_status("stalled", item.arrival - last_arrival).to_json())
                    self._stall = _StallWatch(self._lag.floor, item.arrival, self._block_lag(item))
                elif src.live and self._stall is None:
                    self._lag.add(item.arrival, self._block_lag(item))
                pending += proc.ingest(item.start + self._frame_offset, item.data, item.arrival)
                last_arrival = item.arrival
                last_block = item
            if self._stall is not None and last_block is not None:
                pending += self._settle_stall(last_block)
            if ended or failure is not None:
                pending += proc.finish(last_arrival if last_arrival is not None else time.monotonic())
            if limit is not None:
                pending = [p for p in pending if p.window.end <= limit]
            yield from notices
            yield from self._run_windows(pending)
            if failure is not None:
                raise failure
            if self._stopping():
                break
            if limit is not None and proc.samples_seen >= limit:
                return "duration"
            if ended:
                return "end_of_input"
        return self._stop_reason or "stopped"

    # ------------------------------------------------------------ a lost device

    def _recover(self, lost: DeviceLost) -> Iterator[dict]:
        """Report the loss, then re-open the device (by name, with backoff) until it is back, the
        stream is stopped or ``device_timeout_s`` has passed (then raise, exit 5)."""
        src = self.source
        assert isinstance(src, MicSource)  # only a device is lost
        timeout = self.config.device_timeout_s
        now = time.monotonic()
        if self._outage is None:  # not a re-opened device that failed again: a new loss
            heard = src.last_arrival
            self._outage = _Outage(since=heard if heard is not None else now, next_report=now)
            yield self._device_status("lost", now - self._outage.since).to_json()
        outage = self._outage
        if timeout == 0:
            raise lost
        delay = REOPEN_FIRST_DELAY_S
        while not self._stopping():
            assert self.audio_queue is not None  # a device stream is threaded
            if src.reopen(self.audio_queue):
                log.info("input device %s re-opened after %.1f s", src.name, time.monotonic() - outage.since)
                return  # "back" once its first audio arrives (_device_back)
            now = time.monotonic()
            gone = now - outage.since
            if timeout is not None and gone >= timeout:
                raise self._gave_up(gone, timeout)
            if now >= outage.next_report:
                outage.next_report = now + WAITING_REPORT_S
                yield self._device_status("waiting", gone).to_json()
            wait = delay if timeout is None else min(delay, max(0.0, timeout - gone))
            if self._stop.wait(wait):
                break
            delay = min(2 * delay, REOPEN_MAX_DELAY_S)
            gone = time.monotonic() - outage.since
            if timeout is not None and gone >= timeout:  # not one more attempt past the deadline
                raise self._gave_up(gone, timeout)

    def _gave_up(self, gone: float, timeout: float) -> AudioDeviceError:
        return AudioDeviceError(f"input device {self.source.name!r} has been gone for {gone:.1f} s "
                                f"(--device-timeout {timeout:g}); reconnect it and check `realtime-ser devices`")

    def _device_back(self, first: Block) -> Iterator[dict]:
        """The re-opened device's first block: the time it was gone goes into the audio clock as
        silence (from the wall clock: audio since the loss minus what this block holds); the gap's
        last window is analysed (the smoothing sees the silence), then the "back" status."""
        src = self.source
        proc = self.processor
        assert proc is not None  # start() made it
        outage, self._outage = self._outage, None
        assert outage is not None  # called only during an outage
        self._lag.reset()  # the new stream's frames continue the old ones: its lag starts afresh
        self._stall = None
        missing_s = first.arrival - outage.since - len(first.data) / src.sample_rate
        frames = max(0, int(round(missing_s * src.sample_rate)))
        channels = first.data.shape[1] if first.data.ndim == 2 else 1
        pending = proc.fill_gap(frames, channels, first.arrival)
        self._frame_offset += frames
        limit = self.config.duration_s
        if limit is not None:
            pending = [p for p in pending if p.window.end <= int(round(limit * SAMPLE_RATE))]
        yield from self._run_windows(pending)
        yield self._device_status("back", frames / src.sample_rate).to_json()

    def _block_lag(self, block: Block) -> float:
        return block.arrival - (block.start + len(block.data)) / self.source.sample_rate

    def _settle_stall(self, block: Block) -> list[Pending]:
        """Once the lag has settled after a stall: the audio lost meanwhile (if any) as silence."""
        watch = self._stall
        assert watch is not None  # called only while a stall is watched
        lag = self._block_lag(block)
        if block.arrival - watch.checkpoint_at < LAG_SETTLE_S:
            return []
        if abs(lag - watch.checkpoint_lag) > LAG_STEADY_S:  # still catching up: look again later
            watch.checkpoint_at, watch.checkpoint_lag = block.arrival, lag
            return []
        self._stall = None
        self._lag.reset()
        lost_s = 0.0 if watch.floor is None else lag - watch.floor
        if lost_s < LOST_AUDIO_MIN_S:
            return []
        frames = int(round(lost_s * self.source.sample_rate))
        log.info("%.2f s of audio lost in a stall (counted as silence)", lost_s)
        channels = block.data.shape[1] if block.data.ndim == 2 else 1
        proc = self.processor
        assert proc is not None  # start() made it
        pending = proc.fill_gap(frames, channels, block.arrival)
        self._frame_offset += frames
        return pending

    def _device_status(self, state: str, gap_s: float) -> StatusEvent:
        proc = self.processor
        assert proc is not None  # start() made it
        return self.status_event(proc.time_s, device_state=state, gap_s=t_round(max(0.0, gap_s)))

    def _run_windows(self, pending: list[Pending]) -> Iterator[dict]:
        proc = self.processor
        src = self.source
        assert proc is not None and src.block_frames is not None  # start() made them
        stale_after = proc.config.hop_samples + math.ceil(src.block_frames * SAMPLE_RATE / src.sample_rate)
        newest = proc.samples_seen
        for p in pending:
            if self._stopping():
                return
            if src.live and newest - p.window.end > stale_after:
                proc.skip(p)
            else:
                for ev in proc.process(p, dropped_blocks=src.counters.dropped_blocks):
                    yield ev.to_json()
            status = self._maybe_status(p.window.end)
            if status is not None:
                yield status.to_json()

    def _maybe_status(self, end_sample: int) -> StatusEvent | None:
        every = self.config.status_every_s
        if every <= 0 or end_sample / SAMPLE_RATE < self._next_status_s:
            return None
        t = end_sample / SAMPLE_RATE
        # the next multiple of ``every`` after t, computed (a loop of += every would spin for a tiny every)
        self._next_status_s = max(self._next_status_s + every, (math.floor(t / every) + 1) * every)
        return self.status_event(end_sample / SAMPLE_RATE)

    def status_event(self, t: float, device_state: str = "ok", gap_s: float | None = None) -> StatusEvent:
        """Counters at audio time ``t`` (the end of the window just handled)."""
        proc = self.processor
        assert proc is not None  # start() made it
        src = self.source
        c = src.counters
        cap = getattr(src, "capture", None)
        cb_max = None
        if cap is not None and cap.max_callback_s is not None:
            cb_max = round(cap.max_callback_s * MS_PER_S, CALLBACK_MS_DECIMALS)
        return StatusEvent(t=t_round(t), emotion=proc.emotion, windows=proc.windows,
                           skipped_windows=proc.skipped, dropped_blocks=c.dropped_blocks,
                           dropped_s=t_round(c.dropped_frames / src.sample_rate),
                           input_overflows=c.input_overflows, nonfinite_samples=proc.converter.nonfinite,
                           queue_depth=self.audio_queue.qsize() if self.audio_queue is not None else 0,
                           queue_capacity=self._queue_capacity,
                           callback_max_ms=cb_max, latency_ms=proc.last_latency_ms,
                           normalizer_warmup=proc.normalizer_warmup, model=self.model.name, device=src.name,
                           device_state=device_state, gap_s=gap_s, gap_windows=proc.gap_windows)



# ---------------------------------------------------------------- network outputs (issue 11)

OUTPUT_QUEUE_SIZE = 256  # events waiting for one output (two minutes of predictions at a 0.5 s hop)
OUTPUT_CLOSE_TIMEOUT_S = 2.0  # at the end: how long an output may take to send what is queued


class OutputThread:
    """One network output (``sinks.base.Output``) in its own thread, behind a bounded queue.

    ``offer`` never blocks: a full queue drops the event and counts it in ``dropped``, so a slow
    or absent receiver never delays the tracker. An output that fails is logged once and then
    ignored (its events are counted as dropped)."""

    def __init__(self, *, output: Output, capacity: int = OUTPUT_QUEUE_SIZE) -> None:
        from .sinks.base import CLOSED

        self.output = output
        self.dropped = 0
        self.failed: BaseException | None = None
        self._closed_marker = CLOSED
        self._queue: queue.Queue = queue.Queue(maxsize=capacity)
        self._closing = threading.Event()
        self._finished = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"ser-out-{output.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def offer(self, event: dict) -> None:
        if self._finished.is_set() or self._closing.is_set():
            self.dropped += 1
            return
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.dropped += 1
            return
        self.output.wake()

    def stats(self) -> dict:
        return {**self.output.stats(), "dropped": self.dropped}

    # the Inbox protocol, called from the output's thread
    def get(self, timeout: float) -> Any:
        try:
            return self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
        except queue.Empty:
            return self._closed_marker if self._closing.is_set() else None

    def close(self, timeout: float = OUTPUT_CLOSE_TIMEOUT_S) -> None:
        """Let the output send what is queued (up to ``timeout``), then leave it (a daemon thread)."""
        self._closing.set()
        self.output.wake()
        self._thread.join(timeout)

    def _run(self) -> None:
        try:
            self.output.run(self)
        except Exception as e:  # an output's bug or lost network must never stop the tracker
            self.failed = e
            log.warning("%s output stopped: %s", self.output.name, e)
            log.debug("%s output failed", self.output.name, exc_info=True)
        finally:
            self._finished.set()
