"""``--serve``: a small local server (websockets): ``/events`` and the overlay page ``/`` (issue 11).

* ``/events``: a WebSocket; every event exactly as on stdout, one JSON text message each.
* ``/``: ``overlay.html`` (one self-contained page: no CDN, no external request; its
  Content-Security-Policy forbids any): the current emotion large, probability bars, a
  valence/arousal dot; ``/?overlay=1`` has a transparent background for an OBS browser source.

Several clients at once, each with its own bounded queue; a client that cannot keep up (its queue
is full) is disconnected and counted (``dropped_clients``), never waited for. Browsers may only
connect from this server's own page (the WebSocket Origin is checked), so another web site open
in the user's browser cannot read the stream. The listening socket is bound when the output is
made (a busy port is a one-line usage error); the server runs in the output's thread.
"""

from __future__ import annotations

import asyncio
import http
import logging
import socket
from importlib import resources

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.typing import Origin

from ..errors import ConfigError
from .base import CLOSED, AsyncOutput, Inbox
from .jsonl import _ENCODER as ENCODER

log = logging.getLogger(__name__)

CLIENT_QUEUE_SIZE = 64  # events waiting for one client before it is dropped as too slow
POLL_S = 0.01  # at the end: how often the clients' queues are looked at while they drain
IDLE_S = 1.0  # without events the loop sleeps until an event is offered, or this long
DRAIN_S = 1.0  # at the end: how long clients get to receive what is queued
CLOSE_TIMEOUT_S = 1.0  # at the end: how long a client gets to answer the close frame
EVENTS_PATH = "/events"
PAGE_PATHS = ("/", "/index.html")
CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; "
       "img-src data:; base-uri 'none'; form-action 'none'")


def overlay_page() -> bytes:
    return resources.files(__package__).joinpath("overlay.html").read_bytes()


def _url_host(host: str) -> str:
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


class ServeOutput(AsyncOutput):
    name = "serve"

    def __init__(self, *, host: str, port: int, client_queue: int = CLIENT_QUEUE_SIZE) -> None:
        super().__init__()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            self.sock = socket.create_server((host, port), family=family)
        except OSError as e:
            raise ConfigError(f"--serve {host}:{port}: cannot listen there ({e.strerror or e}); "
                              f"choose another port or address") from None
        self.host = host
        self.port = self.sock.getsockname()[1]
        base = f"{_url_host(host)}:{self.port}"
        self.url = f"http://{base}/"
        self.ws_url = f"ws://{base}{EVENTS_PATH}"
        # browsers send an Origin: only this server's own page may connect (None: non-browser clients)
        self.origins: list[Origin | None] = [None] + [Origin(f"http://{h}:{self.port}")
                                                      for h in {_url_host(host), "127.0.0.1", "localhost"}]
        self.client_queue = client_queue
        self.page = overlay_page()
        self.clients: dict[ServerConnection, asyncio.Queue] = {}
        self.connected = 0  # clients ever connected
        self.dropped_clients = 0

    def stats(self) -> dict:
        return {**super().stats(), "clients": len(self.clients), "dropped_clients": self.dropped_clients}

    # -------------------------------------------------------------- the server's thread
    async def main(self, inbox: Inbox) -> None:
        async with serve(self._client, sock=self.sock, process_request=self._http, origins=self.origins,
                         compression=None, close_timeout=CLOSE_TIMEOUT_S):
            while True:
                item = inbox.get(0)
                if item is CLOSED:
                    break
                if item is None:
                    await self.doorbell(IDLE_S)
                    continue
                self._broadcast(item)
                await asyncio.sleep(0)  # the clients' senders take their turn before the next event
            loop = asyncio.get_running_loop()
            deadline = loop.time() + DRAIN_S
            while any(not q.empty() for q in self.clients.values()) and loop.time() < deadline:
                await asyncio.sleep(POLL_S)
            for ws, q in list(self.clients.items()):
                if q.empty():
                    q.put_nowait(None)  # the end: its handler returns, the connection closes normally
                else:  # still behind after the drain time: not waited for
                    self._drop(ws)

    def _broadcast(self, event: dict) -> None:
        text = ENCODER.encode(event)
        for ws, q in list(self.clients.items()):
            try:
                q.put_nowait(text)
            except asyncio.QueueFull:
                self._drop(ws)

    def _drop(self, ws: ServerConnection) -> None:
        """A client that does not keep up: disconnected at once (it cannot even take a close frame)."""
        if self.clients.pop(ws, None) is None:
            return
        self.dropped_clients += 1
        log.info("--serve: dropped a client that could not keep up (%s)", getattr(ws, "remote_address", "?"))
        ws.transport.abort()

    async def _client(self, ws: ServerConnection) -> None:
        q: asyncio.Queue = asyncio.Queue(maxsize=self.client_queue)
        self.clients[ws] = q
        self.connected += 1
        try:
            while ws in self.clients:
                text = await q.get()
                if text is None:
                    break
                await ws.send(text)
                self.sent += 1
        except ConnectionClosed:
            pass
        finally:
            self.clients.pop(ws, None)

    def _http(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path == EVENTS_PATH:
            return None  # the WebSocket handshake goes on
        if path in PAGE_PATHS:
            return self._response(http.HTTPStatus.OK, self.page, "text/html; charset=utf-8")
        if path == "/favicon.ico":
            return self._response(http.HTTPStatus.NO_CONTENT, b"", "image/x-icon")
        return self._response(http.HTTPStatus.NOT_FOUND, b"not found: try / or /events\n", "text/plain")

    @staticmethod
    def _response(status: http.HTTPStatus, body: bytes, content_type: str) -> Response:
        headers = Headers([("Content-Type", content_type), ("Content-Length", str(len(body))),
                           ("Cache-Control", "no-store"), ("Content-Security-Policy", CSP),
                           ("X-Content-Type-Options", "nosniff")])
        return Response(status.value, status.phrase, headers, body)
