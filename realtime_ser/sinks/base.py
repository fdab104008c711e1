"""The contract of a network output (OSC, VTube Studio, the local WebSocket server).

An output runs in its own thread behind a bounded queue (``runner.OutputThread``: the only
module that starts threads): the main thread *offers* each event with ``put_nowait`` and never
waits; when the queue is full the event is dropped and counted, so a slow or absent receiver
never delays the tracker. The output's thread calls :meth:`Output.run` with an :class:`Inbox`.

The default :meth:`Output.run` is a plain loop: ``open()``, then each event to ``handle()``
and ``tick()`` every ``tick_s`` seconds of wall time (ramps, rate limits, keep-alives), then
``close()``. Outputs built on asyncio (websockets) override ``run`` and poll the inbox with
``get(0)`` from their event loop.

Everything sent is cast to plain Python types (:func:`plain`): python-osc and ``json`` reject
numpy scalars.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import numbers
import time
from typing import Any, Protocol

CLOSED = object()
"""Returned by :meth:`Inbox.get` once the stream has ended and the queue is drained."""

DEFAULT_TICK_S = 1.0 / 30
"""How often an output's loop wakes up without events (ramps are drawn at this rate)."""


class Inbox(Protocol):
    def get(self, timeout: float) -> Any:
        """The next event dict, ``None`` after ``timeout`` seconds without one, or ``CLOSED``."""


class Output:
    """Base of the outputs; subclasses override ``handle`` (and ``open``/``tick``/``close``/``run``)."""

    name = "output"
    tick_s = DEFAULT_TICK_S

    def __init__(self) -> None:
        self.sent = 0  # messages (or bundles) actually handed to the network
        self.errors = 0  # sends that failed (receiver down, network unreachable)

    def stats(self) -> dict:
        """Counters for status events (the queue's drops are added by the thread that runs it)."""
        return {"sent": self.sent, "errors": self.errors}

    def open(self) -> None:
        """Called once in the output's thread before the first event."""

    def handle(self, event: dict, now: float) -> None:
        """One event (the dicts written on stdout); ``now`` is ``time.monotonic()``."""

    def tick(self, now: float) -> None:
        """Called at least every ``tick_s`` seconds and after each event."""

    def close(self) -> None:
        """Called once in the output's thread after the last event."""

    def wake(self) -> None:
        """Called by the thread that offered an event (never blocks); the asyncio outputs' doorbell."""

    def run(self, inbox: Inbox) -> None:
        self.open()
        try:
            while True:
                item = inbox.get(self.tick_s)
                now = time.monotonic()
                if item is CLOSED:
                    break
                if item is not None:
                    self.handle(item, now)
                self.tick(now)
        finally:
            self.close()


class AsyncOutput(Output):
    """An output whose thread runs an asyncio loop: ``wake`` rings its doorbell from the offering thread
    (``call_soon_threadsafe``: one non-blocking write), so the loop sleeps until there is an event
    instead of polling the queue."""

    def __init__(self) -> None:
        super().__init__()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._doorbell: asyncio.Event | None = None
        self._rung = False  # a ring is on its way to the loop: the next offers need not ring again

    def run(self, inbox: Inbox) -> None:
        asyncio.run(self._start(inbox))

    async def _start(self, inbox: Inbox) -> None:
        self._doorbell = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        try:
            await self.main(inbox)
        finally:
            self._loop = None

    async def main(self, inbox: Inbox) -> None:
        raise NotImplementedError

    def wake(self) -> None:
        loop = self._loop
        if loop is None or self._rung:
            return
        self._rung = True
        with contextlib.suppress(RuntimeError):  # the loop has just closed
            loop.call_soon_threadsafe(self._ring)

    def _bell(self) -> asyncio.Event:
        if self._doorbell is None:
            raise RuntimeError("the sink's event loop is not running")
        return self._doorbell

    def _ring(self) -> None:
        self._rung = False
        self._bell().set()

    async def doorbell(self, timeout: float | None, *also: asyncio.Future) -> set:
        """Until an event is offered, ``timeout`` passes or one of ``also`` is done; returns the done ones."""
        bell = asyncio.ensure_future(self._bell().wait())
        done, _ = await asyncio.wait({bell, *also}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if not bell.done():
            bell.cancel()
        self._bell().clear()
        return done


def plain(value: Any) -> Any:
    """``value`` as a plain Python bool/int/float/str (numpy scalars included); non-finite -> 0.0."""
    if isinstance(value, (bool, str)) or value is None:
        return value
    if hasattr(value, "item") and not isinstance(value, (list, tuple, dict)):
        value = value.item()  # numpy scalar -> Python scalar
        if isinstance(value, bool):
            return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        value = float(value)
        return value if math.isfinite(value) else 0.0
    return value


def clamp(x: float, lo: float, hi: float) -> float:
    return lo if x < lo else hi if x > hi else x
