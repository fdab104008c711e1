"""``--vts`` against a small VTube Studio stand-in written here with websockets, answering the public
API's messages with the JSON shapes of its documentation (DenchiSoft/VTubeStudio README): the token
flow (Allow once, token reused on the next run), the user denying access (one line, listen goes on),
a VTube Studio restart (reconnect, same token) and injections at >= 1 Hz. No mocks of the library."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from websockets.asyncio.server import serve

from helpers import HIGH_F0, LOW_F0, voice, write_audio

TIMEOUT_S = 120
SR = 16_000
API = {"apiName": "VTubeStudioPublicAPI", "apiVersion": "1.0"}
NAME_RE = re.compile(r"^[A-Za-z0-9]{4,32}$")  # the API's rule for custom parameter names
VTS_TIMEOUT_S = 1.0  # VTube Studio drops a parameter not refreshed for this long
EXPECTED_PARAMS = {"RealtimeSERNeutral", "RealtimeSERHappy", "RealtimeSERSad", "RealtimeSERValence",
                   "RealtimeSERArousal"}


class FakeVTubeStudio:
    """The API subset a parameter plugin uses, in a thread with its own event loop."""

    def __init__(self, deny: bool = False) -> None:
        self.deny = deny
        self.tokens: set[str] = set()
        self.log: list[tuple[float, int, dict]] = []  # (time, connection number, request)
        self.connections = 0
        self.created: set[str] = set()
        self.port = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = None
        self.start()

    def _run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def start(self) -> None:
        async def go():
            self.server = await serve(self._handler, "127.0.0.1", self.port)
            self.port = self.server.sockets[0].getsockname()[1]
        self._run(go())

    def stop(self) -> None:
        async def go():
            self.server.close()
            await self.server.wait_closed()
        self._run(go())

    def shutdown(self) -> None:
        self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)

    @staticmethod
    def reply(req: dict, message_type: str, data: dict) -> str:
        return json.dumps({**API, "timestamp": int(time.time() * 1000), "requestID": req.get("requestID", ""),
                           "messageType": message_type, "data": data})

    def error(self, req: dict, error_id: int, message: str) -> str:
        return self.reply(req, "APIError", {"errorID": error_id, "message": message})

    async def _handler(self, ws) -> None:
        self.connections += 1
        conn = self.connections
        authenticated = False
        async for text in ws:
            req = json.loads(text)
            self.log.append((time.monotonic(), conn, req))
            kind, data = req.get("messageType"), req.get("data") or {}
            assert req["apiName"] == API["apiName"] and req["apiVersion"] == API["apiVersion"]
            if kind == "AuthenticationTokenRequest":
                assert 3 <= len(data["pluginName"]) <= 32 and 3 <= len(data["pluginDeveloper"]) <= 32
                if self.deny:
                    await ws.send(self.error(req, 50, "User has denied API access for your plugin."))
                    continue
                token = f"token-{len(self.tokens) + 1}"
                self.tokens.add(token)
                await ws.send(self.reply(req, "AuthenticationTokenResponse", {"authenticationToken": token}))
            elif kind == "AuthenticationRequest":
                authenticated = data.get("authenticationToken") in self.tokens
                await ws.send(self.reply(req, "AuthenticationResponse", {
                    "authenticated": authenticated,
                    "reason": "Token valid." if authenticated else "Token invalid."}))
            elif not authenticated:
                await ws.send(self.error(req, 8, "Request requires authentication."))
            elif kind == "ParameterCreationRequest":
                name = data["parameterName"]
                assert NAME_RE.match(name), name
                assert -1e6 <= data["min"] < data["max"] <= 1e6 and data["min"] <= data["defaultValue"] <= data["max"]
                self.created.add(name)
                await ws.send(self.reply(req, "ParameterCreationResponse", {"parameterName": name}))
            elif kind == "InjectParameterDataRequest":
                ids = {v["id"] for v in data["parameterValues"]}
                if not ids <= self.created:
                    await ws.send(self.error(req, 453, "Parameter not found."))
                    continue
                for v in data["parameterValues"]:
                    assert isinstance(v["value"], float) and -1e6 <= v["value"] <= 1e6
                await ws.send(self.reply(req, "InjectParameterDataResponse", {}))
            else:
                await ws.send(self.error(req, 2, "unknown request"))

    def requests(self, conn: int | None = None) -> list[str]:
        return [r["messageType"] for _, c, r in self.log if conn is None or c == conn]

    def injections(self, conn: int) -> list[tuple[float, dict]]:
        return [(t, r) for t, c, r in self.log if c == conn and r["messageType"] == "InjectParameterDataRequest"]


@pytest.fixture
def vts():
    server = FakeVTubeStudio()
    yield server
    server.shutdown()


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory) -> Path:
    x = np.concatenate([np.zeros(SR // 2, np.float32), voice(LOW_F0, 3.0), voice(HIGH_F0, 3.0, seed=1),
                        np.zeros(SR, np.float32)])
    return write_audio(tmp_path_factory.mktemp("vts") / "speech.wav", x)


def listen_cmd(model: Path, wav: Path, url: str) -> list[str]:
    return [sys.executable, "-m", "realtime_ser", "listen", "--replay", str(wav), "--pace", "realtime",
            "--model", str(model), "--no-dashboard", "--vts", url]


def run_listen(model, wav, url, config_dir: Path) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, "REALTIME_SER_CONFIG_DIR": str(config_dir)}
    return subprocess.run(listen_cmd(model, wav, url), capture_output=True, text=True, timeout=TIMEOUT_S, env=env)


def assert_injects_at_least_every_second(server: FakeVTubeStudio, conn: int) -> list[tuple[float, dict]]:
    inj = server.injections(conn)
    assert len(inj) >= 2
    gaps = [b - a for (a, _), (b, _) in zip(inj, inj[1:], strict=False)]
    assert max(gaps) < VTS_TIMEOUT_S, max(gaps)
    for _, r in inj:
        values = {v["id"]: v["value"] for v in r["data"]["parameterValues"]}
        assert set(values) == EXPECTED_PARAMS
        assert all(0.0 <= values[f"RealtimeSER{k}"] <= 1.0 for k in ("Neutral", "Happy", "Sad"))
        assert all(-1.0 <= values[f"RealtimeSER{k}"] <= 1.0 for k in ("Valence", "Arousal"))
    return inj


@pytest.mark.slow
def test_token_flow_parameters_injections_and_token_reuse(vts, tiny_model_path, speech_wav, tmp_path):
    url = f"ws://127.0.0.1:{vts.port}"
    r = run_listen(tiny_model_path, speech_wav, url, tmp_path)
    assert r.returncode == 0, r.stderr
    first = vts.requests(1)
    assert first[:3] == ["AuthenticationTokenRequest", "AuthenticationRequest", "ParameterCreationRequest"]
    assert vts.created == EXPECTED_PARAMS
    inj = assert_injects_at_least_every_second(vts, 1)
    sad = max(v["value"] for _, r_ in inj for v in r_["data"]["parameterValues"] if v["id"] == "RealtimeSERSad")
    happy = max(v["value"] for _, r_ in inj for v in r_["data"]["parameterValues"] if v["id"] == "RealtimeSERHappy")
    assert sad > 0.5 and happy > 0.5  # the replay's emotions reached the parameters
    token_file = tmp_path / "vtube_studio.json"
    assert json.loads(token_file.read_text())["tokens"][url] == "token-1"
    assert token_file.stat().st_mode & 0o077 == 0  # only the user can read the token
    assert "click Allow" in r.stderr
    # second run: the kept token, no new prompt
    r = run_listen(tiny_model_path, speech_wav, url, tmp_path)
    assert r.returncode == 0, r.stderr
    assert "AuthenticationTokenRequest" not in vts.requests(2)
    assert vts.requests(2)[0] == "AuthenticationRequest"
    assert "click Allow" not in r.stderr
    assert_injects_at_least_every_second(vts, 2)


def test_user_denies_one_line_and_listen_goes_on(tiny_model_path, speech_wav, tmp_path):
    server = FakeVTubeStudio(deny=True)
    try:
        r = run_listen(tiny_model_path, speech_wav, f"ws://127.0.0.1:{server.port}", tmp_path)
    finally:
        server.shutdown()
    assert r.returncode == 0, r.stderr
    denied = [line for line in r.stderr.splitlines() if "denied" in line]
    assert len(denied) == 1 and denied[0].startswith("realtime-ser: error: VTube Studio"), r.stderr
    assert "Traceback" not in r.stderr
    events = [json.loads(line) for line in r.stdout.splitlines()]
    assert events[0]["type"] == "start" and events[-1]["type"] == "end" and events[-1]["reason"] == "end_of_input"
    assert server.requests() == ["AuthenticationTokenRequest"]  # asked once, then left alone
    assert not (tmp_path / "vtube_studio.json").exists()


def test_vtube_studio_restart_reconnects_with_the_same_token(vts, tiny_model_path, speech_wav, tmp_path):
    import os

    url = f"ws://127.0.0.1:{vts.port}"
    env = {**os.environ, "REALTIME_SER_CONFIG_DIR": str(tmp_path)}
    proc = subprocess.Popen(listen_cmd(tiny_model_path, speech_wav, url), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 30
        while len(vts.injections(1)) < 4:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        vts.stop()  # VTube Studio quits...
        time.sleep(0.7)
        vts.start()  # ...and comes back on the same port
        deadline = time.monotonic() + 30
        while len(vts.injections(2)) < 4:
            assert time.monotonic() < deadline and proc.poll() is None, "no reconnection"
            time.sleep(0.05)
        out, err = proc.communicate(timeout=TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert vts.requests(2)[:2] == ["AuthenticationRequest", "ParameterCreationRequest"]  # token reused
    assert_injects_at_least_every_second(vts, 2)
    assert len([line for line in err.splitlines() if "retrying" in line]) <= 1  # one line per outage, not a flood
    events = [json.loads(line) for line in out.splitlines()]
    assert events[-1]["type"] == "end" and events[-1]["reason"] == "end_of_input"


def test_all_outputs_together_with_stdout_and_the_dashboard(vts, tiny_model_path, speech_wav, tmp_path):
    """--osc, --vts and --serve in one run, each with a real receiver, the dashboard forced on: every
    receiver gets its share, stdout stays pure JSON lines."""
    import os

    from pythonosc import osc_server
    from test_serve import URL_RE, read_all

    from test_osc import Recorder

    rec = Recorder()
    osc = osc_server.ThreadingOSCUDPServer(("127.0.0.1", 0), rec)
    threading.Thread(target=osc.serve_forever, daemon=True).start()
    env = {**os.environ, "REALTIME_SER_CONFIG_DIR": str(tmp_path)}
    cmd = listen_cmd(tiny_model_path, speech_wav, f"ws://127.0.0.1:{vts.port}") + [
        "--dashboard", "--osc", str(osc.server_address[1]), "--serve", "127.0.0.1:0"]
    cmd.remove("--no-dashboard")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        m = None
        while m is None:
            line = proc.stderr.readline()
            assert line, "no serving line"
            m = URL_RE.search(line)
        got: list[dict] = []
        reader = threading.Thread(target=read_all, args=(m.group(2), got), daemon=True)
        reader.start()
        out, err = proc.communicate(timeout=TIMEOUT_S)
        reader.join(10)
    finally:
        if proc.poll() is None:
            proc.kill()
        osc.shutdown()
        osc.server_close()
    assert proc.returncode == 0, err
    events = [json.loads(line) for line in out.splitlines()]  # stdout: JSON lines only
    assert events[0]["type"] == "start" and events[-1]["type"] == "end"
    assert got and got == events[len(events) - len(got):]
    assert any(msg.address.endswith("/Emotion") for msg in rec.messages())
    assert_injects_at_least_every_second(vts, 1)
    assert "realtime-ser" in err  # the dashboard drew on stderr
    status = [e for e in events if e["type"] == "status"]
    assert status and set(status[-1]["outputs"]) == {"osc", "vts", "serve"}
    assert status[-1]["outputs"]["vts"]["connected"] is True
