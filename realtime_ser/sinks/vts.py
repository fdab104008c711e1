"""``--vts``: a VTube Studio plugin over its public WebSocket API (issue 11).

Following https://github.com/DenchiSoft/VTubeStudio (API 1.0):

1. ``AuthenticationTokenRequest`` the first time: VTube Studio shows a prompt and the user clicks
   Allow once; the token is kept in the user's config directory (``vtube_studio.json``, mode 0600;
   platformdirs, or ``$REALTIME_SER_CONFIG_DIR``) and reused by ``AuthenticationRequest`` on every
   later connection. A token VTube Studio no longer accepts is replaced by a new request.
2. ``ParameterCreationRequest`` for one custom parameter per label (0..1, the smoothed probability)
   plus valence and arousal (-1..1), named ``<prefix><Label>`` (prefix ``RealtimeSER``, or the
   avatar map's ``[vts]``), for the user to map onto Live2D parameters.
3. ``InjectParameterDataRequest`` with every value on each new event and at least every
   ``INJECT_INTERVAL_S`` (VTube Studio drops a parameter not refreshed for a second).
4. Connection refused, closed or lost (VTube Studio not started, restarted): reconnect with an
   exponential backoff; events meanwhile only update the values to send. A user who denies access
   (``APIError`` 50) gets one clear line and the output stops; ``listen`` goes on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import WebSocketException

from ..avatar_map import SILENCE, AvatarMap
from .base import CLOSED, AsyncOutput, Inbox, clamp, plain

log = logging.getLogger(__name__)

API = {"apiName": "VTubeStudioPublicAPI", "apiVersion": "1.0"}
PLUGIN_NAME = "realtime-ser"
PLUGIN_DEVELOPER = "realtime-ser project"
ERROR_USER_DENIED = 50  # ErrorID.cs: UserRefusedAuth
INJECT_INTERVAL_S = 0.25  # well inside VTube Studio's one-second timeout
REPLY_POLL_S = 0.1  # while waiting for a reply (the user may take a while to click Allow), events still count
CONNECT_TIMEOUT_S = 3.0
BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 10.0
TOKEN_FILE = "vtube_studio.json"
CONFIG_DIR_ENV = "REALTIME_SER_CONFIG_DIR"
APP_NAME = "realtime-ser"
AFFECT_KEYS = ("Valence", "Arousal")
STATE_EVENTS = ("prediction", "change")
DENIED_LINE = ("VTube Studio: access was denied to the realtime-ser plugin; --vts is off for this run "
               "(run again and click Allow, or allow it under VTube Studio's plugin settings)")


def config_dir() -> Path:
    env = os.environ.get(CONFIG_DIR_ENV)
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False))


class Denied(Exception):
    """The user clicked Deny (or revoked the plugin)."""


class _Closing(Exception):
    """The stream ended while waiting for VTube Studio."""


class VTubeStudioOutput(AsyncOutput):
    name = "vts"

    def __init__(self, *, url: str, labels: Sequence[str], avatar_map: AvatarMap,
                 token_dir: Path | None = None) -> None:
        super().__init__()
        self.url = url
        self.labels = tuple(labels)
        self.params = {key: avatar_map.vts_parameter(key) for key in (*self.labels, *AFFECT_KEYS)}
        self.values = {name: 0.0 for name in self.params.values()}
        self.token_path = (token_dir if token_dir is not None else config_dir()) / TOKEN_FILE
        self.connected = False
        self.connections = 0
        self.denied = False
        self._request_id = 0
        self._dirty = True
        self._closed = False
        self._warned_down = False

    def stats(self) -> dict:
        return {**super().stats(), "connected": self.connected}

    # -------------------------------------------------------------- values
    def update(self, event: dict) -> None:
        if event.get("type") not in STATE_EVENTS:
            return
        probs = event.get("probabilities") or {}
        silent = event.get("emotion", SILENCE) == SILENCE
        for label in self.labels:
            p = 0.0 if silent else float(plain(probs.get(label, 0.0)) or 0.0)
            self.values[self.params[label]] = clamp(p, 0.0, 1.0)
        for key, field in zip(AFFECT_KEYS, ("valence", "arousal"), strict=False):
            self.values[self.params[key]] = clamp(float(plain(event.get(field, 0.0)) or 0.0), -1.0, 1.0)
        self._dirty = True

    def _drain(self, inbox: Inbox) -> None:
        """Fold every queued event into the values; raises ``_Closing`` at the end of the stream."""
        while True:
            item = inbox.get(0)
            if item is None:
                return
            if item is CLOSED:
                self._closed = True
                raise _Closing()
            self.update(item)

    # -------------------------------------------------------------- token
    def _load_token(self) -> str | None:
        try:
            data = json.loads(self.token_path.read_text(encoding="utf-8"))
            token = data.get("tokens", {}).get(self.url)
            return token if isinstance(token, str) and token else None
        except (OSError, ValueError, AttributeError):
            return None

    def _save_token(self, token: str | None) -> None:
        try:
            data = json.loads(self.token_path.read_text(encoding="utf-8"))
            tokens = data.get("tokens", {}) if isinstance(data, dict) else {}
        except (OSError, ValueError):
            tokens = {}
        if token is None:
            tokens.pop(self.url, None)
        else:
            tokens[self.url] = token
        try:
            self.token_path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.token_path.parent, prefix=".vts-", suffix=".json")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"plugin": PLUGIN_NAME, "tokens": tokens}, f, indent=1)
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.token_path)
        except OSError as e:
            log.warning("VTube Studio: cannot keep the token in %s (%s); you will be asked again next time",
                        self.token_path, e)

    # -------------------------------------------------------------- protocol
    async def _request(self, ws: ClientConnection, message_type: str, data: dict, inbox: Inbox) -> dict:
        """Send one request; its response (``data``), draining the inbox while waiting."""
        self._request_id += 1
        rid = f"ser-{self._request_id}"
        await ws.send(json.dumps({**API, "requestID": rid, "messageType": message_type, "data": data}))
        self.sent += 1
        while True:
            self._drain(inbox)
            try:
                text = await asyncio.wait_for(ws.recv(), REPLY_POLL_S)
            except asyncio.TimeoutError:
                continue
            msg = json.loads(text)
            if msg.get("requestID") != rid:
                self._check(msg)
                continue
            self._check(msg)
            return msg

    def _check(self, msg: dict) -> None:
        if msg.get("messageType") == "APIError":
            error = msg.get("data") or {}
            if error.get("errorID") == ERROR_USER_DENIED:
                raise Denied(error.get("message", ""))
            self.errors += 1
            log.debug("VTube Studio error %s: %s", error.get("errorID"), error.get("message"))

    async def _authenticate(self, ws: ClientConnection, inbox: Inbox) -> None:
        plugin = {"pluginName": PLUGIN_NAME, "pluginDeveloper": PLUGIN_DEVELOPER}
        token = self._load_token()
        if token is not None:
            msg = await self._request(ws, "AuthenticationRequest", {**plugin, "authenticationToken": token}, inbox)
            if (msg.get("data") or {}).get("authenticated") is True:
                return
            self._save_token(None)  # revoked or from another VTube Studio: ask again
        log.warning("VTube Studio: asking for access; click Allow in VTube Studio's prompt (once)")
        msg = await self._request(ws, "AuthenticationTokenRequest", plugin, inbox)
        token = (msg.get("data") or {}).get("authenticationToken")
        if msg.get("messageType") != "AuthenticationTokenResponse" or not token:
            raise ConnectionError(f"unexpected answer to the token request: {msg.get('messageType')}")
        self._save_token(token)
        msg = await self._request(ws, "AuthenticationRequest", {**plugin, "authenticationToken": token}, inbox)
        if (msg.get("data") or {}).get("authenticated") is not True:
            raise ConnectionError("VTube Studio did not accept its own new token")

    async def _create_parameters(self, ws: ClientConnection, inbox: Inbox) -> None:
        for key, name in self.params.items():
            lo = -1.0 if key in AFFECT_KEYS else 0.0
            what = f"realtime-ser: {key.lower()}" + ("" if key in AFFECT_KEYS else " (smoothed probability)")
            msg = await self._request(ws, "ParameterCreationRequest",
                                      {"parameterName": name, "explanation": what, "min": lo, "max": 1.0,
                                       "defaultValue": 0.0}, inbox)
            if msg.get("messageType") != "ParameterCreationResponse":
                log.warning("VTube Studio refused the parameter %s: %s", name, (msg.get("data") or {}).get("message"))

    async def _inject(self, ws: ClientConnection) -> None:
        self._request_id += 1
        values = [{"id": name, "value": float(v)} for name, v in self.values.items()]
        await ws.send(json.dumps({**API, "requestID": f"ser-{self._request_id}",
                                  "messageType": "InjectParameterDataRequest",
                                  "data": {"faceFound": False, "mode": "set", "parameterValues": values}}))
        self.sent += 1
        self._dirty = False

    async def _session(self, ws: ClientConnection, inbox: Inbox) -> None:
        await self._authenticate(ws, inbox)
        await self._create_parameters(ws, inbox)
        self.connected = True
        self._warned_down = False
        log.info("VTube Studio: connected to %s, %d parameters", self.url, len(self.params))
        loop = asyncio.get_running_loop()
        last = float("-inf")
        reader = asyncio.ensure_future(self._read(ws))
        try:
            while True:
                self._drain(inbox)
                now = loop.time()
                if self._dirty or now - last >= INJECT_INTERVAL_S:
                    await self._inject(ws)
                    last = now
                done = await self.doorbell(max(0.0, last + INJECT_INTERVAL_S - loop.time()), reader)
                if reader in done:
                    reader.result()  # Denied, ConnectionClosed...
                    raise ConnectionError("VTube Studio closed the connection")
        finally:
            reader.cancel()

    async def _read(self, ws: ClientConnection) -> None:
        """The replies to the injections (errors counted; a revoked access raises ``Denied``)."""
        async for text in ws:
            self._check(json.loads(text))

    # -------------------------------------------------------------- the output's thread
    async def main(self, inbox: Inbox) -> None:
        backoff = BACKOFF_MIN_S
        while not self._closed:
            try:
                async with websockets.connect(self.url, open_timeout=CONNECT_TIMEOUT_S, close_timeout=1,
                                              compression=None) as ws:
                    self.connections += 1
                    backoff = BACKOFF_MIN_S
                    await self._session(ws, inbox)
            except _Closing:
                return
            except Denied:
                self.denied = True
                self.connected = False
                log.error("%s", DENIED_LINE)
                self._ignore_rest(inbox)
                return
            except (OSError, asyncio.TimeoutError, WebSocketException, ConnectionError, ValueError) as e:
                self.connected = False
                if not self._warned_down:
                    log.warning("VTube Studio at %s: %s; retrying in the background (is its API enabled?)",
                                self.url, str(e) or type(e).__name__)
                    self._warned_down = True
                else:
                    log.debug("VTube Studio at %s: %s", self.url, e)
            try:
                await self._wait(inbox, backoff)
            except _Closing:
                return
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def _wait(self, inbox: Inbox, seconds: float) -> None:
        """The backoff: events meanwhile only update the values."""
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while loop.time() < end:
            self._drain(inbox)
            await self.doorbell(end - loop.time())
        self._drain(inbox)

    def _ignore_rest(self, inbox: Inbox) -> None:
        while inbox.get(1.0) is not CLOSED:
            pass
